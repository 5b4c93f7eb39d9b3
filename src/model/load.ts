// Load and save Hugging Face model directories: config.json + safetensors with HF tensor names, unchanged.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { defaultBackend } from '../backend/registry.js';
import { writeFileAtomic } from '../io/atomic.js';
import { Checkpoint, CheckpointError, writeSafetensors } from '../io/safetensors.js';
import { wrap } from '../tensor/tensor.js';
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
    const params = new Params();
    for (const t of expectedTensors(config)) {
      const data = ck.read(t.name);
      const buf = backend.alloc(data.length);
      buf.set(data);
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
      return { name, shape: t.shape, data: t.f32() };
    }),
    dtype,
  );
  const torchDtype = dtype === 'BF16' ? 'bfloat16' : dtype === 'F16' ? 'float16' : 'float32';
  writeFileAtomic(join(dir, 'config.json'), configJsonText(model.config, torchDtype));
}
