// The sampler: from one position's logits to the next token, per sequence. Order (as vLLM): penalties on the raw
// logits (repetition over prompt + output, presence and frequency over the output), then temperature, top-k,
// top-p (nucleus) and min-p filtering, then one seeded draw. Temperature 0 is greedy (argmax; ties → lower id).
// Log-probabilities reported to the caller are those of the model's own distribution (log-softmax of the raw
// logits, before penalties and filtering), as OpenAI and vLLM report them.
import { Rng } from '../tensor/random.js';

export interface SamplingParams {
  /** 0: greedy. */
  temperature: number;
  /** Keep the k most likely tokens (0: all). */
  topK: number;
  /** Keep the smallest set of most likely tokens whose probability mass reaches topP (1: all). */
  topP: number;
  /** Drop tokens whose probability is below minP × that of the most likely one (0: none). */
  minP: number;
  /** > 1 discourages tokens already in the prompt or output (HF/vLLM: a positive logit divided, a negative multiplied). */
  repetitionPenalty: number;
  /** Subtracted once from the logit of every token already generated (OpenAI). */
  presencePenalty: number;
  /** Subtracted from a token's logit once per time it was generated (OpenAI). */
  frequencyPenalty: number;
  /** Seeds the draw; absent: a fresh random seed per request. */
  seed?: number;
  /** Tokens to generate at most. */
  maxTokens: number;
  /** Ids that end the sequence (the model's EOS is added unless ignoreEos); the id itself is not output as text. */
  stopTokenIds: number[];
  /** Strings that end the sequence; the text up to the first one is returned (a stop string split over tokens is caught). */
  stop: string[];
  /** Report the chosen token's log-probability and this many top alternatives (null: no log-probabilities). */
  logprobs: number | null;
  ignoreEos: boolean;
  /** Report each token's routed experts per MoE layer. */
  returnExperts: boolean;
}

export const DEFAULT_SAMPLING: SamplingParams = {
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  maxTokens: 16,
  stopTokenIds: [],
  stop: [],
  logprobs: null,
  ignoreEos: false,
  returnExperts: false,
};

/** Limits that keep one request from costing unbounded work. */
export const MAX_TOP_LOGPROBS = 20;
export const MAX_STOP_STRINGS = 16;

export class SamplingError extends Error {
  constructor(
    readonly param: string,
    message: string,
  ) {
    super(message);
  }
}

/** Defaults filled in and every field checked; throws a SamplingError naming the field. */
export function samplingParams(p: Partial<SamplingParams> = {}): SamplingParams {
  const s: SamplingParams = { ...DEFAULT_SAMPLING, ...Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)) };
  const num = (name: keyof SamplingParams, ok: (v: number) => boolean, want: string): void => {
    const v = s[name] as unknown;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v))
      throw new SamplingError(name, `${name} must be ${want}, got ${JSON.stringify(v)}`);
  };
  num('temperature', (v) => v >= 0, 'a number ≥ 0');
  num('topK', (v) => Number.isInteger(v) && v >= 0, 'an integer ≥ 0');
  num('topP', (v) => v > 0 && v <= 1, 'in (0, 1]');
  num('minP', (v) => v >= 0 && v <= 1, 'in [0, 1]');
  num('repetitionPenalty', (v) => v > 0, 'a number > 0');
  num('presencePenalty', (v) => v >= -2 && v <= 2, 'in [-2, 2]');
  num('frequencyPenalty', (v) => v >= -2 && v <= 2, 'in [-2, 2]');
  num('maxTokens', (v) => Number.isInteger(v) && v >= 1, 'an integer ≥ 1');
  if (s.seed !== undefined) num('seed', (v) => Number.isInteger(v), 'an integer');
  if (s.logprobs !== null)
    num('logprobs', (v) => Number.isInteger(v) && v >= 0 && v <= MAX_TOP_LOGPROBS, `an integer in [0, ${MAX_TOP_LOGPROBS}]`);
  if (!Array.isArray(s.stopTokenIds) || !s.stopTokenIds.every((t) => Number.isInteger(t) && t >= 0))
    throw new SamplingError('stopTokenIds', 'stopTokenIds must be a list of token ids');
  if (!Array.isArray(s.stop) || !s.stop.every((t) => typeof t === 'string' && t.length > 0) || s.stop.length > MAX_STOP_STRINGS)
    throw new SamplingError('stop', `stop must be up to ${MAX_STOP_STRINGS} non-empty strings`);
  return { ...s, stop: [...s.stop], stopTokenIds: [...s.stopTokenIds] }; // never the defaults' own arrays
}

/** One token's log-probability and its top alternatives. */
export interface TokenLogprob {
  logprob: number;
  top: { id: number; logprob: number }[];
}

/** Indices of the k largest values of x (descending; ties → lower index), by a size-k min-heap: O(V log k). */
export function topIndices(x: ArrayLike<number>, k: number): number[] {
  const V = x.length;
  k = Math.min(k, V);
  if (k <= 0) return [];
  const heap: number[] = []; // min-heap of indices by (value, −index)
  const less = (a: number, b: number): boolean => x[a]! < x[b]! || (x[a]! === x[b]! && a > b);
  const down = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && less(heap[l]!, heap[m]!)) m = l;
      if (r < heap.length && less(heap[r]!, heap[m]!)) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m]!, heap[i]!];
      i = m;
    }
  };
  for (let i = 0; i < V; i++) {
    if (Number.isNaN(x[i]!)) continue;
    if (heap.length < k) {
      heap.push(i);
      for (let j = heap.length - 1; j > 0;) {
        const p = (j - 1) >> 1;
        if (!less(heap[j]!, heap[p]!)) break;
        [heap[j], heap[p]] = [heap[p]!, heap[j]!];
        j = p;
      }
    } else if (less(heap[0]!, i)) {
      heap[0] = i;
      down(0);
    }
  }
  return heap.sort((a, b) => x[b]! - x[a]! || a - b);
}

function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]! || Number.isNaN(x[best]!)) best = i;
  return best;
}

// e^t for t ≤ 0, in double, for the sum of logSumExp: V8's Math.exp is a call into the runtime, ~15 ns, so a
// 4,096-token vocabulary took 60–90 µs a token, a third of a served token's time when logprobs are asked for.
// Range reduction by ln 2 / 64 (Cody–Waite: k = round(t·64/ln 2), r = t − k·ln 2/64 in two parts, |r| ≤ ln 2/128),
// a degree-5 Taylor polynomial (truncation ≤ 3.5·10⁻¹⁷ there), and 2^(j/64), 2^−m from tables (k = 64·m + j):
// within 3 ulp of Math.exp over [−708, 0] (test/sampler.test.ts), and V8 inlines it: a 4,096-wide sum 62 → 36 µs.
const EXP_INV = 64 / Math.LN2;
const EXP_HI = 6.9314718036912381649e-1 / 64; // ln 2's upper bits: k·EXP_HI is exact for the k used here
const EXP_LO = 1.90821492927058770002e-10 / 64;
const EXP_FRAC = Float64Array.from({ length: 64 }, (_, j) => 2 ** (j / 64));
const EXP_POW = Float64Array.from({ length: 1023 }, (_, m) => 2 ** -m);

/** e^t for t ≤ 0 (0 below −708, where e^t < 3.4·10⁻³⁰⁸; and for −∞). Exported for its test. */
export function expNonPositive(t: number): number {
  if (!(t > -708)) return 0;
  const kf = Math.floor(t * EXP_INV + 0.5);
  const k = kf | 0;
  const r = t - kf * EXP_HI - kf * EXP_LO;
  const r2 = r * r;
  const p = 1 + r + r2 * (0.5 + r * (1 / 6)) + r2 * r2 * (1 / 24 + r * (1 / 120));
  return p * EXP_FRAC[k & 63]! * EXP_POW[-(k >> 6)]!;
}

/** log Σ exp(x), in double (terms below e^−708 count as 0: the largest term is 1, so they cannot change the sum). */
function logSumExp(x: Float32Array): number {
  let mx = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i]! > mx) mx = x[i]!;
  if (mx === -Infinity) return mx;
  let s = 0;
  for (let i = 0; i < x.length; i++) s += expNonPositive(x[i]! - mx); // small enough for V8 to inline
  return mx + Math.log(s);
}

/**
 * Logits with NaN as −∞ and ±∞ clamped to the float range (a diverged checkpoint or an overflow must not make the
 * sampler loop or draw NaN weights); the same array when all are finite.
 */
function finite(x: Float32Array): Float32Array {
  let ok = true;
  for (let i = 0; i < x.length && ok; i++) ok = Number.isFinite(x[i]!);
  if (ok) return x;
  return x.map((v) => (Number.isNaN(v) ? -Infinity : v === Infinity ? 3.4e38 : v === -Infinity ? -Infinity : v));
}

/** Per-sequence sampler state: its random stream and the counts the penalties need. */
export class SequenceSampler {
  private readonly rng: Rng;
  /** Times each id was generated (presence / frequency penalties). */
  private readonly outputCounts = new Map<number, number>();
  /** Ids of the prompt and the output (repetition penalty). */
  private readonly seen = new Set<number>();
  private work: Float32Array | null = null;

  constructor(
    readonly params: SamplingParams,
    prompt: readonly number[],
    seed: number,
  ) {
    this.rng = new Rng(seed);
    if (params.repetitionPenalty !== 1) for (const t of prompt) this.seen.add(t);
  }

  /** Record a generated token (called for every token the sequence outputs). */
  accept(id: number): void {
    this.outputCounts.set(id, (this.outputCounts.get(id) ?? 0) + 1);
    if (this.params.repetitionPenalty !== 1) this.seen.add(id);
  }

  /** The next token from one position's raw logits [V]. */
  sample(raw: Float32Array): { id: number; logprob: TokenLogprob | null } {
    const p = this.params;
    const logits = finite(raw);
    const id = this.choose(logits);
    let logprob: TokenLogprob | null = null;
    if (p.logprobs !== null) {
      const lse = logSumExp(logits);
      logprob = {
        logprob: logits[id]! - lse,
        top: topIndices(logits, p.logprobs).map((t) => ({ id: t, logprob: logits[t]! - lse })),
      };
    }
    return { id, logprob };
  }

  private penalised(logits: Float32Array): Float32Array {
    const p = this.params;
    if (p.repetitionPenalty === 1 && p.presencePenalty === 0 && p.frequencyPenalty === 0) return logits;
    if (!this.work || this.work.length !== logits.length) this.work = new Float32Array(logits.length);
    const x = this.work;
    x.set(logits);
    if (p.repetitionPenalty !== 1)
      for (const t of this.seen) if (t < x.length) x[t] = x[t]! > 0 ? x[t]! / p.repetitionPenalty : x[t]! * p.repetitionPenalty;
    for (const [t, n] of this.outputCounts) if (t < x.length) x[t] = x[t]! - n * p.frequencyPenalty - p.presencePenalty;
    return x;
  }

  private choose(raw: Float32Array): number {
    const p = this.params;
    const x = this.penalised(raw);
    if (p.temperature === 0) return argmax(x);
    const V = x.length;
    const invT = 1 / p.temperature;
    const mx = x[argmax(x)]!;
    // candidates in descending order of probability: exactly the top-k, or for top-p a prefix grown until its mass
    // reaches topP (so the vocabulary is sorted only when the nucleus really is that wide)
    let total = 0; // Σ exp((x − max)/T) over the whole vocabulary
    for (let i = 0; i < V; i++) total += Math.exp((x[i]! - mx) * invT);
    const weight = (i: number): number => Math.exp((x[i]! - mx) * invT);
    // candidates in descending order of probability: exactly the top-k, or for top-p a prefix grown until its mass
    // reaches topP (so the vocabulary is sorted only when the nucleus really is that wide); null: all of them
    let cand: number[] | null = null;
    let w: number[] = [];
    if (p.topK > 0 && p.topK < V) {
      cand = topIndices(x, p.topK);
      w = cand.map(weight);
    } else if (p.topP < 1) {
      for (let k = 64; ; k *= 4) {
        cand = topIndices(x, k);
        w = cand.map(weight);
        if (w.reduce((a, b) => a + b, 0) >= p.topP * total || k >= V) break;
      }
    }
    // top-p: the shortest prefix whose mass reaches topP of the distribution left by top-k (the whole vocabulary
    // when top-k did not restrict it)
    if (p.topP < 1 && cand) {
      const mass = p.topK > 0 && p.topK < V ? w.reduce((a, b) => a + b, 0) : total;
      let acc = 0;
      let n = w.length;
      for (let i = 0; i < w.length; i++) {
        acc += w[i]!;
        if (acc >= p.topP * mass) {
          n = i + 1;
          break;
        }
      }
      w = w.slice(0, n);
      cand = cand.slice(0, n);
    }
    // min-p: relative to the most likely token, whose weight is exp(0) = 1
    if (p.minP > 0) {
      if (cand) {
        const cut = w.findIndex((v) => v < p.minP);
        if (cut > 0) {
          w = w.slice(0, cut);
          cand = cand.slice(0, cut);
        }
      } else {
        cand = [];
        for (let i = 0; i < V; i++) if (weight(i) >= p.minP) cand.push(i);
        w = cand.map(weight);
      }
    }
    if (!cand) {
      // no filter: one draw over the whole vocabulary, no sorting
      let u = this.rng.uniform() * total;
      for (let i = 0; i < V; i++) {
        u -= weight(i);
        if (u < 0) return i;
      }
      return argmax(x);
    }
    const mass = w.reduce((a, b) => a + b, 0);
    let u = this.rng.uniform() * mass;
    for (let i = 0; i < w.length; i++) {
      u -= w[i]!;
      if (u < 0) return cand[i]!;
    }
    return cand[cand.length - 1]!;
  }
}
