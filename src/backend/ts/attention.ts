// Reference causal attention, one query row at a time (a [S] scratch row; the T×S score matrix is never
// materialised). Forward saves the row log-sum-exp; backward recomputes the probabilities from it
// (flash-attention style):
//   p_j  = exp(s_j − lse),   s_j = scale·q·k_j + mask_j
//   dv_j += p_j·do,  dp_j = do·v_j,  ds_j = p_j·(dp_j − do·o),  dq += scale·Σ_j ds_j·k_j,  dk_j += scale·ds_j·q
// Rows are addressed through the layout's (batch, head, row) strides; lse is dense [B,H,T].
import { denseAttentionLayout, type AttentionLayout, type AttentionParams, type F32, type RowStrides } from '../backend.js';

/** Number of keys visible to query row t (causal: keys j ≤ S−T+t). */
function visible(p: AttentionParams, t: number): number {
  return p.causal ? Math.min(p.S, p.S - p.T + t + 1) : p.S;
}

const at = (s: RowStrides, b: number, h: number, t: number): number => b * s[0] + h * s[1] + t * s[2];

function scores(p: AttentionParams, L: AttentionLayout, b: number, h: number, t: number, row: Float64Array): number {
  const { H, Hkv, T, S, Dk, q, k, mask, maskBatch, scale } = p;
  const kvh = Math.floor(h / (H / Hkv));
  const qo = at(L.q, b, h, t);
  const mBase = mask ? ((maskBatch === 1 ? 0 : b) * T + t) * S : 0;
  const n = visible(p, t);
  for (let j = 0; j < n; j++) {
    const ko = at(L.k, b, kvh, j);
    let s = 0;
    for (let d = 0; d < Dk; d++) s += q[qo + d]! * k[ko + d]!;
    row[j] = s * scale + (mask ? mask[mBase + j]! : 0);
  }
  return n;
}

export function attention(p: AttentionParams, out: F32, lse: F32): void {
  const { B, H, Hkv, T, S, Dv, v } = p;
  const L = p.layout ?? denseAttentionLayout(p);
  const row = new Float64Array(S);
  const acc = new Float64Array(Dv);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / (H / Hkv));
      for (let t = 0; t < T; t++) {
        const n = scores(p, L, b, h, t, row);
        let max = -Infinity;
        for (let j = 0; j < n; j++) if (row[j]! > max) max = row[j]!;
        const oo = at(L.out, b, h, t);
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
          const vo = at(L.v, b, kvh, j);
          for (let d = 0; d < Dv; d++) acc[d]! += e * v[vo + d]!;
        }
        for (let d = 0; d < Dv; d++) out[oo + d] = acc[d]! / sum;
        lse[lo] = max + Math.log(sum);
      }
    }
  }
}

/** Zero every row of an operand [B, heads, rows, D] in layout s. */
function zeroRows(x: F32, s: RowStrides, B: number, heads: number, rows: number, D: number): void {
  for (let b = 0; b < B; b++) for (let h = 0; h < heads; h++) for (let t = 0; t < rows; t++) x.fill(0, at(s, b, h, t), at(s, b, h, t) + D);
}

export function attentionBackward(p: AttentionParams, out: F32, lse: F32, dout: F32, dq: F32, dk: F32, dv: F32): void {
  const { B, H, Hkv, T, S, Dk, Dv, q, k, v, scale } = p;
  const L = p.layout ?? denseAttentionLayout(p);
  zeroRows(dq, L.dq, B, H, T, Dk);
  zeroRows(dk, L.dk, B, Hkv, S, Dk);
  zeroRows(dv, L.dv, B, Hkv, S, Dv);
  const row = new Float64Array(S);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / (H / Hkv));
      for (let t = 0; t < T; t++) {
        const l = lse[(b * H + h) * T + t]!;
        if (l === -Infinity) continue;
        const n = scores(p, L, b, h, t, row);
        const oo = at(L.out, b, h, t);
        const doo = at(L.dout, b, h, t);
        const qo = at(L.q, b, h, t);
        const dqo = at(L.dq, b, h, t);
        let dOdotO = 0;
        for (let d = 0; d < Dv; d++) dOdotO += dout[doo + d]! * out[oo + d]!;
        for (let j = 0; j < n; j++) {
          const pj = Math.exp(row[j]! - l);
          const vo = at(L.v, b, kvh, j);
          const dvo = at(L.dv, b, kvh, j);
          let dp = 0;
          for (let d = 0; d < Dv; d++) {
            dp += dout[doo + d]! * v[vo + d]!;
            dv[dvo + d] += pj * dout[doo + d]!;
          }
          const ds = pj * (dp - dOdotO) * scale;
          const ko = at(L.k, b, kvh, j);
          const dko = at(L.dk, b, kvh, j);
          for (let d = 0; d < Dk; d++) {
            dq[dqo + d] += ds * k[ko + d]!;
            dk[dko + d] += ds * q[qo + d]!;
          }
        }
      }
    }
  }
}
