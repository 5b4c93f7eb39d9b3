// Messages between the server's main thread (HTTP) and the engine's worker thread (compute). The engine runs off
// the event loop so that /health, /metrics and new connections answer while a long prefill runs.
import type { EngineOptions, EngineStats, TokenEvent } from '../infer/engine.js';
import type { SamplingParams } from '../infer/sampler.js';

export interface WorkerInit {
  /** The model directory (config.json, weights, tokenizer.json). */
  dir: string;
  backend?: string;
  threads?: number;
  engine: Omit<EngineOptions, 'tokenizer' | 'onLogits'>;
}

export type ToWorker =
  { t: 'add'; id: string; prompt: number[]; params: SamplingParams; n: number } | { t: 'abort'; id: string } | { t: 'stop' };

export type FromWorker =
  | { t: 'ready'; maxModelLen: number; stats: EngineStats; backend: string; threads: number }
  | { t: 'failed'; message: string }
  | { t: 'events'; events: TokenEvent[]; stats: EngineStats }
  | { t: 'rejected'; id: string; param: string; message: string }
  | { t: 'crashed'; message: string };
