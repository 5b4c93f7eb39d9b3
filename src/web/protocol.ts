// Messages between the web app's page (src/web/main.ts) and its compute worker (src/web/worker.ts). Everything heavy
// runs in the worker: loading, generation through the inference engine, training; the page draws.
import type { RoutedExperts } from '../infer/engine.js';

/** What the page shows about a model. */
export interface ModelInfo {
  source: string;
  params: number;
  layers: number;
  /** Indices of the MoE layers (the others are dense). */
  moeLayers: number[];
  routedExperts: number;
  sharedExperts: number;
  topK: number;
  hidden: number;
  vocab: number;
  maxPositions: number;
  /** KV-cache bytes one token costs, per the whole model: MLA's latent + RoPE key, and what MHA with these heads would need. */
  kvBytesMla: number;
  kvBytesMha: number;
  hasTokenizer: boolean;
}

export interface TokenOut {
  id: number;
  text: string;
  /** The routing of this token as the model's input (per MoE layer), null where not computed yet. */
  experts: RoutedExperts[] | null;
}

export interface TrainSettings {
  /** 'pasted' text, or a bundled corpus. */
  corpus: 'pasted' | 'moby-dick' | 'math';
  text?: string;
  preset: 'tiny' | 'small' | 'custom';
  hidden?: number;
  layers?: number;
  experts?: number;
  vocab: number;
  steps: number;
  batch: number;
  seq: number;
  lr: number;
  seed: number;
}

export type ToWorker =
  | { type: 'init'; threads: number; wasmBase: string; workerUrl: string }
  | { type: 'load-files'; files: [string, ArrayBuffer][] }
  | { type: 'load-url'; url: string }
  | { type: 'generate'; prompt: string; maxTokens: number; temperature: number; seed: number }
  | { type: 'stop-generate' }
  | { type: 'train'; settings: TrainSettings; corpusText?: string }
  | { type: 'pause' }
  | { type: 'resume' }
  | { type: 'stop-train' }
  | { type: 'download' };

export interface StepReport {
  step: number;
  steps: number;
  loss: number;
  tokS: number;
  /** Per MoE layer, the fraction of routed assignments each expert received this step. */
  load: number[][];
}

export type FromWorker =
  | { type: 'ready'; backend: string; threads: number; isolated: boolean }
  | { type: 'status'; text: string }
  | { type: 'loaded'; info: ModelInfo }
  | { type: 'prompt'; tokens: TokenOut[] }
  | { type: 'token'; token: TokenOut; previousExperts: RoutedExperts[] | null }
  | { type: 'generated'; tokS: number; tokens: number; finishReason: string }
  | { type: 'train-started'; info: ModelInfo; tokens: number }
  | { type: 'step'; report: StepReport }
  | { type: 'trained'; steps: number; stopped: boolean }
  | { type: 'files'; files: [string, ArrayBuffer][] }
  /** A request failed; `during` is the type of the request (the page puts back the buttons of that one). */
  | { type: 'error'; message: string; during: ToWorker['type'] };
