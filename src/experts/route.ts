// Route held-out text of every domain through a model and keep, per token, its domain, its id, and the experts each
// MoE layer chose (plus the shared / routed output norms): the input of experts/stats.ts.
import { noGrad } from '../autograd/graph.js';
import { crossEntropy } from '../autograd/ops/index.js';
import type { Doc } from '../data/corpus.js';
import { tokenizeDocs } from '../data/loader.js';
import type { DeepseekV2ForCausalLM } from '../model/model.js';
import { intTensor } from '../tensor/tensor.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { TokenRouting } from './stats.js';

export interface RouteOptions {
  /** Tokens per forward window (the model sees no context across windows). */
  seq: number;
  /** Windows per forward pass. */
  batch: number;
  /** At most this many tokens of each domain (the first ones of its documents, in order). */
  maxTokensPerDomain: number;
  eosId: number;
  onProgress?: (done: number, total: number) => void;
}

/** Domains in order of first appearance; documents without a domain count as `fallback`. */
export function domainsOf(docs: readonly Doc[], fallback: string): string[] {
  return [...new Set(docs.map((d) => d.domain ?? fallback))];
}

export function routeDomains(
  model: DeepseekV2ForCausalLM,
  tok: Tokenizer,
  docs: readonly Doc[],
  domains: string[],
  fallback: string,
  o: RouteOptions,
): TokenRouting {
  const K = model.config.num_experts_per_tok ?? 0;
  // windows of up to `seq` tokens, each from one domain
  const windows: { domain: number; ids: Int32Array }[] = [];
  domains.forEach((name, d) => {
    const ids = tokenizeDocs(
      tok,
      docs.filter((x) => (x.domain ?? fallback) === name),
      o.eosId,
    ).subarray(0, o.maxTokensPerDomain);
    for (let s = 0; s < ids.length; s += o.seq) windows.push({ domain: d, ids: ids.subarray(s, s + o.seq) });
  });
  const total = windows.reduce((s, w) => s + w.ids.length, 0);
  const domain = new Int32Array(total);
  const token = new Int32Array(total);
  const layerIds: number[] = [];
  const loss = new Float32Array(total).fill(NaN); // next-token cross-entropy; NaN at a window's last token
  let chosen: Int32Array[] = [];
  let parts: { shared: Float32Array; routed: Float32Array }[] = [];
  let at = 0;
  // equal-length windows go through together; a domain's shorter last window goes alone
  for (let i = 0; i < windows.length;) {
    const len = windows[i]!.ids.length;
    let j = i;
    while (j < windows.length && j - i < o.batch && windows[j]!.ids.length === len) j++;
    const group = windows.slice(i, j);
    const ids = new Int32Array(group.length * len);
    group.forEach((w, r) => ids.set(w.ids, r * len));
    const targets = new Int32Array(ids.length).fill(-100);
    group.forEach((w, r) => targets.set(w.ids.subarray(1), r * len));
    const { router, rowLoss } = noGrad(() => {
      const out = model.forward(intTensor(ids, [group.length, len], { backend: model.backend }), { moeParts: true });
      const ce = crossEntropy(out.logits, intTensor(targets, [group.length, len], { backend: model.backend }), { reduction: 'none' });
      return { router: out.router, rowLoss: ce.floats() };
    });
    for (let k = 0; k < targets.length; k++) if (targets[k] !== -100) loss[at + k] = rowLoss[k]!;
    if (!chosen.length) {
      chosen = router.map(() => new Int32Array(total * K)); // no MoE layer (a dense model): only the loss
      parts = router.map(() => ({ shared: new Float32Array(total), routed: new Float32Array(total) }));
      layerIds.push(...router.map((r) => r.layer));
    }
    if (!router[0]?.parts) parts = []; // no shared experts: nothing to compare the routed part with
    router.forEach((r, li) => {
      chosen[li]!.set(r.chosen, at * K);
      if (r.parts) {
        parts[li]!.shared.set(r.parts.shared, at);
        parts[li]!.routed.set(r.parts.routed, at);
      }
    });
    group.forEach((w, r) => {
      domain.fill(w.domain, at + r * len, at + (r + 1) * len);
      token.set(w.ids, at + r * len);
    });
    at += group.length * len;
    o.onProgress?.(at, total);
    i = j;
  }
  return { domain, token, chosen, ...(parts.length ? { parts } : {}), layerIds, loss };
}
