// The DeepSeek-V2 auxiliary balance losses (paper §2.2.3, spec §6.1), per MoE layer and per sequence, averaged
// over the batch. The counts f, f', f'' are constants; gradient flows only through the mean scores P.
import { mean, mul, reshape, scale, sum } from '../autograd/ops/index.js';
import { tensor, type Tensor } from '../tensor/tensor.js';
import type { DeepseekV2Config } from '../model/config.js';
import type { RouterOutput } from '../model/moe.js';

export interface BalanceCoefficients {
  /** Expert-level α1 (paper: 0.003 for V2, 0.001 for Lite). */
  alpha1: number;
  /** Device-level α2 (paper: 0.05). */
  alpha2: number;
  /** Communication-level α3 (paper: 0.02). */
  alpha3: number;
}

export interface LayerBalance {
  layer: number;
  L_exp: Tensor;
  L_dev: Tensor;
  L_comm: Tensor;
  /** Unweighted per-sequence sums Σ f·P, Σ f'·P', Σ f''·P' ([B] each). */
  exp_seq: Tensor;
  dev_seq: Tensor;
  comm_seq: Tensor;
  f: Tensor;
  P: Tensor;
  f_dev: Tensor;
  P_dev: Tensor;
  f_comm: Tensor;
}

/**
 * For one MoE layer over B sequences of T tokens, with D = n_group devices (contiguous expert groups) and
 * M = topk_group:
 *   f_i = N_r/(K_r·T)·Σ_t sel[t,i]    P_i = (1/T)·Σ_t s[t,i]              L_exp  = α1·mean_b Σ_i f_i·P_i
 *   f'_d = mean_{i∈E_d} f_i           P'_d = Σ_{i∈E_d} P_i                 L_dev  = α2·mean_b Σ_d f'_d·P'_d
 *   f''_d = D/(M·T)·Σ_t 1[t sent to d]                                      L_comm = α3·mean_b Σ_d f''_d·P'_d
 */
export function balanceLosses(c: DeepseekV2Config, r: RouterOutput, B: number, T: number, a: BalanceCoefficients): LayerBalance {
  const Nr = c.n_routed_experts!;
  const K = c.num_experts_per_tok!;
  const D = c.n_group;
  const M = c.topk_group;
  const G = Nr / D;
  const idx = r.chosen; // [B·T·K]
  const f = new Float64Array(B * Nr);
  const fComm = new Float64Array(B * D);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const sent = new Set<number>();
      for (let k = 0; k < K; k++) {
        const e = idx[(b * T + t) * K + k]!;
        f[b * Nr + e]! += Nr / (K * T);
        sent.add(Math.floor(e / G));
      }
      for (const d of sent) fComm[b * D + d]! += D / (M * T);
    }
  }
  const fDev = new Float64Array(B * D);
  for (let b = 0; b < B; b++) for (let i = 0; i < Nr; i++) fDev[b * D + Math.floor(i / G)]! += f[b * Nr + i]! / G;
  const be = { backend: r.scores.backend };
  const fT = tensor(f, [B, Nr], be);
  const fDevT = tensor(fDev, [B, D], be);
  const fCommT = tensor(fComm, [B, D], be);
  const P = mean(reshape(r.scores, [B, T, Nr]), 1); // [B, Nr]
  const Pdev = sum(reshape(P, [B, D, G]), -1); // [B, D]
  const expSeq = sum(mul(fT, P), -1); // [B]
  const devSeq = sum(mul(fDevT, Pdev), -1);
  const commSeq = sum(mul(fCommT, Pdev), -1);
  return {
    layer: r.layer,
    L_exp: scale(mean(expSeq), a.alpha1),
    L_dev: scale(mean(devSeq), a.alpha2),
    L_comm: scale(mean(commSeq), a.alpha3),
    exp_seq: expSeq,
    dev_seq: devSeq,
    comm_seq: commSeq,
    f: fT,
    P,
    f_dev: fDevT,
    P_dev: Pdev,
    f_comm: fCommT,
  };
}
