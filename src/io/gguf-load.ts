// A DeepSeek-V2 model from a GGUF file on disk (Node): the file opened (memory-mapped where the backend maps files)
// and handed to the browser-safe ggufModel of ./gguf-deepseek2.ts.
import type { DeepseekV2ForCausalLM } from '../model/model.js';
import { GgufFile } from './gguf.js';
import { ggufModel, type GgufLoadOptions } from './gguf-deepseek2.js';

export function loadGgufModel(path: string, opts: GgufLoadOptions): { model: DeepseekV2ForCausalLM; file: GgufFile } {
  const backend = opts.backend;
  const file = new GgufFile(path, { map: backend.mapFile ? (p) => backend.mapFile!(p) : undefined });
  return { model: ggufModel(file, opts), file };
}
