// The inference KV cache: one preallocated buffer per layer, [B, capacity, width]. For MLA the width is
// kv_lora_rank + qk_rope_head_dim and an entry is the normalised latent c^KV followed by the rotated rope key k^R
// (spec §4.1); for the MHA/GQA/MQA baselines it is the keys and values of the KV heads.
import { contiguous, narrow, writeSlice } from '../autograd/ops/index.js';
import type { Backend } from '../backend/backend.js';
import { empty, type Tensor } from '../tensor/tensor.js';

export class KVCache {
  readonly layers: Tensor[];
  /** Tokens cached so far (the absolute position of the next token). */
  length = 0;

  constructor(
    backend: Backend,
    numLayers: number,
    readonly batch: number,
    readonly capacity: number,
    readonly width: number,
  ) {
    this.layers = Array.from({ length: numLayers }, () => empty(backend, [batch, capacity, width]));
  }

  /** Store entries [B, T, width] of layer i at positions length … length+T−1 and return all entries so far. */
  append(i: number, entries: Tensor): Tensor {
    const T = entries.shape[1]!;
    if (this.length + T > this.capacity) {
      throw new Error(`KV cache is full: ${this.length} + ${T} tokens exceed its capacity of ${this.capacity}`);
    }
    writeSlice(this.layers[i]!, entries, 1, this.length);
    return contiguous(narrow(this.layers[i]!, 1, 0, this.length + T));
  }

  /** Called once per forward, after every layer has appended its T entries. */
  advance(T: number): void {
    this.length += T;
  }

  /** Bytes of cached entries in float32: 4 × width × layers × tokens × batch. */
  bytesUsed(): number {
    return 4 * this.width * this.layers.length * this.length * this.batch;
  }
}

/**
 * A flat batch over the inference engine's paged cache (what nano-vllm calls the forward context). The engine owns
 * blocks, tables and scheduling; the model only reads and writes the slots named here. The N new tokens of a step
 * run as one [1, N] batch: first one decode token for each of `decode.count` sequences, then the prefill chunks.
 */
export interface PagedBatch {
  /** One cache per layer: [numBlocks·blockSize, cacheWidth] (spec §4.1: [latent | rope key] for MLA). */
  layers: readonly Tensor[];
  blockSize: number;
  /** [N] int32: the cache slot each new token's entry is written to. */
  slots: Tensor;
  /** Tokens 0 … count−1 are single decode tokens attending through their block tables (absorbed for MLA). */
  decode: { count: number; blockTables: Tensor; contextLens: Tensor };
  /** Chunks [start, start+len) of the batch run on the naive path over `slots` [past+len]: every entry of the sequence so far. */
  prefill: readonly { start: number; len: number; slots: Tensor }[];
}
