// Load and save Hugging Face model directories: config.json + safetensors with HF tensor names, unchanged.
import '../backend/node.js'; // registers the native and wasm backends (Node)
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { defaultBackend } from '../backend/registry.js';
import { writeFileAtomic } from '../io/atomic.js';
import { Checkpoint, CheckpointError, writeSafetensors } from '../io/safetensors.js';
import { storedWeight, wrap } from '../tensor/tensor.js';
import { checkFits } from '../io/memory.js';
import { isQuantizable } from '../quant/model.js';
import { GgufFile, isGgufFile } from '../io/gguf.js';
import { configFromGguf, loadGgufModel } from '../io/gguf-deepseek2.js';
import { configJsonText, ConfigError, parseConfig, type DeepseekV2Config } from './config.js';
import { DeepseekV2ForCausalLM } from './model.js';
import { Params } from './params.js';
import { expectedTensors, inventoryProblems } from './weights.js';

export function readConfig(dir: string): DeepseekV2Config {
  if (isGgufFile(dir)) {
    const g = new GgufFile(dir);
    try {
      return configFromGguf(g);
    } finally {
      g.close();
    }
  }
  const path = dir.endsWith('.json') ? dir : join(dir, 'config.json');
  if (!existsSync(path)) throw new ConfigError(`${path}: no such file`);
  // never read a FIFO, a device or a huge file to its end: config.json is a few KB
  const st = statSync(path);
  if (!st.isFile()) throw new ConfigError(`${path}: not a regular file`);
  if (st.size > 1 << 20) throw new ConfigError(`${path}: ${st.size} bytes; a config.json is a few KB`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ConfigError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  try {
    return parseConfig(json);
  } catch (e) {
    throw new ConfigError(`${path}: ${(e as Error).message}`);
  }
}

export interface LoadOptions {
  backend?: Backend;
  /** A weights file or index.json to use instead of the directory's model.safetensors (e.g. model.bf16.safetensors). */
  weights?: string;
  /** Leaves require grad (for training); default true. */
  trainable?: boolean;
  /**
   * For inference (trainable false): 'stored' (the default) keeps BF16/F16 projections in their type, read in place
   * from the memory-mapped file where the backend maps files; 'f32' widens every tensor to float32.
   */
  storage?: 'stored' | 'f32';
}

/** Check a checkpoint against the config's inventory; throws one error listing every problem. */
export function checkInventory(config: DeepseekV2Config, ck: Checkpoint, where: string): void {
  const problems = inventoryProblems(config, ck.tensors);
  if (problems.length) {
    const shown = problems.slice(0, 20).join('; ');
    throw new CheckpointError(
      `${where}: checkpoint does not match config.json: ${shown}${problems.length > 20 ? `; … ${problems.length - 20} more` : ''}`,
    );
  }
}

export function loadModel(dir: string, opts: LoadOptions = {}): DeepseekV2ForCausalLM {
  const backend = opts.backend ?? defaultBackend();
  if (isGgufFile(dir)) {
    if (opts.weights) throw new CheckpointError(`${dir} is a GGUF file; --weights applies to model directories`);
    const { model, file } = loadGgufModel(dir, { backend });
    file.close();
    if (opts.trainable !== false) for (const p of model.params.list()) if (p.dtype === 'f32') p.requireGrad();
    return model;
  }
  const config = readConfig(dir);
  const ck = Checkpoint.open(opts.weights ?? dir);
  try {
    checkInventory(config, ck, opts.weights ?? dir);
    const keep = opts.trainable === false && opts.storage !== 'f32';
    const kept = (name: string): 'bf16' | 'f16' | null => {
      const info = ck.tensors.get(name)!;
      if (!keep || (info.dtype !== 'BF16' && info.dtype !== 'F16') || !isQuantizable(name, info.shape)) return null;
      return info.dtype === 'BF16' ? 'bf16' : 'f16';
    };
    // refuse a model that cannot fit before allocating any of it
    const specs = expectedTensors(config);
    const need = specs.reduce((sum, t) => sum + (kept(t.name) ? 2 : 4) * t.shape.reduce((a, b) => a * b, 1), 0);
    checkFits(
      need,
      `${opts.weights ?? dir} (${(need / 2 ** 30).toFixed(1)} GiB as loaded)`,
      keep ? 'quantize it first: dsv2 quantize --type q8_0' : '',
    );
    const maps = new Map<string, Uint8Array | null>();
    const mapped = (file: string): Uint8Array | null => {
      if (!maps.has(file)) maps.set(file, backend.mapFile?.(file) ?? null);
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
        throw new CheckpointError(`${opts.weights ?? dir}: tensor '${t.name}' holds NaN or infinite values`);
      const tensor = wrap(backend, buf, t.shape);
      params.set(t.name, opts.trainable === false ? tensor : tensor.requireGrad());
    }
    return new DeepseekV2ForCausalLM(config, params, backend);
  } finally {
    ck.close();
  }
}

/** Write config.json and model.safetensors (HF names; F32 unless asked otherwise), each atomically. */
export function saveModel(model: DeepseekV2ForCausalLM, dir: string, dtype: 'F32' | 'BF16' | 'F16' = 'F32'): void {
  mkdirSync(dir, { recursive: true });
  writeSafetensors(
    join(dir, 'model.safetensors'),
    model.params.names().map((name) => {
      const t = model.params.get(name);
      return { name, shape: t.shape, data: t.floats() };
    }),
    dtype,
  );
  const torchDtype = dtype === 'BF16' ? 'bfloat16' : dtype === 'F16' ? 'float16' : 'float32';
  writeFileAtomic(join(dir, 'config.json'), configJsonText(model.config, torchDtype));
}
