// Load and save Hugging Face model directories: config.json + safetensors with HF tensor names, unchanged.
import '../backend/node.js'; // registers the native and wasm backends (Node)
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { defaultBackend } from '../backend/registry.js';
import { writeFileAtomic } from '../io/atomic.js';
import { Checkpoint, CheckpointError, writeSafetensors } from '../io/safetensors.js';
import { checkFits } from '../io/memory.js';
import { GgufFile, isGgufFile } from '../io/gguf.js';
import { configFromGguf } from '../io/gguf-deepseek2.js';
import { loadGgufModel } from '../io/gguf-load.js';
import { configJsonText, ConfigError, parseConfig, type DeepseekV2Config } from './config.js';
import type { DeepseekV2ForCausalLM } from './model.js';
import { modelFromTensors, pinWeights } from './from-tensors.js';

export { checkInventory } from './from-tensors.js';

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
export function loadModel(dir: string, opts: LoadOptions = {}): DeepseekV2ForCausalLM {
  const backend = opts.backend ?? defaultBackend();
  if (isGgufFile(dir)) {
    if (opts.weights) throw new CheckpointError(`${dir} is a GGUF file; --weights applies to model directories`);
    const { model, file } = loadGgufModel(dir, { backend });
    file.close();
    if (opts.trainable !== false) {
      for (const p of model.params.list()) if (p.dtype === 'f32') p.requireGrad();
    } else pinWeights(model);
    return model;
  }
  const config = readConfig(dir);
  const ck = Checkpoint.open(opts.weights ?? dir);
  try {
    return modelFromTensors(config, ck, backend, {
      where: opts.weights ?? dir,
      trainable: opts.trainable,
      storage: opts.storage,
      checkFits,
      map: backend.mapFile ? (file: string) => backend.mapFile!(file) : undefined,
    });
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
