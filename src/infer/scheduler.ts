// Continuous batching (vLLM's unified scheduler, nano-vllm's split of it): every step runs, under one token
// budget, the next token of every running sequence (a decode token, or the next chunk of a prefill), then admits
// waiting sequences first come, first served while free blocks and the budget allow (their prompts chunked to
// what is left of the budget). When a running sequence needs a block and none is free, the most recently arrived
// running sequence is preempted: its blocks are freed and it goes back to the front of the queue, to be
// recomputed later (its prompt and output so far prefill again, partly from the prefix cache).
import type { BlockManager } from './block-manager.js';
import type { Sequence } from './sequence.js';

export interface SchedulerOptions {
  /** Sequences running at once. */
  maxNumSeqs: number;
  /** Tokens per step (decode tokens plus prefill chunks). */
  maxBatchedTokens: number;
}

/** One sequence's part of a step: tokens [seq.numComputed, seq.numComputed + n). */
export interface ScheduledSeq {
  seq: Sequence;
  n: number;
  /** The chunk reaches the sequence's last token: its logits give the next token. */
  sample: boolean;
}

export class Scheduler {
  readonly waiting: Sequence[] = [];
  readonly running: Sequence[] = [];
  /** Preemptions so far (for /metrics). */
  preemptions = 0;

  constructor(
    readonly blocks: BlockManager,
    readonly opts: SchedulerOptions,
  ) {}

  add(seq: Sequence): void {
    seq.status = 'waiting';
    this.waiting.push(seq);
  }

  get hasWork(): boolean {
    return this.waiting.length > 0 || this.running.length > 0;
  }

  /** Remove a sequence wherever it is and free its blocks. */
  remove(seq: Sequence): void {
    for (const q of [this.waiting, this.running]) {
      const i = q.indexOf(seq);
      if (i !== -1) q.splice(i, 1);
    }
    this.blocks.release(seq.blockTable);
    seq.blockHashes.length = 0;
  }

  /** The next step's batch. Sequences that can never fit are returned in `tooLong` (the engine finishes them). */
  schedule(): { batch: ScheduledSeq[]; tooLong: Sequence[] } {
    let budget = this.opts.maxBatchedTokens;
    const batch: ScheduledSeq[] = [];
    const tooLong: Sequence[] = [];
    let preempted = false;
    // 1. running sequences, oldest first
    for (let i = 0; i < this.running.length && budget > 0; i++) {
      const seq = this.running[i]!;
      const n = Math.min(seq.tokens.length - seq.numComputed, budget);
      let self = false;
      while (!this.blocks.ensure(seq.blockTable, seq.numComputed + n)) {
        const victim = this.running[this.running.length - 1]!;
        if (victim === seq && this.running.length === 1) {
          // alone and still out of blocks: the cache cannot hold this sequence any longer
          this.running.pop();
          tooLong.push(seq);
          self = true;
          break;
        }
        this.preempt(victim);
        preempted = true;
        if (victim === seq) {
          self = true;
          break;
        }
      }
      if (self) {
        i--;
        continue;
      }
      batch.push({ seq, n, sample: seq.numComputed + n === seq.tokens.length });
      budget -= n;
    }
    // 2. waiting sequences, first come first served: the queue's head is never skipped
    while (!preempted && budget > 0 && this.waiting.length && this.running.length < this.opts.maxNumSeqs) {
      const seq = this.waiting[0]!;
      // the choices of one request (n > 1) share a prompt: the later ones wait until the first has prefilled it,
      // then take its blocks from the prefix cache instead of computing them again
      if (this.running.some((r) => r.requestId === seq.requestId && r.numComputed < r.promptLen)) break;
      const cached = this.blocks.lookup(seq.tokens);
      // new blocks, plus the cached ones nobody holds (taking them removes them from the free pool)
      const need = this.blocks.blocksFor(seq.tokens.length) - cached.length + cached.filter((b) => this.blocks.refCount(b) === 0).length;
      if (this.blocks.blocksFor(seq.tokens.length) > this.blocks.numBlocks) {
        this.waiting.shift();
        tooLong.push(seq);
        continue;
      }
      if (need > this.blocks.freeBlocks) break;
      this.waiting.shift();
      this.blocks.share(cached, seq.blockTable);
      seq.numComputed = cached.length * this.blocks.blockSize;
      if (seq.preemptions === 0) {
        // a recompute after preemption may hit its own output's blocks: usage and metrics count the prompt once
        seq.numCached = Math.min(seq.numComputed, seq.promptLen);
        this.blocks.prefixQueryTokens += seq.promptLen;
        this.blocks.prefixHitTokens += seq.numCached;
      }
      this.blocks.ensure(seq.blockTable, seq.tokens.length);
      // the blocks taken from the cache are registered already: carry their hashes for the blocks that follow
      seq.blockHashes.length = 0;
      let prev = '';
      for (let b = 0; b < cached.length; b++) seq.blockHashes.push((prev = this.blocks.register(seq.blockTable, b, seq.tokens, prev)));
      seq.status = 'running';
      this.running.push(seq);
      const n = Math.min(seq.tokens.length - seq.numComputed, budget);
      batch.push({ seq, n, sample: seq.numComputed + n === seq.tokens.length });
      budget -= n;
    }
    return { batch, tooLong };
  }

  private preempt(seq: Sequence): void {
    const i = this.running.indexOf(seq);
    if (i !== -1) this.running.splice(i, 1);
    this.blocks.release(seq.blockTable);
    seq.blockHashes.length = 0;
    seq.numComputed = 0;
    seq.status = 'waiting';
    seq.preemptions++;
    this.preemptions++;
    this.waiting.unshift(seq);
  }
}
