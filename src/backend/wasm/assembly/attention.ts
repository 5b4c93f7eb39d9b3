// Causal/masked attention with SIMD128, the AttentionParams contract (src/backend/backend.ts) and the algorithm
// of the reference (src/backend/ts/attention.ts): one query row at a time over a scratch row of S scores, the
// row's log-sum-exp saved for the backward, which recomputes the probabilities from it.
// Work items come from a shared counter: forward items are (batch, head); backward items are (batch, KV head),
// so that the dk and dv rows an item accumulates belong to it alone.
import { dot, dot4, exp1, exp4, hmax, madd, PARAM, PARAMF } from './common';

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
  const k0 = rowAt(pb, <usize>PARAM(pb, 10), K, b, kvh, 0);
  const ks = (<usize>PARAM(pb, STRIDES + 3 * K + 2)) << 2;
  const n = visible(pb, t);
  const mrow = mask + ((<usize>(((PARAM(pb, 13) == 1 ? 0 : b) * T + t) * S)) << 2);
  const vs = f32x4.splat(scale);
  let vm = f32x4.splat(-Infinity);
  let j = 0;
  for (; j + 4 <= n; j += 4) {
    let s4 = f32x4.mul(dot4(q, k0 + <usize>j * ks, ks, Dk), vs);
    if (mask) s4 = f32x4.add(s4, v128.load(mrow + (<usize>j << 2)));
    v128.store(row + (<usize>j << 2), s4);
    vm = f32x4.max(vm, s4);
  }
  let m = hmax(vm);
  for (; j < n; j++) {
    let s = dot(q, k0 + <usize>j * ks, Dk) * scale;
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

/** out[d] += Σ_{j<n} w[j]·x[j·xs + d] for d < D: 16 columns at a time in registers, so out is touched once. */
function accumRows(w: usize, n: i32, x: usize, xs: usize, D: i32, out: usize): void {
  let d = 0;
  for (; d + 16 <= D; d += 16) {
    const o = <usize>d << 2;
    let a0 = v128.load(out + o), a1 = v128.load(out + o, 16), a2 = v128.load(out + o, 32), a3 = v128.load(out + o, 48);
    let p = x + o;
    for (let j = 0; j < n; j++) {
      const wj = v128.load32_splat(w + (<usize>j << 2));
      a0 = madd(wj, v128.load(p), a0);
      a1 = madd(wj, v128.load(p, 16), a1);
      a2 = madd(wj, v128.load(p, 32), a2);
      a3 = madd(wj, v128.load(p, 48), a3);
      p += xs;
    }
    v128.store(out + o, a0);
    v128.store(out + o, a1, 16);
    v128.store(out + o, a2, 32);
    v128.store(out + o, a3, 48);
  }
  for (; d + 4 <= D; d += 4) {
    const o = <usize>d << 2;
    let a0 = v128.load(out + o);
    let p = x + o;
    for (let j = 0; j < n; j++) {
      a0 = madd(v128.load32_splat(w + (<usize>j << 2)), v128.load(p), a0);
      p += xs;
    }
    v128.store(out + o, a0);
  }
  for (; d < D; d++) {
    const o = <usize>d << 2;
    let a: f32 = load<f32>(out + o);
    for (let j = 0; j < n; j++) a += load<f32>(w + (<usize>j << 2)) * load<f32>(x + <usize>j * xs + o);
    store<f32>(out + o, a);
  }
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
      accumRows(row, n, rowAt(pb, vb, V, b, kvh, 0), (<usize>PARAM(pb, STRIDES + 3 * V + 2)) << 2, Dv, acc);
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
/** y[d] += Σ_r w[r]·x_r[d] over n floats, for four rows x_r at once (one read and write of y, not four). */
@inline
function axpy4(w: v128, x0: usize, x1: usize, x2: usize, x3: usize, y: usize, n: i32): void {
  const w0 = f32x4.splat(f32x4.extract_lane(w, 0)), w1 = f32x4.splat(f32x4.extract_lane(w, 1));
  const w2 = f32x4.splat(f32x4.extract_lane(w, 2)), w3 = f32x4.splat(f32x4.extract_lane(w, 3));
  let d = 0;
  for (; d + 4 <= n; d += 4) {
    const o = <usize>d << 2;
    let acc = v128.load(y + o);
    acc = madd(w0, v128.load(x0 + o), acc);
    acc = madd(w1, v128.load(x1 + o), acc);
    acc = madd(w2, v128.load(x2 + o), acc);
    acc = madd(w3, v128.load(x3 + o), acc);
    v128.store(y + o, acc);
  }
  for (; d < n; d++) {
    const o = <usize>d << 2;
    store<f32>(
      y + o,
      load<f32>(y + o) +
        f32x4.extract_lane(w, 0) * load<f32>(x0 + o) +
        f32x4.extract_lane(w, 1) * load<f32>(x1 + o) +
        f32x4.extract_lane(w, 2) * load<f32>(x2 + o) +
        f32x4.extract_lane(w, 3) * load<f32>(x3 + o),
    );
  }
}

// Four query rows at a time: their probabilities p and score gradients ds go into scratch rows (zero past each
// row's visible keys), then every key's dv and dk rows take the four rows' contributions in one pass.
export function attentionBackward(pb: usize, tid: i32): void {
  const B = PARAM(pb, 0), H = PARAM(pb, 1), Hkv = PARAM(pb, 2), T = PARAM(pb, 3), S = PARAM(pb, 4);
  const Dk = PARAM(pb, 5), Dv = PARAM(pb, 6);
  const scale = PARAMF(pb, 7);
  const qb = <usize>PARAM(pb, 9), kb = <usize>PARAM(pb, 10), vb = <usize>PARAM(pb, 11);
  const outb = <usize>PARAM(pb, 14), lse = <usize>PARAM(pb, 15);
  const doutb = <usize>PARAM(pb, 43), dqb = <usize>PARAM(pb, 44), dkb = <usize>PARAM(pb, 45), dvb = <usize>PARAM(pb, 46);
  const scratch = <usize>PARAM(pb, 17) + <usize>tid * <usize>PARAM(pb, 18);
  const rowBytes = (<usize>(S + 4)) << 2;
  const P = scratch; // 4 rows of p
  const DS = P + 4 * rowBytes; // 4 rows of ds
  const mx = DS + 4 * rowBytes;
  const group = H / Hkv;
  const vsz = (<usize>PARAM(pb, STRIDES + 3 * V + 2)) << 2;
  const ksz = (<usize>PARAM(pb, STRIDES + 3 * K + 2)) << 2;
  const vsc = f32x4.splat(scale);
  for (;;) {
    const item = atomic.add<i32>(pb + 16 * 4, 1);
    if (item >= B * Hkv) break;
    const b = item / Hkv, g = item % Hkv;
    zeroRows(pb, dkb, DK, b, g, S, Dk);
    zeroRows(pb, dvb, DV, b, g, S, Dv);
    const v0 = rowAt(pb, vb, V, b, g, 0);
    const k0 = rowAt(pb, kb, K, b, g, 0);
    for (let h = g * group; h < (g + 1) * group; h++) {
      zeroRows(pb, dqb, DQ, b, h, T, Dk);
      for (let t0 = 0; t0 < T; t0 += 4) {
        let nmax = 0;
        for (let r = 0; r < 4; r++) {
          const t = t0 + r;
          const p = P + <usize>r * rowBytes;
          const ds = DS + <usize>r * rowBytes;
          const l = t < T ? load<f32>(lse + ((<usize>((b * H + h) * T + t)) << 2)) : -Infinity;
          if (l == -Infinity) {
            store<i32>(mx + 4 + (<usize>r << 2), 0); // no visible key (or past the end): no contribution
            continue;
          }
          const n = scores(pb, b, h, t, p, mx);
          store<i32>(mx + 4 + (<usize>r << 2), n);
          nmax = max(nmax, n);
          expRow(p, n, l); // p_j
          // ds_j = p_j·(dO·v_j − dO·o)·scale, four keys at a time
          const dO = rowAt(pb, doutb, DOUT, b, h, t);
          const dOdotO = dot(dO, rowAt(pb, outb, OUT, b, h, t), Dv);
          const vo = f32x4.splat(dOdotO);
          let j = 0;
          for (; j + 4 <= n; j += 4) {
            const dp = dot4(dO, v0 + <usize>j * vsz, vsz, Dv);
            v128.store(ds + (<usize>j << 2), f32x4.mul(f32x4.mul(v128.load(p + (<usize>j << 2)), f32x4.sub(dp, vo)), vsc));
          }
          for (; j < n; j++) {
            const pj = load<f32>(p + (<usize>j << 2));
            store<f32>(ds + (<usize>j << 2), pj * (dot(dO, v0 + <usize>j * vsz, Dv) - dOdotO) * scale);
          }
          // dq += Σ_j ds_j·k_j
          accumRows(ds, n, k0, ksz, Dk, rowAt(pb, dqb, DQ, b, h, t));
        }
        if (nmax == 0) continue;
        // rows see fewer keys than the longest of the four: zero their p and ds up to nmax
        for (let r = 0; r < 4; r++) {
          const n = load<i32>(mx + 4 + (<usize>r << 2));
          if (n < nmax) {
            memory.fill(P + <usize>r * rowBytes + (<usize>n << 2), 0, (<usize>(nmax - n)) << 2);
            memory.fill(DS + <usize>r * rowBytes + (<usize>n << 2), 0, (<usize>(nmax - n)) << 2);
          }
        }
        // the four rows' dO and q (rows past the end repeat the last real one, with weight 0)
        const last = min(T - 1, t0 + 3);
        const d0 = rowAt(pb, doutb, DOUT, b, h, t0), d1 = rowAt(pb, doutb, DOUT, b, h, min(t0 + 1, last));
        const d2 = rowAt(pb, doutb, DOUT, b, h, min(t0 + 2, last)), d3 = rowAt(pb, doutb, DOUT, b, h, last);
        const q0 = rowAt(pb, qb, Q, b, h, t0), q1 = rowAt(pb, qb, Q, b, h, min(t0 + 1, last));
        const q2 = rowAt(pb, qb, Q, b, h, min(t0 + 2, last)), q3 = rowAt(pb, qb, Q, b, h, last);
        for (let j = 0; j < nmax; j++) {
          const o = <usize>j << 2;
          const wp = f32x4(load<f32>(P + o), load<f32>(P + rowBytes + o), load<f32>(P + 2 * rowBytes + o), load<f32>(P + 3 * rowBytes + o));
          const wd = f32x4(load<f32>(DS + o), load<f32>(DS + rowBytes + o), load<f32>(DS + 2 * rowBytes + o), load<f32>(DS + 3 * rowBytes + o));
          axpy4(wp, d0, d1, d2, d3, rowAt(pb, dvb, DV, b, g, j), Dv);
          axpy4(wd, q0, q1, q2, q3, rowAt(pb, dkb, DK, b, g, j), Dk);
        }
      }
    }
  }
}
