// One sequence of the engine: its tokens (prompt, then output), how many of them have entries in the cache, its
// block table, and the per-sequence state of sampling and streaming text.
import type { SamplingParams } from './sampler.js';
import { SequenceSampler } from './sampler.js';
import { IncrementalDetokenizer, StopMatcher, type TextCodec } from './text.js';

export type FinishReason = 'stop' | 'length' | 'abort';

export class Sequence {
  /** Prompt ids, then every generated id. */
  readonly tokens: number[];
  readonly promptLen: number;
  /** Tokens whose entries are in the cache (their positions 0 … numComputed−1). */
  numComputed = 0;
  /** Prompt tokens taken from the prefix cache at the last admission. */
  numCached = 0;
  readonly blockTable: number[] = [];
  /** Hashes of the leading full blocks that are registered for prefix caching. */
  readonly blockHashes: string[] = [];
  status: 'waiting' | 'running' | 'finished' = 'waiting';
  finishReason: FinishReason | null = null;
  readonly sampler: SequenceSampler;
  readonly detok: IncrementalDetokenizer | null;
  readonly stop: StopMatcher;
  /** Times this sequence lost its blocks to preemption (for tests and metrics). */
  preemptions = 0;

  constructor(
    readonly id: number,
    readonly requestId: string,
    /** Its index among the request's n choices. */
    readonly index: number,
    prompt: readonly number[],
    readonly params: SamplingParams,
    seed: number,
    codec: TextCodec | null,
  ) {
    this.tokens = [...prompt];
    this.promptLen = prompt.length;
    this.sampler = new SequenceSampler(params, prompt, seed);
    this.detok = codec ? new IncrementalDetokenizer(codec) : null;
    this.stop = new StopMatcher(params.stop);
  }

  get outputLen(): number {
    return this.tokens.length - this.promptLen;
  }

  get output(): number[] {
    return this.tokens.slice(this.promptLen);
  }
}
