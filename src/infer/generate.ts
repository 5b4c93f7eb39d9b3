// Greedy generation with the MLA latent cache: prefill the prompt, then one token at a time (spec §4).
import { noGrad } from '../autograd/graph.js';
import { maxWithIndices, narrow, reshape } from '../autograd/ops/index.js';
import type { DeepseekV2ForCausalLM } from '../model/model.js';
import { intTensor, type Tensor } from '../tensor/tensor.js';

export interface GenerateOptions {
  maxNewTokens: number;
  /** Decode through the absorbed latent attention (default) or decompress K/V each step. */
  absorb?: boolean;
  /** Recompute the whole sequence every step instead of using the cache (a check, not a mode to use). */
  noCache?: boolean;
  /** Receive each step's last-position logits [B, vocab]. */
  onStep?: (step: number, logits: Tensor, tokens: number[]) => void;
}

function argmaxLast(logits: Tensor): { next: number[]; last: Tensor } {
  const [B, T, V] = logits.shape as [number, number, number];
  const last = reshape(narrow(logits, 1, T - 1, 1), [B, V]);
  return { next: maxWithIndices(last, -1).indices.toArray(), last };
}

/** Greedy continuation of equal-length prompts [B][L] → generated ids [B][maxNewTokens]. */
export function generateGreedy(model: DeepseekV2ForCausalLM, prompts: number[][], opts: GenerateOptions): number[][] {
  const B = prompts.length;
  const L = prompts[0]?.length ?? 0;
  if (B === 0 || L === 0) throw new Error('generate: need at least one non-empty prompt');
  if (prompts.some((p) => p.length !== L)) throw new Error('generate: prompts must all have the same length');
  const V = model.config.vocab_size;
  for (const p of prompts)
    for (const id of p)
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new Error(`generate: token id ${id} is outside the vocabulary [0, ${V})`);
  const be = { backend: model.backend };
  const out: number[][] = prompts.map(() => []);
  return noGrad(() => {
    if (opts.noCache) {
      const seqs = prompts.map((p) => [...p]);
      for (let step = 0; step < opts.maxNewTokens; step++) {
        const { next, last } = argmaxLast(model.forward(intTensor(seqs, undefined, be)).logits);
        opts.onStep?.(step, last, next);
        next.forEach((t, b) => (seqs[b]!.push(t), out[b]!.push(t)));
      }
      return out;
    }
    const cache = model.newCache(B, L + opts.maxNewTokens);
    let logits = model.forward(intTensor(prompts, undefined, be), { cache }).logits; // prefill: naive path
    for (let step = 0; step < opts.maxNewTokens; step++) {
      const { next, last } = argmaxLast(logits);
      opts.onStep?.(step, last, next);
      next.forEach((t, b) => out[b]!.push(t));
      if (step + 1 < opts.maxNewTokens) {
        logits = model.forward(
          intTensor(
            next.map((t) => [t]),
            undefined,
            be,
          ),
          { cache, absorb: opts.absorb ?? true },
        ).logits;
      }
    }
    return out;
  });
}
