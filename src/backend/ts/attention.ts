// Reference causal attention, one query row at a time (a [S] scratch row; the T×S score matrix is never
// materialised). Forward saves the row log-sum-exp; backward recomputes the probabilities from it
// (flash-attention style):
//   p_j  = exp(s_j − lse),   s_j = scale·q·k_j + mask_j
//   dv_j += p_j·do,  dp_j = do·v_j,  ds_j = p_j·(dp_j − do·o),  dq += scale·Σ_j ds_j·k_j,  dk_j += scale·ds_j·q
import type { AttentionParams, F32 } from '../backend.js';

/** Number of keys visible to query row t (causal: keys j ≤ S−T+t). */
function visible(p: AttentionParams, t: number): number {
  return p.causal ? Math.min(p.S, p.S - p.T + t + 1) : p.S;
}

function scores(p: AttentionParams, b: number, h: number, t: number, row: Float64Array): number {
  const { H, Hkv, T, S, Dk, q, k, mask, maskBatch, scale } = p;
  const kvh = Math.floor(h / (H / Hkv));
  const qo = ((b * H + h) * T + t) * Dk;
  const kBase = (b * Hkv + kvh) * S * Dk;
  const mBase = mask ? ((maskBatch === 1 ? 0 : b) * T + t) * S : 0;
  const n = visible(p, t);
  for (let j = 0; j < n; j++) {
    const ko = kBase + j * Dk;
    let s = 0;
    for (let d = 0; d < Dk; d++) s += q[qo + d]! * k[ko + d]!;
    row[j] = s * scale + (mask ? mask[mBase + j]! : 0);
  }
  return n;
}

export function attention(p: AttentionParams, out: F32, lse: F32): void {
  const { B, H, Hkv, T, S, Dv, v } = p;
  const row = new Float64Array(S);
  const acc = new Float64Array(Dv);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const vBase = (b * Hkv + Math.floor(h / (H / Hkv))) * S * Dv;
      for (let t = 0; t < T; t++) {
        const n = scores(p, b, h, t, row);
        let max = -Infinity;
        for (let j = 0; j < n; j++) if (row[j]! > max) max = row[j]!;
        const oo = ((b * H + h) * T + t) * Dv;
        const lo = (b * H + h) * T + t;
        if (max === -Infinity) {
          // no visible key (fully masked row): output 0, lse −inf
          for (let d = 0; d < Dv; d++) out[oo + d] = 0;
          lse[lo] = -Infinity;
          continue;
        }
        acc.fill(0);
        let sum = 0;
        for (let j = 0; j < n; j++) {
          const e = Math.exp(row[j]! - max);
          sum += e;
          const vo = vBase + j * Dv;
          for (let d = 0; d < Dv; d++) acc[d]! += e * v[vo + d]!;
        }
        for (let d = 0; d < Dv; d++) out[oo + d] = acc[d]! / sum;
        lse[lo] = max + Math.log(sum);
      }
    }
  }
}

export function attentionBackward(p: AttentionParams, out: F32, lse: F32, dout: F32, dq: F32, dk: F32, dv: F32): void {
  const { B, H, Hkv, T, S, Dk, Dv, q, k, v, scale } = p;
  dq.fill(0);
  dk.fill(0);
  dv.fill(0);
  const row = new Float64Array(S);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / (H / Hkv));
      const kBase = (b * Hkv + kvh) * S * Dk;
      const vBase = (b * Hkv + kvh) * S * Dv;
      for (let t = 0; t < T; t++) {
        const lo = (b * H + h) * T + t;
        const l = lse[lo]!;
        if (l === -Infinity) continue;
        const n = scores(p, b, h, t, row);
        const oo = lo * Dv;
        const qo = lo * Dk;
        let dOdotO = 0;
        for (let d = 0; d < Dv; d++) dOdotO += dout[oo + d]! * out[oo + d]!;
        for (let j = 0; j < n; j++) {
          const pj = Math.exp(row[j]! - l);
          const vo = vBase + j * Dv;
          let dp = 0;
          for (let d = 0; d < Dv; d++) {
            dp += dout[oo + d]! * v[vo + d]!;
            dv[vo + d] += pj * dout[oo + d]!;
          }
          const ds = pj * (dp - dOdotO) * scale;
          const ko = kBase + j * Dk;
          for (let d = 0; d < Dk; d++) {
            dq[qo + d] += ds * k[ko + d]!;
            dk[ko + d] += ds * q[qo + d]!;
          }
        }
      }
    }
  }
}
