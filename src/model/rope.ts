// RoPE frequencies with YaRN (spec §3.2–§3.3) and the MLA softmax scale (spec §2.4).
import { tensor, type Tensor } from '../tensor/tensor.js';
import type { Backend } from '../backend/backend.js';
import type { DeepseekV2Config, RopeScaling } from './config.js';

/** yarn_mscale(s, μ) = 1 if s ≤ 1 else 0.1·μ·ln(s) + 1 */
export function yarnMscale(scale: number, mscale: number): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

/** The pair index that completes `rotations` turns over the original context (spec §3.3 corr_dim). */
function correctionDim(rotations: number, dim: number, base: number, L0: number): number {
  return (dim * Math.log(L0 / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
}

export function yarnRange(r: RopeScaling, dim: number, base: number): { low: number; high: number } {
  const low = Math.max(Math.floor(correctionDim(r.beta_fast, dim, base, r.original_max_position_embeddings)), 0);
  const high = Math.min(Math.ceil(correctionDim(r.beta_slow, dim, base, r.original_max_position_embeddings)), dim - 1); // dim−1, as the reference
  return { low, high };
}

/** inv_freq[k], k = 0 … dim/2 − 1, with YaRN blending when rope_scaling is set. */
export function ropeInvFreq(c: DeepseekV2Config): Float64Array {
  const dim = c.qk_rope_head_dim;
  const base = c.rope_theta;
  const out = new Float64Array(dim / 2);
  for (let k = 0; k < dim / 2; k++) out[k] = base ** ((-2 * k) / dim);
  const r = c.rope_scaling;
  if (!r) return out;
  const { low, high: h } = yarnRange(r, dim, base);
  const high = low === h ? h + 0.001 : h;
  for (let k = 0; k < dim / 2; k++) {
    const ramp = Math.min(Math.max((k - low) / (high - low), 0), 1);
    out[k] = out[k]! * (1 - ramp) + (out[k]! / r.factor) * ramp;
  }
  return out;
}

/** cos/sin amplitude: yarn_mscale(s, mscale) / yarn_mscale(s, mscale_all_dim) (1.0 for the released models). */
export function ropeAmplitude(c: DeepseekV2Config): number {
  const r = c.rope_scaling;
  if (!r) return 1;
  return yarnMscale(r.factor, r.mscale) / yarnMscale(r.factor, r.mscale_all_dim);
}

/** (d_nope + d_rope)^-1/2, times m² when rope_scaling.mscale_all_dim is non-zero (spec §2.4, pitfall 1). */
export function softmaxScale(c: DeepseekV2Config): number {
  let s = (c.qk_nope_head_dim + c.qk_rope_head_dim) ** -0.5;
  const r = c.rope_scaling;
  if (r && r.mscale_all_dim) {
    const m = yarnMscale(r.factor, r.mscale_all_dim);
    s *= m * m;
  }
  return s;
}

/**
 * cos/sin tables for the given positions: [T, dim/2], or [B, T, dim/2] when positions is per batch row.
 * Angles are float32 pos × inv_freq, as in the reference.
 */
export function ropeTables(c: DeepseekV2Config, positions: number[] | number[][], backend: Backend): { cos: Tensor; sin: Tensor } {
  const inv = ropeInvFreq(c).map((v) => Math.fround(v));
  const amp = ropeAmplitude(c);
  const rows: number[][] = Array.isArray(positions[0]) ? (positions as number[][]) : [positions as number[]];
  const half = inv.length;
  const cos: number[] = [];
  const sin: number[] = [];
  for (const row of rows) {
    for (const p of row) {
      for (let k = 0; k < half; k++) {
        const angle = Math.fround(p * inv[k]!);
        cos.push(amp * Math.cos(angle));
        sin.push(amp * Math.sin(angle));
      }
    }
  }
  const T = rows[0]!.length;
  const shape = Array.isArray(positions[0]) ? [rows.length, T, half] : [T, half];
  return { cos: tensor(cos, shape, { backend }), sin: tensor(sin, shape, { backend }) };
}
