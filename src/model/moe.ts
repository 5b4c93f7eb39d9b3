// DeepSeekMoE (spec §5): a softmax gate over all routed experts, greedy or group-limited top-k, routed experts
// run once each on the tokens sent to them, plus the always-on shared experts.
import { noGrad } from '../autograd/graph.js';
import {
  add,
  concat,
  div,
  expand,
  gather,
  indexAdd,
  indexSelect,
  linear,
  maskFromIndices,
  max,
  mul,
  reshape,
  scale,
  softmax,
  split,
  sum,
  topk,
} from '../autograd/ops/index.js';
import { intTensor, zeros, type Tensor } from '../tensor/tensor.js';
import type { DeepseekV2Config } from './config.js';
import { mlp } from './mlp.js';
import type { Params } from './params.js';

/** Indices of the k largest along the last axis; the selection is a constant (no gradient, spec §6.1). */
function selectTopk(x: Tensor, k: number): Tensor {
  return noGrad(() => topk(x, k).indices);
}

/** What the router decided for one MoE layer; returned to callers for the balance losses and visualisation. */
export interface RouterOutput {
  layer: number;
  /** softmax(x·W_gᵀ) over all routed experts, [N, N_r] (N = B·T), before any group masking; carries gradient. */
  scores: Tensor;
  /** Chosen experts [N, K_r] (int32), in descending order of weight. */
  indices: Tensor;
  /** Weights applied to the chosen experts' outputs, [N, K_r]: score · routed_scaling_factor. */
  weights: Tensor;
}

/** §5.4–§5.6: scores, selection and weights for x [N, d]. */
export function route(c: DeepseekV2Config, w: Params, prefix: string, layer: number, x: Tensor): RouterOutput {
  const N = x.shape[0]!;
  const Nr = c.n_routed_experts!;
  const K = c.num_experts_per_tok!;
  const scores = softmax(linear(x, w.get(`${prefix}.gate.weight`))); // [N, Nr], fp32 (§5.4)
  let indices: Tensor;
  if (c.topk_method === 'greedy') {
    indices = selectTopk(scores, K);
  } else {
    // §5.5 group_limited_greedy: group score = max over the group; keep topk_group groups; others' scores → 0
    const G = c.n_group;
    const groupScores = max(reshape(scores, [N, G, Nr / G]), -1); // [N, G]
    const keep = maskFromIndices(selectTopk(groupScores, c.topk_group), G); // [N, G] of 0/1
    const expertMask = reshape(expand(reshape(keep, [N, G, 1]), [N, G, Nr / G]), [N, Nr]);
    indices = selectTopk(mul(scores, expertMask), K);
  }
  let weights = gather(scores, indices); // [N, K]: raw softmax probabilities (§5.6)
  if (c.norm_topk_prob && K > 1) weights = div(weights, add(sum(weights, -1, true), 1e-20)); // normalise, then scale
  weights = scale(weights, c.routed_scaling_factor);
  return { layer, scores, indices, weights };
}

/**
 * Group the N·K token→expert assignments by expert (a stable counting sort), so each expert runs once on one
 * contiguous batch of its tokens.
 */
function dispatchPlan(indices: Tensor, Nr: number): { tokens: Tensor; assignments: Tensor; counts: number[] } {
  const idx = indices.toArray();
  const K = indices.shape[1]!;
  const counts = new Array<number>(Nr).fill(0);
  for (const e of idx) counts[e]!++;
  const start = new Array<number>(Nr).fill(0);
  for (let e = 1; e < Nr; e++) start[e] = start[e - 1]! + counts[e - 1]!;
  const assignments = new Array<number>(idx.length);
  idx.forEach((e, a) => (assignments[start[e]!++] = a));
  const be = { backend: indices.backend };
  return {
    tokens: intTensor(
      assignments.map((a) => Math.floor(a / K)),
      [idx.length],
      be,
    ),
    assignments: intTensor(assignments, [idx.length], be),
    counts,
  };
}

/** §5.1: MoE(x) = Σ_shared FFN(x) + Σ_k w_k · FFN_{idx_k}(x).  x [B,T,d] → [B,T,d] */
export function moe(c: DeepseekV2Config, w: Params, prefix: string, layer: number, x: Tensor): { out: Tensor; router: RouterOutput } {
  const [B, T, d] = x.shape as [number, number, number];
  const N = B * T;
  const xf = reshape(x, [N, d]);
  const router = route(c, w, prefix, layer, xf);
  const K = c.num_experts_per_tok!;
  const { tokens, assignments, counts } = dispatchPlan(router.indices, c.n_routed_experts!);
  const xs = indexSelect(xf, tokens); // [N·K, d], grouped by expert
  const outs: Tensor[] = [];
  split(xs, counts, 0).forEach((xe, e) => {
    if (counts[e]! > 0) outs.push(mlp(w, `${prefix}.experts.${e}`, xe));
  });
  const ws = reshape(indexSelect(reshape(router.weights, [N * K]), assignments), [N * K, 1]);
  const routed = indexAdd(zeros([N, d], { backend: x.backend }), tokens, mul(concat(outs, 0), ws)); // [N, d]
  const out = c.n_shared_experts ? add(routed, mlp(w, `${prefix}.shared_experts`, xf)) : routed;
  return { out: reshape(out, [B, T, d]), router };
}
