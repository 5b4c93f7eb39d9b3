// A model from a config and a set of named tensors (a safetensors checkpoint on disk or in memory): the inventory
// checked against the config, then every tensor read, checked finite and placed on the backend. Browser-safe: the
// Node loader (./load.ts) passes its memory check and file mapping in, a page passes neither.
import type { Backend } from '../backend/backend.js';
import { CheckpointError, type TensorInfo } from '../io/safetensors-format.js';
import { isQuantizable } from '../quant/model.js';
import { storedWeight, wrap } from '../tensor/tensor.js';
import type { DeepseekV2Config } from './config.js';
import { DeepseekV2ForCausalLM } from './model.js';
import { Params } from './params.js';
import { expectedTensors, inventoryProblems } from './weights.js';

/** Tensors by HF name, read on demand (a Checkpoint of files, or files held in memory). */
export interface TensorStore {
  readonly tensors: Map<string, TensorInfo>;
  read(name: string): Float32Array;
  readBytes(name: string): Uint8Array;
  /** A file's whole bytes when they are in memory already (then stored tensors are views, not copies). */
  fileBytes?(file: string): Uint8Array | null;
}

export function checkInventory(config: DeepseekV2Config, ck: TensorStore, where: string): void {
  const problems = inventoryProblems(config, ck.tensors);
  if (problems.length) {
    const shown = problems.slice(0, 20).join('; ');
    throw new CheckpointError(
      `${where}: checkpoint does not match config.json: ${shown}${problems.length > 20 ? `; … ${problems.length - 20} more` : ''}`,
    );
  }
}

export interface FromTensorsOptions {
  /** Names the checkpoint in errors. */
  where: string;
  /** Leaves require grad (for training); default true. */
  trainable?: boolean | undefined;
  /** For inference: 'stored' keeps BF16/F16 projections in their type; 'f32' widens every tensor. */
  storage?: 'stored' | 'f32' | undefined;
  /** Refuse a model that will not fit before allocating any of it (Node: the machine's free memory). */
  checkFits?: ((bytes: number, what: string, hint: string) => void) | undefined;
  /** A file mapped into memory, for stored weights read in place. */
  map?: ((file: string) => Uint8Array | null) | undefined;
}

export function modelFromTensors(
  config: DeepseekV2Config,
  ck: TensorStore,
  backend: Backend,
  opts: FromTensorsOptions,
): DeepseekV2ForCausalLM {
  const where = opts.where;
  checkInventory(config, ck, where);
  const keep = opts.trainable === false && opts.storage !== 'f32';
  const kept = (name: string): 'bf16' | 'f16' | null => {
    const info = ck.tensors.get(name)!;
    if (!keep || (info.dtype !== 'BF16' && info.dtype !== 'F16') || !isQuantizable(name, info.shape)) return null;
    return info.dtype === 'BF16' ? 'bf16' : 'f16';
  };
  // refuse a model that cannot fit before allocating any of it
  const specs = expectedTensors(config);
  const need = specs.reduce((sum, t) => sum + (kept(t.name) ? 2 : 4) * t.shape.reduce((a, b) => a * b, 1), 0);
  opts.checkFits?.(
    need,
    `${where} (${(need / 2 ** 30).toFixed(1)} GiB as loaded)`,
    keep ? 'quantize it first: dsv2 quantize --type q8_0' : '',
  );
  const maps = new Map<string, Uint8Array | null>();
  const mapped = (file: string): Uint8Array | null => {
    if (!maps.has(file)) maps.set(file, opts.map?.(file) ?? ck.fileBytes?.(file) ?? null);
    return maps.get(file)!;
  };
  const params = new Params();
  for (const t of specs) {
    const type = kept(t.name);
    if (type) {
      const info = ck.tensors.get(t.name)!;
      const bytes = mapped(info.file)?.subarray(info.begin, info.end) ?? ck.readBytes(t.name);
      params.set(t.name, storedWeight(backend, type, bytes, t.shape));
      continue;
    }
    const data = ck.read(t.name);
    const buf = backend.alloc(data.length);
    buf.set(data);
    if (!Number.isFinite(backend.sumsq(buf, buf.length)))
      throw new CheckpointError(`${where}: tensor '${t.name}' holds NaN or infinite values`);
    const tensor = wrap(backend, buf, t.shape);
    params.set(t.name, opts.trainable === false ? tensor : tensor.requireGrad());
  }
  const model = new DeepseekV2ForCausalLM(config, params, backend);
  if (opts.trainable === false) pinWeights(model);
  return model;
}

/**
 * Tell the backend that the model's float32 weights are written only by its kernels from now on (Backend.pin): true
 * for inference, and for training through AdamW. A backend that copies operands (wasm) then keeps them resident.
 */
export function pinWeights(model: DeepseekV2ForCausalLM): void {
  const pin = model.backend.pin;
  if (!pin) return;
  for (const p of model.params.list()) if (p.dtype === 'f32') pin.call(model.backend, p.f32());
}
