// Generation for callers that want whole results rather than a stream: run prompts through the engine (the one
// decode path: paged cache, continuous batching, the sampler) on this thread and collect each sequence's ids.
import { noGrad } from '../autograd/graph.js';
import { maxWithIndices, narrow, reshape } from '../autograd/ops/index.js';
import type { DeepseekV2ForCausalLM } from '../model/model.js';
import { intTensor } from '../tensor/tensor.js';
import { Engine, type EngineOptions, type TokenEvent } from './engine.js';
import type { SamplingParams } from './sampler.js';

export interface GenerateOptions extends EngineOptions {
  maxNewTokens: number;
  /** Sampling (default greedy: temperature 0). */
  params?: Partial<SamplingParams>;
  /** End a sequence at EOS (default false: exactly maxNewTokens tokens, as the golden `gen` case). */
  stopAtEos?: boolean;
  /** Every token event as it happens. */
  onEvent?: (e: TokenEvent) => void;
}

/** Continue each prompt (any lengths) → its generated ids. */
export function generate(model: DeepseekV2ForCausalLM, prompts: readonly (readonly number[])[], opts: GenerateOptions): number[][] {
  if (!prompts.length) throw new Error('generate: need at least one prompt');
  // without a size given, a pool that holds every sequence whole (no preemption, no memory beyond the need)
  const bs = opts.blockSize ?? 16;
  const numBlocks =
    opts.numBlocks ??
    (opts.kvCacheMiB === undefined ? prompts.reduce((n, p) => n + Math.ceil((p.length + opts.maxNewTokens) / bs), 0) : undefined);
  const engine = new Engine(model, { maxNumSeqs: Math.max(64, prompts.length), ...opts, numBlocks });
  prompts.forEach((p, i) =>
    engine.add(String(i), p, { temperature: 0, ...opts.params, maxTokens: opts.maxNewTokens, ignoreEos: !opts.stopAtEos }),
  );
  const out: number[][] = prompts.map(() => []);
  while (engine.hasWork)
    for (const e of engine.step()) {
      if (e.id >= 0) out[Number(e.requestId)]!.push(e.id);
      opts.onEvent?.(e);
    }
  return out;
}

/** Greedy continuation of prompts [B][L] → ids [B][maxNewTokens] through the engine. */
export function generateGreedy(model: DeepseekV2ForCausalLM, prompts: readonly (readonly number[])[], opts: GenerateOptions): number[][] {
  return generate(model, prompts, { ...opts, params: { ...opts.params, temperature: 0 } });
}

/**
 * The check the engine is measured against: greedy decoding that recomputes the whole sequence at every step with
 * no cache at all (prompts of equal length, one batch). onStep receives each step's last-position logits [B, V].
 */
export function generateWithoutCache(
  model: DeepseekV2ForCausalLM,
  prompts: readonly (readonly number[])[],
  maxNewTokens: number,
  onStep?: (step: number, logits: Float32Array) => void,
): number[][] {
  const be = { backend: model.backend };
  const seqs = prompts.map((p) => [...p]);
  const out: number[][] = prompts.map(() => []);
  return noGrad(() => {
    for (let step = 0; step < maxNewTokens; step++) {
      const logits = model.forward(intTensor(seqs, undefined, be)).logits;
      const [B, T, V] = logits.shape as [number, number, number];
      const last = reshape(narrow(logits, 1, T - 1, 1), [B, V]);
      onStep?.(step, Float32Array.from(last.toArray()));
      maxWithIndices(last, -1)
        .indices.toArray()
        .forEach((t, b) => (seqs[b]!.push(t), out[b]!.push(t)));
    }
    return out;
  });
}
