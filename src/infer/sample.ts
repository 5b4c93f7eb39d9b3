// Sampled generation for one prompt with the MLA latent cache: temperature, top-k and top-p (nucleus) filtering,
// seeded so a run can be repeated; stops at EOS. Temperature 0 is greedy.
import { noGrad } from '../autograd/graph.js';
import { narrow, reshape } from '../autograd/ops/index.js';
import type { DeepseekV2ForCausalLM } from '../model/model.js';
import { Rng } from '../tensor/random.js';
import { intTensor } from '../tensor/tensor.js';

export interface SampleOptions {
  maxNewTokens: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  /** Stop after this token (not included in the output). */
  eosId?: number;
  onToken?: (id: number) => void;
}

/** Pick one id from logits with temperature / top-k / top-p. */
export function pickToken(logits: ArrayLike<number>, rng: Rng, temperature: number, topK: number, topP: number): number {
  const V = logits.length;
  if (temperature <= 0) {
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[i]! > logits[best]!) best = i;
    return best;
  }
  const ids = Array.from({ length: V }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
  const keep = ids.slice(0, topK > 0 ? Math.min(topK, V) : V);
  const mx = logits[keep[0]!]!;
  const p = keep.map((i) => Math.exp((logits[i]! - mx) / temperature));
  const total = p.reduce((a, b) => a + b, 0);
  let n = p.length;
  if (topP < 1) {
    let acc = 0;
    for (let i = 0; i < p.length; i++) {
      acc += p[i]! / total;
      if (acc >= topP) {
        n = i + 1;
        break;
      }
    }
  }
  const mass = p.slice(0, n).reduce((a, b) => a + b, 0);
  let u = rng.uniform() * mass;
  for (let i = 0; i < n; i++) {
    u -= p[i]!;
    if (u <= 0) return keep[i]!;
  }
  return keep[n - 1]!;
}

export function sampleTokens(model: DeepseekV2ForCausalLM, prompt: number[], opts: SampleOptions): number[] {
  if (!prompt.length) throw new Error('sample: the prompt is empty');
  const V = model.config.vocab_size;
  const rng = new Rng(opts.seed ?? 0);
  const out: number[] = [];
  const be = { backend: model.backend };
  return noGrad(() => {
    const cache = model.newCache(1, prompt.length + opts.maxNewTokens);
    let logits = model.forward(intTensor([prompt], undefined, be), { cache }).logits;
    for (let step = 0; step < opts.maxNewTokens; step++) {
      const T = logits.shape[1]!;
      const last = reshape(narrow(logits, 1, T - 1, 1), [V]).toArray();
      const id = pickToken(last, rng, opts.temperature ?? 0.8, opts.topK ?? 50, opts.topP ?? 0.95);
      if (id === opts.eosId) break;
      out.push(id);
      opts.onToken?.(id);
      if (step + 1 < opts.maxNewTokens) logits = model.forward(intTensor([[id]], undefined, be), { cache, absorb: true }).logits;
    }
    return out;
  });
}
