// Causal/masked attention with SIMD128, the AttentionParams contract (src/backend/backend.ts) and the algorithm
// of the reference (src/backend/ts/attention.ts): one query row at a time over a scratch row of S scores, the
// row's log-sum-exp saved for the backward, which recomputes the probabilities from it.
// Work items come from a shared counter: forward items are (batch, head); backward items are (batch, KV head),
// so that the dk and dv rows an item accumulates belong to it alone.
import { axpy, dot, exp1, exp4, hmax, PARAM, PARAMF } from './common';

// Parameter block (i32 slots; pointers are byte addresses into this memory):
//  0 B  1 H  2 Hkv  3 T  4 S  5 Dk  6 Dv  7 scale (f32)  8 causal  9 q  10 k  11 v  12 mask (0: none)  13 maskBatch
//  14 out  15 lse  16 work counter  17 scratch base  18 scratch bytes per thread
//  19..42 row strides (batch, head, row) of q, k, v, out, dout, dq, dk, dv  43 dout  44 dq  45 dk  46 dv
const STRIDES = 19;
const Q = 0, K = 1, V = 2, OUT = 3, DOUT = 4, DQ = 5, DK = 6, DV = 7;

@inline
function rowAt(pb: usize, base: usize, which: i32, b: i32, h: i32, t: i32): usize {
  const s = STRIDES + 3 * which;
  return base + ((<usize>(b * PARAM(pb, s) + h * PARAM(pb, s + 1) + t * PARAM(pb, s + 2))) << 2);
}

/** Keys visible to query row t: causal rows see keys j ≤ S − T + t. */
@inline
function visible(pb: usize, t: i32): i32 {
  const S = PARAM(pb, 4), T = PARAM(pb, 3);
  return PARAM(pb, 8) ? min(S, S - T + t + 1) : S;
}

/** Scores of query row (b, h, t) against its visible keys into `row`; returns how many, and their max in `mx`. */
function scores(pb: usize, b: i32, h: i32, t: i32, row: usize, mx: usize): i32 {
  const H = PARAM(pb, 1), Hkv = PARAM(pb, 2), T = PARAM(pb, 3), S = PARAM(pb, 4), Dk = PARAM(pb, 5);
  const scale = PARAMF(pb, 7);
  const mask = <usize>PARAM(pb, 12);
  const kvh = h / (H / Hkv);
  const q = rowAt(pb, <usize>PARAM(pb, 9), Q, b, h, t);
  const kb = <usize>PARAM(pb, 10);
  const n = visible(pb, t);
  const mrow = mask + ((<usize>(((PARAM(pb, 13) == 1 ? 0 : b) * T + t) * S)) << 2);
  let m: f32 = -Infinity;
  for (let j = 0; j < n; j++) {
    let s = dot(q, rowAt(pb, kb, K, b, kvh, j), Dk) * scale;
    if (mask) s += load<f32>(mrow + (<usize>j << 2));
    store<f32>(row + (<usize>j << 2), s);
    m = max(m, s);
  }
  store<f32>(mx, m);
  return n;
}

/** row[j] = exp(row[j] − m) for j < n; returns their sum. */
function expRow(row: usize, n: i32, m: f32): f32 {
  const vm = f32x4.splat(m);
  let acc = f32x4.splat(0);
  let j = 0;
  for (; j + 4 <= n; j += 4) {
    const e = exp4(f32x4.sub(v128.load(row + (<usize>j << 2)), vm));
    v128.store(row + (<usize>j << 2), e);
    acc = f32x4.add(acc, e);
  }
  let s = f32x4.extract_lane(acc, 0) + f32x4.extract_lane(acc, 1) + f32x4.extract_lane(acc, 2) + f32x4.extract_lane(acc, 3);
  for (; j < n; j++) {
    const e = exp1(load<f32>(row + (<usize>j << 2)) - m);
    store<f32>(row + (<usize>j << 2), e);
    s += e;
  }
  return s;
}

export function attention(pb: usize, tid: i32): void {
  const B = PARAM(pb, 0), H = PARAM(pb, 1), Hkv = PARAM(pb, 2), T = PARAM(pb, 3), S = PARAM(pb, 4), Dv = PARAM(pb, 6);
  const vb = <usize>PARAM(pb, 11), outb = <usize>PARAM(pb, 14), lse = <usize>PARAM(pb, 15);
  const scratch = <usize>PARAM(pb, 17) + <usize>tid * <usize>PARAM(pb, 18);
  const row = scratch;
  const acc = row + ((<usize>(S + 4)) << 2);
  const mx = acc + ((<usize>(Dv + 4)) << 2);
  for (;;) {
    const item = atomic.add<i32>(pb + 16 * 4, 1);
    if (item >= B * H) break;
    const b = item / H, h = item % H;
    const kvh = h / (H / Hkv);
    for (let t = 0; t < T; t++) {
      const n = scores(pb, b, h, t, row, mx);
      const m = load<f32>(mx);
      const o = rowAt(pb, outb, OUT, b, h, t);
      const lo = lse + ((<usize>((b * H + h) * T + t)) << 2);
      if (n <= 0 || m == -Infinity) {
        memory.fill(o, 0, (<usize>Dv) << 2); // no visible key: output 0, lse −inf
        store<f32>(lo, -Infinity);
        continue;
      }
      const sum = expRow(row, n, m);
      memory.fill(acc, 0, (<usize>Dv) << 2);
      for (let j = 0; j < n; j++) axpy(load<f32>(row + (<usize>j << 2)), rowAt(pb, vb, V, b, kvh, j), acc, Dv);
      const inv: f32 = 1 / sum;
      const vi = f32x4.splat(inv);
      let d = 0;
      for (; d + 4 <= Dv; d += 4) v128.store(o + (<usize>d << 2), f32x4.mul(v128.load(acc + (<usize>d << 2)), vi));
      for (; d < Dv; d++) store<f32>(o + (<usize>d << 2), load<f32>(acc + (<usize>d << 2)) * inv);
      store<f32>(lo, m + <f32>Math.log(<f64>sum));
    }
  }
}

function zeroRows(pb: usize, base: usize, which: i32, b: i32, h: i32, rows: i32, D: i32): void {
  for (let t = 0; t < rows; t++) memory.fill(rowAt(pb, base, which, b, h, t), 0, (<usize>D) << 2);
}

// p_j = exp(s_j − lse);  dv_j += p_j·do;  dp_j = do·v_j;  ds_j = p_j·(dp_j − do·o);  dq += scale·Σ ds_j·k_j;  dk_j += scale·ds_j·q
export function attentionBackward(pb: usize, tid: i32): void {
  const B = PARAM(pb, 0), H = PARAM(pb, 1), Hkv = PARAM(pb, 2), T = PARAM(pb, 3), S = PARAM(pb, 4);
  const Dk = PARAM(pb, 5), Dv = PARAM(pb, 6);
  const scale = PARAMF(pb, 7);
  const qb = <usize>PARAM(pb, 9), kb = <usize>PARAM(pb, 10), vb = <usize>PARAM(pb, 11);
  const outb = <usize>PARAM(pb, 14), lse = <usize>PARAM(pb, 15);
  const doutb = <usize>PARAM(pb, 43), dqb = <usize>PARAM(pb, 44), dkb = <usize>PARAM(pb, 45), dvb = <usize>PARAM(pb, 46);
  const scratch = <usize>PARAM(pb, 17) + <usize>tid * <usize>PARAM(pb, 18);
  const row = scratch;
  const mx = row + ((<usize>(S + 4)) << 2);
  const group = H / Hkv;
  for (;;) {
    const item = atomic.add<i32>(pb + 16 * 4, 1);
    if (item >= B * Hkv) break;
    const b = item / Hkv, g = item % Hkv;
    zeroRows(pb, dkb, DK, b, g, S, Dk);
    zeroRows(pb, dvb, DV, b, g, S, Dv);
    for (let h = g * group; h < (g + 1) * group; h++) {
      zeroRows(pb, dqb, DQ, b, h, T, Dk);
      for (let t = 0; t < T; t++) {
        const l = load<f32>(lse + ((<usize>((b * H + h) * T + t)) << 2));
        if (l == -Infinity) continue;
        const n = scores(pb, b, h, t, row, mx);
        const o = rowAt(pb, outb, OUT, b, h, t);
        const dO = rowAt(pb, doutb, DOUT, b, h, t);
        const q = rowAt(pb, qb, Q, b, h, t);
        const dq = rowAt(pb, dqb, DQ, b, h, t);
        const dOdotO = dot(dO, o, Dv);
        expRow(row, n, l);
        for (let j = 0; j < n; j++) {
          const pj = load<f32>(row + (<usize>j << 2));
          if (pj == 0) continue;
          const v = rowAt(pb, vb, V, b, g, j);
          const dp = dot(dO, v, Dv);
          axpy(pj, dO, rowAt(pb, dvb, DV, b, g, j), Dv);
          const ds = pj * (dp - dOdotO) * scale;
          axpy(ds, rowAt(pb, kb, K, b, g, j), dq, Dk);
          axpy(ds, q, rowAt(pb, dkb, DK, b, g, j), Dk);
        }
      }
    }
  }
}

export { hmax };
