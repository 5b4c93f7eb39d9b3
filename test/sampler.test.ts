// The sampler: parameter checks, topIndices, greedy and seeded draws, frequencies, filtered supports, penalties, logprobs.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  DEFAULT_SAMPLING,
  expNonPositive,
  MAX_STOP_STRINGS,
  SamplingError,
  SequenceSampler,
  samplingParams,
  topIndices,
  type SamplingParams,
} from '../src/infer/sampler.js';
import { Rng } from '../src/tensor/random.js';

function sampler(over: Partial<SamplingParams>, prompt: number[] = [], seed = 0): SequenceSampler {
  return new SequenceSampler(samplingParams(over), prompt, seed);
}

/** How many times each id was drawn in n draws from the same logits. */
function counts(s: SequenceSampler, x: Float32Array, n: number): number[] {
  const c = new Array<number>(x.length).fill(0);
  for (let i = 0; i < n; i++) c[s.sample(x).id]!++;
  return c;
}

/** The ids drawn at least once in n draws, ascending. */
function support(over: Partial<SamplingParams>, x: Float32Array, n = 4000, seed = 1): number[] {
  return counts(sampler(over, [], seed), x, n).flatMap((c, i) => (c > 0 ? [i] : []));
}

const argmaxRef = (x: Float32Array): number => x.indexOf(Math.max(...x)); // the first: ties → lower id
const randomLogits = (rng: Rng, V: number, scale = 2): Float32Array => Float32Array.from({ length: V }, () => scale * rng.normal());

function logSoftmaxRef(x: ArrayLike<number>): number[] {
  const v = Array.from(x);
  const mx = Math.max(...v);
  const lse = mx + Math.log(v.reduce((a, t) => a + Math.exp(t - mx), 0));
  return v.map((t) => t - lse);
}

// Probabilities by id; in descending order the ids are 3 (0.4), 1 (0.25), 5 (0.15), 2 (0.1), 4 (0.06), 0 (0.04),
// so the cumulative masses are 0.4, 0.65, 0.8, 0.9, 0.96, 1. At temperature 2 (weights ∝ √p) they become
// 0.277, 0.497, 0.666, 0.805, 0.912, 1, and each weight relative to the largest 1, 0.79, 0.61, 0.5, 0.39, 0.32.
const P6 = [0.04, 0.25, 0.1, 0.4, 0.06, 0.15];
const X6 = Float32Array.from(P6, Math.log);

describe('samplingParams', () => {
  it('fills in the defaults, ignores undefined fields and keeps the given ones', () => {
    assert.deepEqual(samplingParams(), DEFAULT_SAMPLING);
    assert.deepEqual(samplingParams({ temperature: undefined, topK: undefined }), DEFAULT_SAMPLING);
    const given = { temperature: 0.5, topK: 7, stop: ['x'], seed: -3, logprobs: 0 };
    assert.deepEqual(samplingParams(given), { ...DEFAULT_SAMPLING, ...given });
  });

  it('accepts every boundary value', () => {
    const sixteen = Array.from({ length: MAX_STOP_STRINGS }, (_, i) => `s${i}`);
    for (const p of [
      { temperature: 0, topK: 0, topP: 1, minP: 0, presencePenalty: -2, frequencyPenalty: 2, logprobs: 20, maxTokens: 1 },
      { minP: 1, presencePenalty: 2, frequencyPenalty: -2, logprobs: 0, stopTokenIds: [0, 5], stop: sixteen, seed: -3 },
    ])
      assert.doesNotThrow(() => samplingParams(p), JSON.stringify(p));
  });

  it('throws a SamplingError naming the field for each bad value', () => {
    const tooMany = Array.from({ length: MAX_STOP_STRINGS + 1 }, (_, i) => `s${i}`);
    const bad: Partial<Record<keyof SamplingParams, unknown[]>> = {
      temperature: [-0.1, NaN, Infinity, '1', null],
      topK: [1.5, -1],
      topP: [0, 1.01, -0.5],
      minP: [-0.01, 1.5],
      repetitionPenalty: [0, -1],
      presencePenalty: [2.5, -2.01],
      frequencyPenalty: [3, -3],
      maxTokens: [0, 2.5],
      seed: [1.5, NaN],
      logprobs: [-1, 21, 1.5],
      stopTokenIds: [[1, -1], [0.5], 3],
      stop: [[''], 'x', [1], tooMany],
    };
    for (const [field, vs] of Object.entries(bad))
      for (const v of vs)
        assert.throws(
          () => samplingParams({ [field]: v } as Partial<SamplingParams>),
          (e: unknown) => e instanceof SamplingError && e.param === field && e.message.includes(field),
          `${field} = ${JSON.stringify(v)}`,
        );
  });
});

describe('topIndices', () => {
  it('returns the k largest in descending order, ties to the lower index, NaN skipped, any k', () => {
    assert.deepEqual(topIndices([3, 1, 4, 1, 5, 9, 2, 6], 3), [5, 7, 4]);
    assert.deepEqual(topIndices([1, 2, 2, 0, 2], 2), [1, 2]);
    assert.deepEqual(topIndices([1, 2, 2, 0, 2], 3), [1, 2, 4]);
    assert.deepEqual(topIndices([-Infinity, 0, -Infinity], 3), [1, 0, 2]);
    assert.deepEqual(topIndices([NaN, 1, NaN, 3], 2), [3, 1]);
    assert.deepEqual(topIndices([NaN, 1, NaN, 3], 10), [3, 1]);
    assert.deepEqual(topIndices([2, 0, 1], 5), [0, 2, 1]);
    assert.deepEqual(topIndices([2, 0, 1], 0), []);
    assert.deepEqual(topIndices([2, 0, 1], -1), []);
    assert.deepEqual(topIndices([], 3), []);
  });

  it('equals a full sort by (value desc, index asc) on random arrays with many ties', () => {
    const rng = new Rng(5);
    for (let t = 0; t < 300; t++) {
      const V = 1 + rng.int(100);
      const x = Array.from({ length: V }, () => rng.int(5));
      const k = rng.int(V + 3);
      const want = x.map((_, i) => i).sort((a, b) => x[b]! - x[a]! || a - b);
      assert.deepEqual(topIndices(x, k), want.slice(0, k), `V ${V}, k ${k}`);
    }
  });
});

describe('SequenceSampler', () => {
  it('temperature 0 is argmax (ties to the lower id), whatever the filters', () => {
    const rng = new Rng(2);
    for (let t = 0; t < 100; t++) {
      const x = randomLogits(rng, 1 + rng.int(50));
      assert.equal(sampler({ temperature: 0 }, [], t).sample(x).id, argmaxRef(x));
      assert.equal(sampler({ temperature: 0, topP: 0.1, minP: 0.9, topK: 3 }, [], t).sample(x).id, argmaxRef(x));
    }
    assert.equal(sampler({ temperature: 0 }).sample(Float32Array.from([0, 5, 1, 5])).id, 1);
  });

  it('topK 1 is argmax at any temperature', () => {
    const rng = new Rng(3);
    for (const temperature of [0.3, 1, 10, 100]) {
      const s = sampler({ temperature, topK: 1 }, [], 9);
      for (let t = 0; t < 100; t++) {
        const x = randomLogits(rng, 2 + rng.int(40));
        assert.equal(s.sample(x).id, argmaxRef(x));
      }
    }
  });

  it('the same seed repeats the draws, a different seed does not', () => {
    const x = randomLogits(new Rng(4), 50, 0.5);
    const run = (seed: number, over: Partial<SamplingParams> = {}): number[] => {
      const s = sampler(over, [], seed);
      return Array.from({ length: 200 }, () => s.sample(x).id);
    };
    for (const over of [{}, { topP: 0.9 }, { topK: 10, temperature: 0.7 }]) {
      assert.deepEqual(run(42, over), run(42, over));
      assert.notDeepEqual(run(42, over), run(43, over));
    }
  });

  it('with no filtering, frequencies over 20,000 draws match softmax(x / T) within 4 standard errors', () => {
    // each count is binomial(n, p): its frequency has standard error √(p(1−p)/n); a correct sampler lands outside
    // 4 SE with probability ≈ 6e-5 per cell (< 1e-3 over all 12), while a wrong temperature or an off-by-one in the
    // cumulative draw moves some frequency by several times that (the seed is fixed, so the test is deterministic)
    const x = Float32Array.from([1.0, -0.5, 2.0, 0.3, 0.0, -1.2]);
    const n = 20_000;
    for (const temperature of [1, 0.7]) {
      const p = logSoftmaxRef(Array.from(x, (v) => v / temperature)).map(Math.exp);
      const c = counts(sampler({ temperature }, [], 11), x, n);
      for (let i = 0; i < x.length; i++) {
        const se = Math.sqrt((p[i]! * (1 - p[i]!)) / n);
        assert.ok(Math.abs(c[i]! / n - p[i]!) < 4 * se, `T ${temperature}, id ${i}: ${c[i]! / n} vs ${p[i]}`);
      }
    }
  });

  it('top-k keeps exactly the k most likely ids (ties to the lower id)', () => {
    assert.deepEqual(support({ topK: 3 }, X6), [1, 3, 5]);
    assert.deepEqual(support({ topK: 3, temperature: 5 }, X6), [1, 3, 5]);
    assert.deepEqual(support({ topK: 6 }, X6), [0, 1, 2, 3, 4, 5]);
    assert.deepEqual(support({ topK: 100 }, X6), [0, 1, 2, 3, 4, 5]);
    assert.deepEqual(support({ topK: 2 }, Float32Array.from([1, 2, 2, 2, 0])), [1, 2]);
  });

  it('top-p keeps the shortest most-likely prefix whose mass reaches topP, after temperature', () => {
    assert.deepEqual(support({ topP: 0.3 }, X6), [3]);
    assert.deepEqual(support({ topP: 0.64 }, X6), [1, 3]); // 0.65 ≥ 0.64
    assert.deepEqual(support({ topP: 0.66 }, X6), [1, 3, 5]); // 0.65 < 0.66 ≤ 0.8
    assert.deepEqual(support({ topP: 0.75 }, X6), [1, 3, 5]);
    assert.deepEqual(support({ topP: 0.75, temperature: 2 }, X6), [1, 2, 3, 5]); // 0.666 < 0.75 ≤ 0.805
    assert.deepEqual(support({ topP: 0.99 }, X6), [0, 1, 2, 3, 4, 5]);
  });

  it('top-p after top-k is over the renormalised top-k mass', () => {
    // top 4 hold 0.9; 0.7 of that is 0.63, reached by 0.4 + 0.25 (without top-k, 0.7 needs three ids)
    assert.deepEqual(support({ topK: 4, topP: 0.7 }, X6), [1, 3]);
    assert.deepEqual(support({ topP: 0.7 }, X6), [1, 3, 5]);
  });

  it('min-p drops ids below minP × the top probability, after temperature', () => {
    assert.deepEqual(support({ minP: 0.3 }, X6), [1, 3, 5]); // floor 0.12: 0.15 kept, 0.1 dropped
    assert.deepEqual(support({ minP: 0.45 }, X6), [1, 3]); // floor 0.18
    assert.deepEqual(support({ minP: 0.45, temperature: 2 }, X6), [1, 2, 3, 5]); // relative 0.5 kept, 0.39 dropped
    assert.deepEqual(support({ minP: 1 }, X6), [3]);
    assert.deepEqual(support({ minP: 0.05, topK: 2 }, X6), [1, 3]);
  });

  it('top-p over V = 5000 with a flat tail keeps the exact nucleus, measured against the whole vocabulary', () => {
    // 10 heads (ids 4990..4999, logit 3) and 4990 tail ids at logit 0: relative weights 1 and e^-3. The nucleus is
    // the heads and the first n tail ids (ties → lower id), n the least with 10 + n·e^-3 ≥ topP · (10 + 4990·e^-3);
    // for topP 0.5, n = 2395: far beyond the sampler's first 64 candidates, and short of the 4096 it grows to.
    const V = 5000;
    const x = new Float32Array(V);
    x.fill(3, V - 10);
    const topP = 0.5;
    const w = Math.exp(-3);
    const need = (topP * (10 + (V - 10) * w) - 10) / w;
    assert.ok(need % 1 > 0.05 && need % 1 < 0.95, 'the boundary is not a near tie');
    const n = Math.ceil(need);
    assert.equal(n, 2395);
    const c = counts(sampler({ topP }, [], 3), x, 800); // ≈ 5 ms a draw at this V
    for (let i = V - 10; i < V; i++) assert.ok(c[i]! > 0, `head ${i} drawn`);
    for (let i = n; i < V - 10; i++) assert.equal(c[i], 0, `id ${i} is outside the nucleus`);
    // each of the last 200 nucleus ids has probability e^-3 / (10 + n·e^-3) ≈ 2.1e-4: ≈ 34 hits expected among them
    const last = c.slice(n - 200, n).reduce((a, b) => a + b, 0);
    assert.ok(last > 5, `the nucleus reaches id ${n - 1} (${last} draws among its last 200 ids)`);
  });

  it('the repetition penalty divides positive logits and multiplies negative ones, over prompt and output, once', () => {
    const greedy = (x: number[], prompt: number[], out: number[], repetitionPenalty = 1.2): number => {
      const s = sampler({ temperature: 0, repetitionPenalty }, prompt);
      for (const t of out) s.accept(t);
      return s.sample(Float32Array.from(x)).id;
    };
    assert.equal(greedy([2.0, 1.9], [], []), 0);
    assert.equal(greedy([2.0, 1.9], [0], []), 1); // 2 / 1.2 = 1.67 < 1.9
    assert.equal(greedy([2.0, 1.9], [], [0]), 1);
    assert.equal(greedy([-1.0, -1.1], [0], []), 1); // −1 · 1.2 = −1.2 < −1.1
    assert.equal(greedy([-1.0, -1.1], [], [0]), 1);
    assert.equal(greedy([2.0, 1.5], [0, 0], [0, 0, 0]), 0); // once: 1.67 > 1.5 (three times would be 1.16)
    assert.equal(greedy([2.0, 1.9], [0], [], 1), 0); // penalty 1: no effect
    assert.equal(greedy([1.9, 2.0], [0], [], 1 / 1.2), 0); // < 1 favours seen ids: 1.9 · 1.2 = 2.28 > 2
    assert.equal(greedy([2.0, 1.9], [7, 99], [50]), 0); // ids outside the vocabulary are ignored
  });

  it('presence and frequency penalties subtract count · frequency + presence over generated ids only', () => {
    const greedy = (over: Partial<SamplingParams>, out: number[], prompt: number[] = []): number => {
      const s = sampler({ temperature: 0, ...over }, prompt);
      for (const t of out) s.accept(t);
      return s.sample(Float32Array.from([3.0, 2.5, 2.0])).id;
    };
    assert.equal(greedy({ presencePenalty: 0.6 }, [0]), 1); // 2.4 < 2.5
    assert.equal(greedy({ presencePenalty: 0.4 }, [0]), 0); // 2.6 > 2.5
    assert.equal(greedy({ presencePenalty: 0.4 }, [0, 0, 0]), 0); // presence counts once
    assert.equal(greedy({ frequencyPenalty: 0.2 }, [0, 0, 0]), 1); // 3 − 0.6 = 2.4
    assert.equal(greedy({ frequencyPenalty: 0.15 }, [0, 0, 0]), 0); // 3 − 0.45 = 2.55
    assert.equal(greedy({ frequencyPenalty: 0.1, presencePenalty: 0.35 }, [0, 0]), 1); // 3 − 0.2 − 0.35 = 2.45
    assert.equal(greedy({ frequencyPenalty: 0.1, presencePenalty: 0.25 }, [0, 0]), 0); // 2.55
    assert.equal(greedy({ frequencyPenalty: 0.5, presencePenalty: 0.2 }, [0, 0, 1]), 2); // 1.8, 1.8, 2
    assert.equal(greedy({ presencePenalty: 2, frequencyPenalty: 2 }, [], [0, 0]), 0); // the prompt is not penalised
    assert.equal(greedy({ presencePenalty: -1.5 }, [2]), 2); // negative penalties favour generated ids: 3.5 > 3
  });

  it('log-probabilities are the raw log-softmax: chosen id, N descending alternatives, summing to 1', () => {
    const rng = new Rng(8);
    const V = 20;
    for (let t = 0; t < 20; t++) {
      const x = randomLogits(rng, V);
      const ref = logSoftmaxRef(x);
      const top = argmaxRef(x);
      const over = { repetitionPenalty: 3, presencePenalty: 2, frequencyPenalty: 2, logprobs: V };
      const s = sampler({ temperature: t % 2 ? 0 : 1, ...over }, [top], t);
      s.accept(top);
      const { id, logprob } = s.sample(x);
      if (t % 2) assert.notEqual(id, top, 'the penalties move the greedy choice');
      assert.ok(logprob);
      assert.ok(Math.abs(logprob.logprob - ref[id]!) < 1e-9, `logprob of ${id}`);
      assert.equal(logprob.top.length, V);
      assert.equal(logprob.top[0]!.id, top);
      for (let i = 1; i < V; i++) assert.ok(logprob.top[i - 1]!.logprob >= logprob.top[i]!.logprob, 'descending');
      assert.equal(new Set(logprob.top.map((e) => e.id)).size, V);
      for (const e of logprob.top) assert.ok(Math.abs(e.logprob - ref[e.id]!) < 1e-9);
      assert.ok(Math.abs(logprob.top.reduce((a, e) => a + Math.exp(e.logprob), 0) - 1) < 1e-9, 'Σ exp = 1');
      const three = sampler({ temperature: 0, logprobs: 3 }, [], t).sample(x).logprob!;
      assert.deepEqual(three.top, logprob.top.slice(0, 3));
    }
    assert.deepEqual(sampler({ logprobs: 0 }).sample(X6).logprob?.top, []);
    assert.equal(sampler({}).sample(X6).logprob, null);
  });

  it('e^t for the log-sum-exp: within 3 ulp of Math.exp over [−708, 0], 0 below and at −∞', () => {
    const rng = new Rng(11);
    let worst = 0;
    for (let i = 0; i < 200_000; i++) {
      const t = i < 8 ? [0, -1e-300, -1e-12, -Math.LN2 / 128, -Math.LN2 / 2, -1, -707.9, -708][i]! : -rng.uniform() * (i % 2 ? 40 : 708);
      const want = Math.exp(t);
      if (t <= -708) continue;
      const ulp = 2 ** (Math.floor(Math.log2(want)) - 52); // the spacing of doubles at want
      worst = Math.max(worst, Math.abs(expNonPositive(t) - want) / ulp);
    }
    assert.ok(worst <= 3, `worst error ${worst} ulp`);
    assert.equal(expNonPositive(0), 1);
    for (const t of [-708, -709, -1e6, -Infinity, NaN]) assert.equal(expNonPositive(t), 0, String(t));
    // a vocabulary-sized row, logits spread over 60 nats: the logprobs still agree with the double-precision reference
    const V = 4096;
    const x = new Float32Array(V).map(() => (rng.uniform() - 0.9) * 60);
    const ref = logSoftmaxRef(x);
    const id = argmaxRef(x);
    const { logprob } = sampler({ temperature: 0, logprobs: 5 }).sample(x);
    assert.ok(Math.abs(logprob!.logprob - ref[id]!) < 1e-12);
    for (const e of logprob!.top) assert.ok(Math.abs(e.logprob - ref[e.id]!) < 1e-12);
  });

  it('non-finite logits: NaN is never drawn, +Inf always is, and top-p over them returns', () => {
    const x = new Float32Array(300).fill(0);
    x[5] = NaN;
    x[7] = 2;
    const s = new SequenceSampler(samplingParams({ temperature: 1, topP: 0.9 }), [], 1);
    for (let i = 0; i < 200; i++) assert.notEqual(s.sample(x).id, 5);
    x[9] = Infinity;
    for (const params of [{ temperature: 1, topP: 0.9 }, { temperature: 0.7 }, { temperature: 0 }])
      assert.equal(new SequenceSampler(samplingParams(params), [], 2).sample(x).id, 9, JSON.stringify(params));
  });
});
