// DeepSeekMoE (spec §5): a softmax gate over all routed experts, greedy or group-limited top-k, routed experts
// run once each on the tokens sent to them, plus the always-on shared experts.
import { noGrad } from '../autograd/graph.js';
import {
  add,
  div,
  expand,
  gather,
  groupedLinear,
  indexAdd,
  indexSelect,
  linear,
  maskFromIndices,
  max,
  mul,
  reshape,
  scale,
  softmax,
  sum,
  swiglu,
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
  /** The same expert ids read to the host once, row-major [N·K_r]: the dispatch, the balance losses and the trainer's
   * load counts all use this copy. */
  chosen: readonly number[];
  /** Weights applied to the chosen experts' outputs, [N, K_r]: score · routed_scaling_factor. */
  weights: Tensor;
  /** Assignments dropped by device-level token dropping (0 when dropping is off). */
  dropped: number;
  /** Assignments per routed expert that actually ran, after dropping [N_r]. */
  load: number[];
  /** With ForwardOptions.moeParts: per token, the L2 norms of the shared experts' output and of the weighted sum of
   * the routed experts' outputs (how much of the layer's update each part carries) [N]. */
  parts?: { shared: Float32Array; routed: Float32Array };
}

/** Device-level token dropping (spec §6.3), training only. */
export interface TokenDropping {
  /** Per-device budget = ceil(capacityFactor · N·K_r / D) assignments (paper: 1.0). */
  capacityFactor: number;
  /** Sequences (batch rows) whose assignments are never dropped (~10% of each step's sequences). */
  protectedRows: ReadonlySet<number>;
}

/**
 * Which of the N·K_r assignments survive token dropping (spec §6.3 [R]). Devices are the n_group contiguous
 * expert groups. Protected rows are admitted first; on an over-full device the unprotected assignments with the
 * lowest affinity (softmax score) are dropped until the device is at capacity.
 */
export function dropMask(c: DeepseekV2Config, indices: readonly number[], affinity: number[], T: number, drop: TokenDropping): boolean[] {
  const K = c.num_experts_per_tok!;
  const D = c.n_group;
  const perDevice = c.n_routed_experts! / D;
  const capacity = Math.ceil((drop.capacityFactor * indices.length) / D);
  const keep = new Array<boolean>(indices.length).fill(true);
  const byDevice: number[][] = Array.from({ length: D }, () => []);
  indices.forEach((e, a) => byDevice[Math.floor(e / perDevice)]!.push(a));
  for (const list of byDevice) {
    if (list.length <= capacity) continue;
    const open = list.filter((a) => !drop.protectedRows.has(Math.floor(Math.floor(a / K) / T)));
    open.sort((x, y) => affinity[x]! - affinity[y]! || y - x); // lowest affinity first; later tokens first on ties
    const excess = Math.min(list.length - capacity, open.length);
    for (let i = 0; i < excess; i++) keep[open[i]!] = false;
  }
  return keep;
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
  return { layer, scores, indices, chosen: indices.toArray(), weights, dropped: 0, load: [] };
}

/**
 * Group the N·K token→expert assignments by expert (a stable counting sort), so each expert runs once on one
 * contiguous batch of its tokens.
 */
function dispatchPlan(
  idx: readonly number[],
  K: number,
  Nr: number,
  keep: boolean[] | null,
  be: { backend: Tensor['backend'] },
): { tokens: Tensor; assignments: Tensor; counts: number[]; kept: number } {
  const counts = new Array<number>(Nr).fill(0);
  idx.forEach((e, a) => {
    if (!keep || keep[a]) counts[e]!++;
  });
  const start = new Array<number>(Nr).fill(0);
  for (let e = 1; e < Nr; e++) start[e] = start[e - 1]! + counts[e - 1]!;
  const kept = start[Nr - 1]! + counts[Nr - 1]!;
  const assignments = new Array<number>(kept);
  idx.forEach((e, a) => {
    if (!keep || keep[a]) assignments[start[e]!++] = a;
  });
  return {
    tokens: intTensor(
      assignments.map((a) => Math.floor(a / K)),
      [kept],
      be,
    ),
    assignments: intTensor(assignments, [kept], be),
    counts,
    kept,
  };
}

/** §5.1: MoE(x) = Σ_shared FFN(x) + Σ_k w_k · FFN_{idx_k}(x).  x [B,T,d] → [B,T,d] */
export function moe(
  c: DeepseekV2Config,
  w: Params,
  prefix: string,
  layer: number,
  x: Tensor,
  drop?: TokenDropping,
  parts = false,
): { out: Tensor; router: RouterOutput } {
  const [B, T, d] = x.shape as [number, number, number];
  const N = B * T;
  const xf = reshape(x, [N, d]);
  const router = route(c, w, prefix, layer, xf);
  const K = c.num_experts_per_tok!;
  const idx = router.chosen;
  const keep = drop ? dropMask(c, idx, noGrad(() => gather(router.scores, router.indices)).toArray(), T, drop) : null;
  const { tokens, assignments, counts, kept } = dispatchPlan(idx, K, c.n_routed_experts!, keep, { backend: x.backend });
  router.dropped = N * K - kept;
  router.load = counts;
  const xs = indexSelect(xf, tokens); // [kept, d], grouped by expert
  // Every expert's SwiGLU MLP (mlp.ts) on its own rows of xs, each projection one grouped product.
  const proj = (name: string): Tensor[] => w.family(`${prefix}.experts.*.${name}.weight`, counts.length);
  const h = swiglu(groupedLinear(xs, counts, proj('gate_proj')), groupedLinear(xs, counts, proj('up_proj'))); // [kept, I]
  const ys = groupedLinear(h, counts, proj('down_proj')); // [kept, d]
  const ws = indexSelect(reshape(router.weights, [N * K]), assignments); // [kept]: each assignment's gate value
  // shared experts' output + Σ_k g_k · FFN_k(x), the weighted scatter in one pass
  const base = c.n_shared_experts ? mlp(w, `${prefix}.shared_experts`, xf) : zeros([N, d], { backend: x.backend });
  const out = kept ? indexAdd(base, tokens, ys, ws) : base; // [N, d]
  if (parts && c.n_shared_experts) router.parts = partNorms(base, out, N, d);
  return { out: reshape(out, [B, T, d]), router };
}

/** Row norms of the shared part and of the routed part (out − shared), read to the host. */
function partNorms(shared: Tensor, out: Tensor, N: number, d: number): { shared: Float32Array; routed: Float32Array } {
  const s = shared.floats();
  const o = out.floats();
  const sn = new Float32Array(N);
  const rn = new Float32Array(N);
  for (let i = 0; i < N; i++) {
    let a = 0;
    let b = 0;
    for (let j = i * d; j < (i + 1) * d; j++) {
      a += s[j]! * s[j]!;
      b += (o[j]! - s[j]!) ** 2;
    }
    sn[i] = Math.sqrt(a);
    rn[i] = Math.sqrt(b);
  }
  return { shared: sn, routed: rn };
}
