// The training objective: next-token cross-entropy plus Σ over MoE layers of the three balance losses.
import { add, crossEntropy, reshape, scale, sum } from '../autograd/ops/index.js';
import type { DeepseekV2ForCausalLM, ForwardOptions } from '../model/model.js';
import type { RouterOutput } from '../model/moe.js';
import type { Tensor } from '../tensor/tensor.js';
import { balanceLosses, type BalanceCoefficients, type LayerBalance } from './losses.js';

export interface Objective {
  /** Mean cross-entropy over targets ≠ −100. */
  lossCe: Tensor;
  /** lossCe + Σ_layers (L_exp + L_dev + L_comm): what backward() is called on. */
  lossTotal: Tensor;
  /** Per-target cross-entropy [B, T] (0 where ignored). */
  tokenCe: Tensor;
  balance: LayerBalance[];
  logits: Tensor;
  router: RouterOutput[];
}

/** ids, labels: int32 [B, T]; labels hold −100 where no target. */
export function objective(
  model: DeepseekV2ForCausalLM,
  ids: Tensor,
  labels: Tensor,
  coef: BalanceCoefficients,
  forward: ForwardOptions = {},
): Objective {
  const [B, T] = ids.shape as [number, number];
  const { logits, router } = model.forward(ids, forward);
  const V = model.config.vocab_size;
  const flat = reshape(logits, [B * T, V]);
  const flatLabels = reshape(labels, [B * T]);
  const rowCe = crossEntropy(flat, flatLabels, { reduction: 'none' }); // [B·T], 0 where ignored
  const valid = flatLabels.toArray().filter((t) => t !== -100).length;
  const lossCe = scale(sum(rowCe), 1 / Math.max(valid, 1)); // mean over valid targets
  const tokenCe = reshape(rowCe, [B, T]);
  const balance = router.map((r) => balanceLosses(model.config, r, B, T, coef));
  let lossTotal = lossCe;
  for (const l of balance) lossTotal = add(add(add(lossTotal, l.L_exp), l.L_dev), l.L_comm);
  return { lossCe, lossTotal, tokenCe, balance, logits, router };
}
