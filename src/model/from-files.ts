// A model from files held in memory, for pages (a fetch of a `dsv2 web` model folder, or File objects the user
// picked) and for anything else without a file system: the files of an HF directory (config.json, model.safetensors
// or an index.json with its shards, tokenizer.json) or one GGUF. Browser-safe; the Node loaders read folders.
import type { Backend } from '../backend/backend.js';
import { defaultBackend } from '../backend/registry.js';
import { memorySource } from '../io/bytes.js';
import { GgufReader } from '../io/gguf-format.js';
import { ggufModel, tokenizerFromGguf } from '../io/gguf-deepseek2.js';
import { brief } from '../io/brief.js';
import { CheckpointError, checkIndexMetadata, encodeSafetensors, SafetensorsReader, type TensorInfo } from '../io/safetensors-format.js';
import { defaultTokenizerConfig } from '../tokenizer/chat-template.js';
import { DEEPSEEK_PRETOKENIZERS } from '../tokenizer/pretokenizers.js';
import { Tokenizer, type TokenizerJson } from '../tokenizer/tokenizer.js';
import { configJsonText, ConfigError, parseConfig, type DeepseekV2Config } from './config.js';
import { modelFromTensors, pinWeights, type TensorStore } from './from-tensors.js';
import type { DeepseekV2ForCausalLM } from './model.js';

/** File name → contents (names without folders, as in an HF model directory). */
export type ModelFiles = Map<string, Uint8Array>;

export interface LoadedModel {
  config: DeepseekV2Config;
  model: DeepseekV2ForCausalLM;
  /** From tokenizer.json or the GGUF; null when the files have none. */
  tokenizer: Tokenizer | null;
  /** The GGUF's or tokenizer_config.json's chat template, if any. */
  chatTemplate: string | null;
}

const isGguf = (b: Uint8Array): boolean => b.length >= 4 && b[0] === 0x47 && b[1] === 0x47 && b[2] === 0x55 && b[3] === 0x46;

function json(files: ModelFiles, name: string): unknown {
  const b = files.get(name)!;
  try {
    return JSON.parse(new TextDecoder().decode(b));
  } catch (e) {
    throw new CheckpointError(`${name}: not valid JSON (${(e as Error).message})`);
  }
}

/** safetensors files in memory, addressed by tensor name (one file, or the shards an index.json names). */
class MemoryCheckpoint implements TensorStore {
  readonly tensors = new Map<string, TensorInfo>();
  private readonly readers = new Map<string, SafetensorsReader>();

  constructor(private readonly files: ModelFiles) {
    const index = 'model.safetensors.index.json';
    if (files.has(index)) {
      const idx = json(files, index) as { weight_map?: unknown };
      const map = idx?.weight_map;
      if (!map || typeof map !== 'object' || Array.isArray(map)) throw new CheckpointError(`${index}: no "weight_map" object`);
      checkIndexMetadata(idx, index);
      for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
        if (typeof shard !== 'string' || !files.has(shard))
          throw new CheckpointError(`${index}: weight_map puts '${name}' in ${brief(shard)}, which is not among the files given`);
        const info = this.reader(shard).tensors.get(name);
        if (!info) throw new CheckpointError(`${index}: weight_map puts ${brief(name)} in ${brief(shard)}, which does not hold it`);
        this.tensors.set(name, info);
      }
      return;
    }
    const all = [...files.keys()].filter((f) => f.endsWith('.safetensors'));
    const one = files.has('model.safetensors') ? 'model.safetensors' : all.length === 1 ? all[0]! : null;
    if (!one)
      throw new CheckpointError(`expected model.safetensors, model.safetensors.index.json or one *.safetensors file (found ${all.length})`);
    for (const [name, info] of this.reader(one).tensors) this.tensors.set(name, info);
  }

  private reader(file: string): SafetensorsReader {
    let r = this.readers.get(file);
    if (!r) this.readers.set(file, (r = new SafetensorsReader(file, memorySource(this.files.get(file)!))));
    return r;
  }

  read(name: string): Float32Array {
    return this.reader(this.info(name).file).read(name);
  }
  readBytes(name: string): Uint8Array {
    return this.reader(this.info(name).file).readBytes(name);
  }
  fileBytes(file: string): Uint8Array | null {
    return this.files.get(file) ?? null;
  }
  private info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new CheckpointError(`checkpoint has no tensor '${name}'`);
    return info;
  }
}

export interface FromFilesOptions {
  backend?: Backend;
  /** Leaves require grad (for training); default false: a loaded model is for generation. */
  trainable?: boolean;
}

/** Build the model (and its tokenizer) from an HF directory's files or a GGUF, all in memory. */
export function loadModelFromFiles(files: ModelFiles, opts: FromFilesOptions = {}): LoadedModel {
  const backend = opts.backend ?? defaultBackend();
  const gguf = [...files].find(([name, b]) => name.endsWith('.gguf') || isGguf(b));
  if (gguf) {
    const g = new GgufReader(gguf[0], memorySource(gguf[1]));
    const model = ggufModel(g, { backend });
    if (opts.trainable) {
      for (const p of model.params.list()) if (p.dtype === 'f32') p.requireGrad();
    } else pinWeights(model);
    return {
      config: model.config,
      model,
      tokenizer: tokenizerFromGguf(g, DEEPSEEK_PRETOKENIZERS),
      chatTemplate: g.str('tokenizer.chat_template') ?? null,
    };
  }
  if (!files.has('config.json')) throw new ConfigError(`config.json is missing (files given: ${[...files.keys()].join(', ') || 'none'})`);
  let config: DeepseekV2Config;
  try {
    config = parseConfig(json(files, 'config.json'));
  } catch (e) {
    throw new ConfigError(`config.json: ${(e as Error).message}`);
  }
  const model = modelFromTensors(config, new MemoryCheckpoint(files), backend, {
    where: 'the checkpoint',
    trainable: opts.trainable ?? false,
  });
  let tokenizer: Tokenizer | null = null;
  if (files.has('tokenizer.json')) {
    try {
      tokenizer = Tokenizer.fromJSON(json(files, 'tokenizer.json') as TokenizerJson);
    } catch (e) {
      throw new CheckpointError(`tokenizer.json: ${(e as Error).message}`);
    }
  }
  let chatTemplate: string | null = null;
  if (files.has('tokenizer_config.json')) {
    const t = (json(files, 'tokenizer_config.json') as { chat_template?: unknown })?.chat_template;
    if (typeof t === 'string') chatTemplate = t;
  }
  return { config, model, tokenizer, chatTemplate };
}

/** The files of File objects (an <input type=file multiple> or a dropped folder), by base name. */
export async function modelFilesFrom(list: Iterable<Blob & { name: string }>): Promise<ModelFiles> {
  const files: ModelFiles = new Map();
  for (const f of list) files.set(f.name.split('/').pop()!, new Uint8Array(await f.arrayBuffer()));
  return files;
}

/**
 * Fetch a model folder served over HTTP (`dsv2 web` serves the one it was given under /model/): config.json and the
 * weights it finds (index.json and shards, or model.safetensors), tokenizer.json and tokenizer_config.json if there.
 */
export async function fetchModelFiles(base: string | URL, fetchFn: typeof fetch = fetch): Promise<ModelFiles> {
  const files: ModelFiles = new Map();
  const get = async (name: string, required: boolean): Promise<boolean> => {
    const r = await fetchFn(new URL(name, base));
    if (!r.ok) {
      if (required) throw new CheckpointError(`${new URL(name, base).href}: HTTP ${r.status}`);
      return false;
    }
    files.set(name, new Uint8Array(await r.arrayBuffer()));
    return true;
  };
  if (!(await get('model.gguf', false))) {
    await get('config.json', true);
    if (await get('model.safetensors.index.json', false)) {
      const idx = json(files, 'model.safetensors.index.json') as { weight_map?: Record<string, unknown> };
      for (const shard of new Set(Object.values(idx?.weight_map ?? {})))
        if (typeof shard === 'string' && /^[\w.-]+\.safetensors$/.test(shard)) await get(shard, true);
    } else await get('model.safetensors', true);
    await get('tokenizer.json', false);
    await get('tokenizer_config.json', false);
  }
  return files;
}

/**
 * An HF model directory's files for a model (config.json, model.safetensors) and its tokenizer (tokenizer.json,
 * tokenizer_config.json with the BOS/EOS names): what a page offers for download, and what `dsv2` loads back.
 */
export function modelToFiles(model: DeepseekV2ForCausalLM, tokenizer: Tokenizer | null, dtype: 'F32' | 'BF16' | 'F16' = 'F32'): ModelFiles {
  const enc = new TextEncoder();
  const files: ModelFiles = new Map();
  const torchDtype = dtype === 'BF16' ? 'bfloat16' : dtype === 'F16' ? 'float16' : 'float32';
  files.set('config.json', enc.encode(configJsonText(model.config, torchDtype)));
  const tensors = model.params.names().map((name) => {
    const t = model.params.get(name);
    return { name, shape: t.shape, data: t.floats() };
  });
  files.set('model.safetensors', encodeSafetensors(tensors, dtype));
  if (tokenizer) {
    files.set('tokenizer.json', enc.encode(JSON.stringify(tokenizer.toJSON())));
    files.set('tokenizer_config.json', enc.encode(tokenizerConfigText(tokenizer, model.config)));
  }
  return files;
}

/** tokenizer_config.json for a trained tokenizer: the BOS/EOS names HF tooling and `dsv2 serve` read, and the chat template. */
export function tokenizerConfigText(tokenizer: Tokenizer, config: DeepseekV2Config): string {
  const special = (id: number | null | undefined): string =>
    id === null || id === undefined ? '' : (tokenizer.specials.find((s) => s.id === id)?.content ?? '');
  return JSON.stringify(defaultTokenizerConfig(special(config.bos_token_id), special(config.eos_token_id)), null, 2) + '\n';
}
