// The inference engine (nano-vllm's split): it owns the sequences, the paged KV cache, the scheduler and the
// sampler; the model only computes. One step = one forward of a flat batch (every running sequence's decode token
// plus prefill chunks) over the paged cache, logits only for the positions that sample, then one token event per
// sampled sequence. `step()` is synchronous; src/infer/runner.ts drives it for async callers and a worker thread.
import { noGrad } from '../autograd/graph.js';
import type { DeepseekV2ForCausalLM } from '../model/model.js';
import { cacheWidth } from '../model/attention.js';
import type { PagedBatch } from '../model/cache.js';
import { BufferArena, withArena } from '../tensor/arena.js';
import { empty, intTensor, type Tensor } from '../tensor/tensor.js';
import { BlockManager } from './block-manager.js';
import { DecodePlan } from './decode-plan.js';
import { samplingParams, type SamplingParams, type TokenLogprob } from './sampler.js';
import { Scheduler, type ScheduledSeq } from './scheduler.js';
import { Sequence, type FinishReason } from './sequence.js';
import type { TextCodec } from './text.js';

export interface EngineOptions {
  /** Memory for the KV cache's block pool, in MiB (default 256). */
  kvCacheMiB?: number;
  /** The pool's size in blocks (overrides kvCacheMiB). */
  numBlocks?: number;
  /** Tokens per block (default 16). */
  blockSize?: number;
  /** Sequences running at once (default 64). */
  maxNumSeqs?: number;
  /** Tokens per step, decode tokens and prefill chunks together (default 512). */
  maxBatchedTokens?: number;
  /** Share computed blocks between sequences with the same prefix (default on). */
  prefixCaching?: boolean;
  /** Decode MLA through the latents with absorbed weights (default); off: the naive path for every token. */
  absorb?: boolean;
  /** Turns ids into text for the events (no text without one). */
  tokenizer?: TextCodec | null;
  /** Ids that end a sequence unless a request sets ignoreEos (default: the config's eos_token_id). */
  eosTokenIds?: number[];
  /** Run pure decode steps of MLA models through DecodePlan (default on); off: always the model's forward. */
  decodePlan?: boolean;
  /** Sees the raw logits every sampled token came from (checks and tests); a view valid during the call only. */
  onLogits?: (requestId: string, index: number, step: number, logits: Float32Array) => void;
}

/** The routed experts of one MoE layer for one token, in descending order of gate weight. */
export interface RoutedExperts {
  layer: number;
  experts: number[];
  weights: number[];
}

export interface TokenEvent {
  requestId: string;
  /** Which of the request's n choices. */
  index: number;
  /** The token generated (−1 in an event that only ends an aborted sequence). */
  id: number;
  /** The text this token adds (whole UTF-8 characters; held back while it may begin a stop string). */
  text: string;
  logprob: TokenLogprob | null;
  /** The routing of the position this token was predicted from (the previous token), when asked for. */
  experts: RoutedExperts[] | null;
  finishReason: FinishReason | null;
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens served from the prefix cache. */
  cachedTokens: number;
}

export interface EngineStats {
  running: number;
  waiting: number;
  blocksUsed: number;
  blocksFree: number;
  blockSize: number;
  prefixHitTokens: number;
  prefixQueryTokens: number;
  preemptions: number;
  steps: number;
  /** Steps that ran through the op-free decode plan. */
  planSteps: number;
}

export class EngineError extends Error {
  constructor(
    readonly param: string,
    message: string,
  ) {
    super(message);
  }
}

/** A request's prompt and choice count, checked as the engine needs them (also by the server's worker client). */
export function checkRequest(prompt: readonly number[], n: number, vocabSize: number, maxModelLen: number): void {
  if (!prompt.length) throw new EngineError('prompt', 'the prompt is empty');
  for (const id of prompt)
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize)
      throw new EngineError('prompt', `token id ${id} is outside the vocabulary [0, ${vocabSize})`);
  if (prompt.length >= maxModelLen)
    throw new EngineError('prompt', `the prompt has ${prompt.length} tokens; this model and cache take at most ${maxModelLen - 1}`);
  if (!Number.isInteger(n) || n < 1) throw new EngineError('n', `n must be an integer ≥ 1, got ${n}`);
}

/** The engine cannot take requests (shutting down, or its worker failed): the server answers 503. */
export class EngineUnavailable extends Error {}

export class Engine {
  readonly blocks: BlockManager;
  readonly scheduler: Scheduler;
  /** One [numBlocks·blockSize, width] cache per layer. */
  readonly cache: Tensor[];
  readonly blockSize: number;
  /** Longest sequence (prompt + output) the model and the cache allow. */
  readonly maxModelLen: number;
  private readonly absorb: boolean;
  private readonly codec: TextCodec | null;
  private readonly eos: number[];
  private readonly arena: BufferArena;
  private readonly onLogits: EngineOptions['onLogits'];
  /** The op-free decode step (MLA models); null: every step runs the model's forward. */
  private readonly plan: DecodePlan | null;
  private readonly byRequest = new Map<string, Sequence[]>();
  private nextSeq = 0;
  private steps = 0;
  private planSteps = 0;

  constructor(
    readonly model: DeepseekV2ForCausalLM,
    opts: EngineOptions = {},
  ) {
    const c = model.config;
    this.blockSize = opts.blockSize ?? 16;
    const width = cacheWidth(c);
    const bytesPerBlock = 4 * width * this.blockSize * c.num_hidden_layers;
    const numBlocks = opts.numBlocks ?? Math.floor(((opts.kvCacheMiB ?? 256) * 2 ** 20) / bytesPerBlock);
    if (!(numBlocks >= 1))
      throw new EngineError('kv_cache_mib', `the KV cache needs at least one block of ${(bytesPerBlock / 2 ** 20).toFixed(3)} MiB`);
    this.blocks = new BlockManager(numBlocks, this.blockSize, opts.prefixCaching ?? true);
    // every running sequence gets its token each step: no more of them than the step's token budget
    const maxBatchedTokens = opts.maxBatchedTokens ?? 512;
    this.scheduler = new Scheduler(this.blocks, { maxNumSeqs: Math.min(opts.maxNumSeqs ?? 64, maxBatchedTokens), maxBatchedTokens });
    this.cache = Array.from({ length: c.num_hidden_layers }, () => empty(model.backend, [numBlocks * this.blockSize, width]));
    this.maxModelLen = Math.min(c.max_position_embeddings, numBlocks * this.blockSize);
    this.absorb = opts.absorb ?? true;
    this.codec = opts.tokenizer ?? null;
    this.eos = opts.eosTokenIds ?? (c.eos_token_id !== null && c.eos_token_id !== undefined ? [c.eos_token_id] : []);
    // a decode step's ~200 buffers are mostly kilobytes: pool them all, and skip what training's arena does for its
    // gigabyte (huge-page advice, a syscall per reset; detaching each taken-back buffer, ~3.5 µs apiece)
    this.arena = new BufferArena(model.backend, { hugePages: false, minPooled: 1, detach: false });
    this.onLogits = opts.onLogits;
    this.plan =
      this.absorb && (opts.decodePlan ?? true) && DecodePlan.supports(c)
        ? new DecodePlan(
            model,
            this.cache.map((t) => t.f32()),
            this.blockSize,
          )
        : null;
  }

  /** Queue a request: n sequences continuing `prompt`. Throws an EngineError naming the bad field. */
  add(requestId: string, prompt: readonly number[], params: Partial<SamplingParams> | SamplingParams, n = 1): void {
    const p = samplingParams(params);
    if (this.byRequest.has(requestId)) throw new EngineError('request_id', `request ${requestId} is already running`);
    checkRequest(prompt, n, this.model.config.vocab_size, this.maxModelLen);
    const seed = p.seed ?? Math.floor(Math.random() * 2 ** 31);
    const seqs: Sequence[] = [];
    for (let i = 0; i < n; i++) {
      const s = new Sequence(this.nextSeq++, requestId, i, prompt, p, seed + i, this.codec);
      seqs.push(s);
      this.scheduler.add(s);
    }
    this.byRequest.set(requestId, seqs);
  }

  /** Cancel every request (after a failure): all blocks free. Returns the request ids. */
  abortAll(): string[] {
    const ids = [...this.byRequest.keys()];
    for (const id of ids) this.abort(id);
    return ids;
  }

  /** Cancel a request: its sequences leave the queues and their blocks are free at once. False if unknown. */
  abort(requestId: string): boolean {
    const seqs = this.byRequest.get(requestId);
    if (!seqs) return false;
    for (const s of seqs) {
      this.scheduler.remove(s);
      s.status = 'finished';
      s.finishReason = 'abort';
    }
    this.byRequest.delete(requestId);
    return true;
  }

  get hasWork(): boolean {
    return this.scheduler.hasWork;
  }

  stats(): EngineStats {
    return {
      running: this.scheduler.running.length,
      waiting: this.scheduler.waiting.length,
      blocksUsed: this.blocks.usedBlocks,
      blocksFree: this.blocks.freeBlocks,
      blockSize: this.blockSize,
      prefixHitTokens: this.blocks.prefixHitTokens,
      prefixQueryTokens: this.blocks.prefixQueryTokens,
      preemptions: this.scheduler.preemptions,
      steps: this.steps,
      planSteps: this.planSteps,
    };
  }

  /** Run one scheduler step; returns the token events it produced (one per sampled sequence, plus finishes). */
  step(): TokenEvent[] {
    const { batch, tooLong } = this.scheduler.schedule();
    const events: TokenEvent[] = [];
    for (const s of tooLong) events.push(this.finish(s, 'length', -1, this.drain(s, false).text, null, null));
    if (!batch.length) return events;
    this.steps++;
    this.arena.reset();
    const planned = this.plan !== null && batch.every((e) => e.n === 1);
    if (planned) this.planSteps++;
    const { logits, experts } = planned ? this.planned(batch) : withArena(this.arena, () => noGrad(() => this.forward(batch)));
    const V = this.model.config.vocab_size;
    let row = 0;
    for (const e of batch) {
      const seq = e.seq;
      seq.numComputed += e.n;
      this.registerFullBlocks(seq);
      if (!e.sample) continue;
      const r = row++;
      const rowLogits = logits.subarray(r * V, (r + 1) * V);
      this.onLogits?.(seq.requestId, seq.index, seq.outputLen, rowLogits);
      const { id, logprob } = seq.sampler.sample(rowLogits);
      events.push(this.accept(seq, id, logprob, experts ? experts(r) : null));
    }
    return events;
  }

  private registerFullBlocks(seq: Sequence): void {
    const bs = this.blockSize;
    for (let b = seq.blockHashes.length; (b + 1) * bs <= seq.numComputed; b++)
      seq.blockHashes.push(this.blocks.register(seq.blockTable, b, seq.tokens, b ? seq.blockHashes[b - 1]! : ''));
  }

  /** Append a sampled token: text, stop conditions, the event. */
  private accept(seq: Sequence, id: number, logprob: TokenLogprob | null, experts: RoutedExperts[] | null): TokenEvent {
    const p = seq.params;
    seq.tokens.push(id);
    seq.sampler.accept(id);
    const stopId = p.stopTokenIds.includes(id) || (!p.ignoreEos && this.eos.includes(id));
    // the token's text (a stop id has none) through the stop-string matcher
    let text = '';
    let stopped = false;
    const feed = (t: string): void => {
      if (stopped) return;
      const r = seq.stop.push(t);
      text += r.emit;
      stopped = r.stopped;
    };
    if (seq.detok && !stopId) feed(seq.detok.push(id));
    const full = seq.outputLen >= p.maxTokens || seq.tokens.length >= this.maxModelLen;
    if (stopId || stopped || full) {
      const tail = this.drain(seq, stopped);
      return this.finish(seq, stopId || stopped || tail.stopped ? 'stop' : 'length', id, text + tail.text, logprob, experts);
    }
    return this.event(seq, id, text, logprob, experts, null);
  }

  /**
   * The text a finishing sequence still holds: the decoder's incomplete character and what the stop matcher held
   * back, unless a stop string already ended it (nothing after it is returned); `stopped` when the flushed text
   * itself completes a stop string.
   */
  private drain(seq: Sequence, stopped: boolean): { text: string; stopped: boolean } {
    if (!seq.detok || stopped) return { text: '', stopped: false };
    const r = seq.stop.push(seq.detok.flush());
    return r.stopped ? { text: r.emit, stopped: true } : { text: r.emit + seq.stop.flush(), stopped: false };
  }

  private finish(
    seq: Sequence,
    reason: FinishReason,
    id: number,
    text: string,
    logprob: TokenLogprob | null,
    experts: RoutedExperts[] | null,
  ): TokenEvent {
    this.scheduler.remove(seq);
    seq.status = 'finished';
    seq.finishReason = reason;
    const siblings = this.byRequest.get(seq.requestId);
    if (siblings?.every((s) => s.status === 'finished')) this.byRequest.delete(seq.requestId);
    return this.event(seq, id, text, logprob, experts, reason);
  }

  private event(
    seq: Sequence,
    id: number,
    text: string,
    logprob: TokenLogprob | null,
    experts: RoutedExperts[] | null,
    finishReason: FinishReason | null,
  ): TokenEvent {
    return {
      requestId: seq.requestId,
      index: seq.index,
      id,
      text,
      logprob,
      experts,
      finishReason,
      promptTokens: seq.promptLen,
      completionTokens: seq.outputLen,
      cachedTokens: seq.numCached,
    };
  }

  /** A pure decode step through the plan: one token per sequence; logit rows in the order of the batch's samples. */
  private planned(batch: ScheduledSeq[]): { logits: Float32Array; experts: ((row: number) => RoutedExperts[] | null) | null } {
    const bs = this.blockSize;
    const N = batch.length;
    const ids = new Int32Array(N);
    const slots = new Int32Array(N);
    const lens = new Int32Array(N);
    const positions: number[] = [];
    const maxBlocks = Math.max(...batch.map((e) => e.seq.blockTable.length));
    const tables = new Int32Array(N * maxBlocks);
    batch.forEach((e, i) => {
      const s = e.seq;
      const t = s.numComputed;
      ids[i] = s.tokens[t]!;
      positions.push(t);
      slots[i] = s.blockTable[Math.floor(t / bs)]! * bs + (t % bs);
      lens[i] = t + 1;
      tables.set(s.blockTable, i * maxBlocks);
    });
    const wantExperts = batch.some((e) => e.sample && e.seq.params.returnExperts);
    const out = this.plan!.run(ids, positions, slots, tables, maxBlocks, lens, wantExperts);
    const V = this.model.config.vocab_size;
    const rows = batch.flatMap((e, i) => (e.sample ? [i] : []));
    // every row samples in a decode step (the usual case): the plan's buffer as it is, read before the next step
    let logits = out.logits;
    if (rows.length !== N) {
      logits = new Float32Array(rows.length * V);
      rows.forEach((i, r) => logits.set(out.logits.subarray(i * V, (i + 1) * V), r * V));
    }
    if (!out.routing) return { logits, experts: null };
    return {
      logits,
      experts: this.expertsOf(
        out.routing,
        batch.filter((e) => e.sample),
        rows,
      ),
    };
  }

  /**
   * Each sampled row's routing (for the sequences that asked): `layers` hold [tokens, K] experts and weights of the
   * step's flat batch, `tokenOf[row]` the batch position of sampled row `row`.
   */
  private expertsOf(
    layers: readonly { layer: number; indices: ArrayLike<number>; weights: ArrayLike<number> }[],
    sampled: readonly ScheduledSeq[],
    tokenOf: readonly number[],
  ): (row: number) => RoutedExperts[] | null {
    const K = this.model.config.num_experts_per_tok ?? 0;
    const read = layers.map((l) => ({ layer: l.layer, idx: Array.from(l.indices), w: Array.from(l.weights) }));
    return (row) => {
      if (!sampled[row]!.seq.params.returnExperts) return null;
      const t = tokenOf[row]!;
      return read.map((l) => ({ layer: l.layer, experts: l.idx.slice(t * K, t * K + K), weights: l.w.slice(t * K, t * K + K) }));
    };
  }

  /** The step's forward: decode tokens first (absorbed over the paged cache), then prefill chunks (naive path). */
  private forward(batch: ScheduledSeq[]): { logits: Float32Array; experts: ((row: number) => RoutedExperts[] | null) | null } {
    const be = { backend: this.model.backend };
    const bs = this.blockSize;
    const isDecode = (e: ScheduledSeq): boolean => this.absorb && e.n === 1;
    const order = [...batch.filter(isDecode), ...batch.filter((e) => !isDecode(e))];
    const ids: number[] = [];
    const positions: number[] = [];
    const slots: number[] = [];
    const slot = (seq: Sequence, t: number): number => seq.blockTable[Math.floor(t / bs)]! * bs + (t % bs);
    const logitRows: number[] = [];
    const sampleRowOf = new Map<ScheduledSeq, number>();
    for (const e of order) {
      for (let t = e.seq.numComputed; t < e.seq.numComputed + e.n; t++) {
        ids.push(e.seq.tokens[t]!);
        positions.push(t);
        slots.push(slot(e.seq, t));
      }
      if (e.sample) sampleRowOf.set(e, ids.length - 1);
    }
    // logits rows in the order of `batch` (the order step() reads them)
    for (const e of batch) if (e.sample) logitRows.push(sampleRowOf.get(e)!);
    const decode = order.filter(isDecode);
    const maxBlocks = Math.max(1, ...decode.map((e) => e.seq.blockTable.length));
    const tables = new Int32Array(Math.max(1, decode.length) * maxBlocks);
    decode.forEach((e, i) => tables.set(e.seq.blockTable, i * maxBlocks));
    const prefill: PagedBatch['prefill'][number][] = [];
    let start = decode.length;
    for (const e of order.slice(decode.length)) {
      const all = Array.from({ length: e.seq.numComputed + e.n }, (_, t) => slot(e.seq, t));
      prefill.push({ start, len: e.n, slots: intTensor(all, [all.length], be) });
      start += e.n;
    }
    const paged: PagedBatch = {
      layers: this.cache,
      blockSize: bs,
      slots: intTensor(slots, [slots.length], be),
      decode: {
        count: decode.length,
        blockTables: intTensor(tables, [Math.max(1, decode.length), maxBlocks], be),
        contextLens: intTensor(
          decode.map((e) => e.seq.numComputed + 1),
          [decode.length],
          be,
        ),
      },
      prefill,
    };
    const out = this.model.forward(intTensor(ids, [1, ids.length], be), {
      positions: [positions],
      paged,
      logitRows: intTensor(logitRows, [logitRows.length], be),
    });
    const logits = Float32Array.from(out.logits.f32());
    const wantExperts = batch.some((e) => e.sample && e.seq.params.returnExperts);
    if (!wantExperts) return { logits, experts: null };
    const layers = out.router.map((r) => ({ layer: r.layer, indices: r.indices.toArray(), weights: r.weights.toArray() }));
    return {
      logits,
      experts: this.expertsOf(
        layers,
        batch.filter((e) => e.sample),
        logitRows,
      ),
    };
  }
}
