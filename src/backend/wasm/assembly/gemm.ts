// Batched SGEMM with SIMD128 (AssemblyScript): C_p = alpha·A_p·B_p + beta·C_p, the GemmParams contract of
// src/backend/backend.ts. The BLIS structure in small: pack a KC×NC block of B into 8-column panels and an MC×KC
// block of A into 4-row panels (both contiguous whatever A's and B's strides), then a 4×8 register-tile
// micro-kernel runs over the panels: 8 accumulators of 4 lanes, one fused multiply-add (relaxed SIMD) or a
// multiply and an add (plain SIMD128) per lane and k.
//
// Work items are tiles of C (NC columns × a range of rows, per batch) taken from a shared atomic counter, so the
// same code runs on one thread or on several sharing memory (src/backend/wasm/pool.ts).

import { dot4, madd, PARAM } from './common';

const MR = 4;
const NR = 8;
const MC = 64;
const KC = 256;
const NC = 256;

/** Bytes of packing scratch one thread needs: an A block, a B block and an edge tile. */
export function gemmScratchBytes(): i32 {
  return (MC * KC + KC * (NC + NR) + MR * NR) * 4;
}

// Parameter block, i32 slots (byte pointers are into this memory, already offset; strides in elements):
//  0 batch  1 M  2 N  3 K  4 a  5 aBatch  6 aRow  7 aCol  8 b  9 bBatch  10 bRow  11 bCol  12 c  13 cBatch
//  14 alpha (f32)  15 beta (f32)  16 work counter  17 scratch base  18 scratch bytes per thread
//  19 row splits (how many row ranges each column tile is cut into)

/** B block [kc × nc] at b (element (k, n) at b + 4·(k·rs + n·cs)) → NR-column panels, zero-padded. */
function packB(dst: usize, b: usize, rs: i32, cs: i32, kc: i32, nc: i32): void {
  for (let j0 = 0; j0 < nc; j0 += NR) {
    const w = min(NR, nc - j0);
    const panel = dst + <usize>(j0 * kc) * 4;
    if (cs == 1 && w == NR) {
      for (let k = 0; k < kc; k++) {
        const src = b + <usize>(k * rs + j0) * 4;
        v128.store(panel + <usize>(k * NR) * 4, v128.load(src));
        v128.store(panel + <usize>(k * NR) * 4, v128.load(src, 16), 16);
      }
    } else if (rs == 1 && w == NR) {
      // B = Wᵀ (x·Wᵀ): each panel column is a contiguous row of W; 4×4 blocks transposed in registers
      const r0 = b + <usize>(j0 * cs) * 4;
      const rstep = <usize>cs * 4;
      let k = 0;
      for (; k + 4 <= kc; k += 4) {
        const o = <usize>k << 2;
        const d = panel + <usize>(k * NR) * 4;
        for (let half = 0; half < 2; half++) {
          const src = r0 + <usize>(half * 4) * rstep + o;
          const x0 = v128.load(src), x1 = v128.load(src + rstep), x2 = v128.load(src + 2 * rstep), x3 = v128.load(src + 3 * rstep);
          const t0 = i32x4.shuffle(x0, x1, 0, 4, 1, 5), t1 = i32x4.shuffle(x0, x1, 2, 6, 3, 7);
          const t2 = i32x4.shuffle(x2, x3, 0, 4, 1, 5), t3 = i32x4.shuffle(x2, x3, 2, 6, 3, 7);
          const dh = d + <usize>(half * 16);
          v128.store(dh, i32x4.shuffle(t0, t2, 0, 1, 4, 5));
          v128.store(dh + NR * 4, i32x4.shuffle(t0, t2, 2, 3, 6, 7));
          v128.store(dh + 2 * NR * 4, i32x4.shuffle(t1, t3, 0, 1, 4, 5));
          v128.store(dh + 3 * NR * 4, i32x4.shuffle(t1, t3, 2, 3, 6, 7));
        }
      }
      for (; k < kc; k++)
        for (let jj = 0; jj < NR; jj++)
          store<f32>(panel + <usize>(k * NR + jj) * 4, load<f32>(r0 + <usize>jj * rstep + (<usize>k << 2)));
    } else {
      for (let k = 0; k < kc; k++) {
        const d = panel + <usize>(k * NR) * 4;
        for (let jj = 0; jj < NR; jj++) {
          store<f32>(d + <usize>jj * 4, jj < w ? load<f32>(b + <usize>(k * rs + (j0 + jj) * cs) * 4) : 0);
        }
      }
    }
  }
}

/** A block [mc × kc] → MR-row panels (element (i, k) of a panel at 4·(k·MR + i)), zero-padded. */
function packA(dst: usize, a: usize, rs: i32, cs: i32, mc: i32, kc: i32): void {
  for (let i0 = 0; i0 < mc; i0 += MR) {
    const h = min(MR, mc - i0);
    const panel = dst + <usize>(i0 * kc) * 4;
    if (cs == 1 && h == MR) {
      // four rows, 4×4 blocks transposed in registers
      const r0 = a + <usize>(i0 * rs) * 4;
      const rstep = <usize>rs * 4;
      let k = 0;
      for (; k + 4 <= kc; k += 4) {
        const o = <usize>k << 2;
        const x0 = v128.load(r0 + o), x1 = v128.load(r0 + rstep + o), x2 = v128.load(r0 + 2 * rstep + o), x3 = v128.load(r0 + 3 * rstep + o);
        const t0 = i32x4.shuffle(x0, x1, 0, 4, 1, 5), t1 = i32x4.shuffle(x0, x1, 2, 6, 3, 7);
        const t2 = i32x4.shuffle(x2, x3, 0, 4, 1, 5), t3 = i32x4.shuffle(x2, x3, 2, 6, 3, 7);
        const d = panel + <usize>(k * MR) * 4;
        v128.store(d, i32x4.shuffle(t0, t2, 0, 1, 4, 5));
        v128.store(d, i32x4.shuffle(t0, t2, 2, 3, 6, 7), 16);
        v128.store(d, i32x4.shuffle(t1, t3, 0, 1, 4, 5), 32);
        v128.store(d, i32x4.shuffle(t1, t3, 2, 3, 6, 7), 48);
      }
      for (; k < kc; k++)
        for (let ii = 0; ii < MR; ii++) store<f32>(panel + <usize>(k * MR + ii) * 4, load<f32>(r0 + <usize>ii * rstep + (<usize>k << 2)));
    } else if (rs == 1 && h == MR) {
      for (let k = 0; k < kc; k++) v128.store(panel + <usize>(k * MR) * 4, v128.load(a + <usize>(i0 + k * cs) * 4));
    } else {
      for (let k = 0; k < kc; k++) {
        const d = panel + <usize>(k * MR) * 4;
        for (let ii = 0; ii < MR; ii++) {
          store<f32>(d + <usize>ii * 4, ii < h ? load<f32>(a + <usize>((i0 + ii) * rs + k * cs) * 4) : 0);
        }
      }
    }
  }
}

/**
 * The 4×8 tile: acc = Ap·Bp over kc, then C (ldc floats per row) = alpha·acc + beta·C where `first`, else
 * C += alpha·acc. beta 0 never reads C (it may hold garbage: uninitialised outputs).
 */
// prettier-ignore
function micro(kc: i32, ap: usize, bp: usize, c: usize, ldc: i32, alpha: f32, beta: f32, first: bool): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0), c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  for (let k = 0; k < kc; k++) {
    const b0 = v128.load(bp);
    const b1 = v128.load(bp, 16);
    let a = v128.load32_splat(ap);
    c00 = madd(a, b0, c00); c01 = madd(a, b1, c01);
    a = v128.load32_splat(ap, 4);
    c10 = madd(a, b0, c10); c11 = madd(a, b1, c11);
    a = v128.load32_splat(ap, 8);
    c20 = madd(a, b0, c20); c21 = madd(a, b1, c21);
    a = v128.load32_splat(ap, 12);
    c30 = madd(a, b0, c30); c31 = madd(a, b1, c31);
    ap += MR * 4;
    bp += NR * 4;
  }
  const va = f32x4.splat(alpha);
  const stride = <usize>ldc * 4;
  store4(c, c00, c01, va, beta, first);
  store4(c + stride, c10, c11, va, beta, first);
  store4(c + 2 * stride, c20, c21, va, beta, first);
  store4(c + 3 * stride, c30, c31, va, beta, first);
}

@inline
function store4(c: usize, x0: v128, x1: v128, va: v128, beta: f32, first: bool): void {
  x0 = f32x4.mul(x0, va);
  x1 = f32x4.mul(x1, va);
  if (!first) {
    x0 = f32x4.add(x0, v128.load(c));
    x1 = f32x4.add(x1, v128.load(c, 16));
  } else if (beta != 0) {
    const vb = f32x4.splat(beta);
    x0 = madd(vb, v128.load(c), x0);
    x1 = madd(vb, v128.load(c, 16), x1);
  }
  v128.store(c, x0);
  v128.store(c, x1, 16);
}

/** Work items of a GEMM's parameter block: column tiles × row splits (× batch unless the batches sum into one C). */
function itemsOf(pb: usize): i32 {
  const batch = PARAM(pb, 0), N = PARAM(pb, 2), cBS = PARAM(pb, 13);
  const perBatch = ((N + NC - 1) / NC) * PARAM(pb, 19);
  return cBS == 0 && batch > 1 ? perBatch : batch * perBatch;
}

/** One work item of a GEMM: a C tile of NC columns and one row split, for its batch (or all, summed). */
function gemmItem(pb: usize, item: i32, scratch: usize): void {
  const batch = PARAM(pb, 0), M = PARAM(pb, 1), N = PARAM(pb, 2), K = PARAM(pb, 3);
  const aBS = PARAM(pb, 5), aRS = PARAM(pb, 6), aCS = PARAM(pb, 7);
  const bBS = PARAM(pb, 9), bRS = PARAM(pb, 10), bCS = PARAM(pb, 11);
  const cBS = PARAM(pb, 13);
  const a0 = <usize>PARAM(pb, 4), b0 = <usize>PARAM(pb, 8), c0 = <usize>PARAM(pb, 12);
  const alpha = load<f32>(pb + 14 * 4), beta = load<f32>(pb + 15 * 4);
  const splits = PARAM(pb, 19);
  const Ap = scratch;
  const Bp = Ap + <usize>(MC * KC) * 4;
  const tile = Bp + <usize>(KC * (NC + NR)) * 4;
  // a C batch stride of 0 sums over the batch into one C: one item then runs every batch in order
  const summed = cBS == 0 && batch > 1;
  const perBatch = ((N + NC - 1) / NC) * splits;
  const rowsPerSplit = (((M + splits - 1) / splits + MR - 1) / MR) * MR;
  const inBatch = item % perBatch;
  const n0 = (inBatch / splits) * NC;
  const m0 = (inBatch % splits) * rowsPerSplit;
  const m1 = min(M, m0 + rowsPerSplit);
  if (m0 >= m1) return;
  const nc = min(NC, N - n0);
  const p0 = summed ? 0 : item / perBatch;
  const p1 = summed ? batch : p0 + 1;
  for (let p = p0; p < p1; p++) {
    const a = a0 + <usize>(p * aBS) * 4;
    const b = b0 + <usize>(p * bBS) * 4;
    const c = c0 + <usize>(p * cBS) * 4;
    for (let pc = 0; pc < K; pc += KC) {
      const kc = min(KC, K - pc);
      packB(Bp, b + <usize>(pc * bRS + n0 * bCS) * 4, bRS, bCS, kc, nc);
      for (let ic = m0; ic < m1; ic += MC) {
        const mc = min(MC, m1 - ic);
        packA(Ap, a + <usize>(ic * aRS + pc * aCS) * 4, aRS, aCS, mc, kc);
        for (let jr = 0; jr < nc; jr += NR) {
          const w = min(NR, nc - jr);
          for (let ir = 0; ir < mc; ir += MR) {
            const h = min(MR, mc - ir);
            const ap = Ap + <usize>(ir * kc) * 4;
            const bp = Bp + <usize>(jr * kc) * 4;
            const cij = c + <usize>((ic + ir) * N + n0 + jr) * 4;
            if (w == NR && h == MR) {
              micro(kc, ap, bp, cij, N, alpha, beta, pc == 0);
            } else {
              // an edge tile: compute in a full scratch tile, then copy the part that exists
              for (let ii = 0; ii < h; ii++)
                for (let jj = 0; jj < w; jj++)
                  store<f32>(tile + <usize>(ii * NR + jj) * 4, load<f32>(cij + <usize>(ii * N + jj) * 4));
              micro(kc, ap, bp, tile, NR, alpha, beta, pc == 0);
              for (let ii = 0; ii < h; ii++)
                for (let jj = 0; jj < w; jj++)
                  store<f32>(cij + <usize>(ii * N + jj) * 4, load<f32>(tile + <usize>(ii * NR + jj) * 4));
            }
          }
        }
      }
    }
  }
}

/** One thread's share of a GEMM: tiles from the counter until none is left. */
export function gemm(pb: usize, tid: i32): void {
  const scratch = <usize>PARAM(pb, 17) + <usize>tid * <usize>PARAM(pb, 18);
  const items = itemsOf(pb);
  for (;;) {
    const item = atomic.add<i32>(pb + 16 * 4, 1);
    if (item >= items) break;
    gemmItem(pb, item, scratch);
  }
}

// Several GEMMs (an MoE layer's experts), one per work item: a list block of i32 slots
//  0 count  1 work counter  2 scratch base  3 scratch bytes per thread  4.. the products' parameter blocks (addresses)
// Each product runs whole on the thread that takes it (products are small; their outputs never overlap).
export function gemmMany(list: usize, tid: i32): void {
  const n = PARAM(list, 0);
  const scratch = <usize>PARAM(list, 2) + <usize>tid * <usize>PARAM(list, 3);
  for (;;) {
    const i = atomic.add<i32>(list + 4, 1);
    if (i >= n) break;
    const pb = <usize>PARAM(list, 4 + i);
    const items = itemsOf(pb);
    for (let item = 0; item < items; item++) gemmItem(pb, item, scratch);
  }
}

// GEMV-shaped products (M ≤ 4 rows, one batch, A rows contiguous): no packing, the weight is read once, in place.
// Work items are column ranges of GV_COLS from the block's counter (slot 16). Block: the GEMM block's slots.
const GV_COLS = 64;

/** C[m, n0..n1) for B = Wᵀ (bRS = 1, W rows contiguous): four dot products of A's row with four W rows at once. */
function gemvT(pb: usize, n0: i32, n1: i32): void {
  const M = PARAM(pb, 1), N = PARAM(pb, 2), K = PARAM(pb, 3);
  const aRS = PARAM(pb, 6), bCS = PARAM(pb, 11);
  const a0 = <usize>PARAM(pb, 4), b0 = <usize>PARAM(pb, 8), c0 = <usize>PARAM(pb, 12);
  const alpha = load<f32>(pb + 14 * 4), beta = load<f32>(pb + 15 * 4);
  const ws = <usize>bCS << 2;
  for (let m = 0; m < M; m++) {
    const a = a0 + (<usize>(m * aRS) << 2);
    const c = c0 + (<usize>(m * N) << 2);
    let n = n0;
    for (; n + 4 <= n1; n += 4) {
      const w = b0 + <usize>n * ws;
      let r = dot4(a, w, ws, K);
      r = f32x4.mul(r, f32x4.splat(alpha));
      const co = c + (<usize>n << 2);
      if (beta != 0) r = madd(f32x4.splat(beta), v128.load(co), r);
      v128.store(co, r);
    }
    for (; n < n1; n++) {
      const w = b0 + <usize>n * ws;
      let s: f32 = 0;
      for (let k = 0; k < K; k++) s += load<f32>(a + (<usize>k << 2)) * load<f32>(w + (<usize>k << 2));
      const co = c + (<usize>n << 2);
      store<f32>(co, alpha * s + (beta != 0 ? beta * load<f32>(co) : 0));
    }
  }
}

/** C[m, n0..n1) for a row-major B (bCS = 1): 16 columns at a time in registers over all of K. */
function gemvN(pb: usize, n0: i32, n1: i32): void {
  const M = PARAM(pb, 1), N = PARAM(pb, 2), K = PARAM(pb, 3);
  const aRS = PARAM(pb, 6), bRS = PARAM(pb, 10);
  const a0 = <usize>PARAM(pb, 4), b0 = <usize>PARAM(pb, 8), c0 = <usize>PARAM(pb, 12);
  const alpha = load<f32>(pb + 14 * 4), beta = load<f32>(pb + 15 * 4);
  const bs = <usize>bRS << 2;
  const va = f32x4.splat(alpha);
  const vb = f32x4.splat(beta);
  for (let m = 0; m < M; m++) {
    const a = a0 + (<usize>(m * aRS) << 2);
    const c = c0 + (<usize>(m * N) << 2);
    let n = n0;
    for (; n + 16 <= n1; n += 16) {
      let x0 = f32x4.splat(0), x1 = f32x4.splat(0), x2 = f32x4.splat(0), x3 = f32x4.splat(0);
      let p = b0 + (<usize>n << 2);
      for (let k = 0; k < K; k++) {
        const ak = v128.load32_splat(a + (<usize>k << 2));
        x0 = madd(ak, v128.load(p), x0);
        x1 = madd(ak, v128.load(p, 16), x1);
        x2 = madd(ak, v128.load(p, 32), x2);
        x3 = madd(ak, v128.load(p, 48), x3);
        p += bs;
      }
      const co = c + (<usize>n << 2);
      if (beta != 0) {
        x0 = madd(vb, v128.load(co), f32x4.mul(x0, va));
        x1 = madd(vb, v128.load(co, 16), f32x4.mul(x1, va));
        x2 = madd(vb, v128.load(co, 32), f32x4.mul(x2, va));
        x3 = madd(vb, v128.load(co, 48), f32x4.mul(x3, va));
      } else {
        x0 = f32x4.mul(x0, va);
        x1 = f32x4.mul(x1, va);
        x2 = f32x4.mul(x2, va);
        x3 = f32x4.mul(x3, va);
      }
      v128.store(co, x0);
      v128.store(co, x1, 16);
      v128.store(co, x2, 32);
      v128.store(co, x3, 48);
    }
    for (; n < n1; n++) {
      let s: f32 = 0;
      for (let k = 0; k < K; k++) s += load<f32>(a + (<usize>k << 2)) * load<f32>(b0 + <usize>k * bs + (<usize>n << 2));
      const co = c + (<usize>n << 2);
      store<f32>(co, alpha * s + (beta != 0 ? beta * load<f32>(co) : 0));
    }
  }
}

/** One thread's share of a GEMV-shaped product (see above); the caller checked the shape. */
export function gemv(pb: usize, tid: i32): void {
  const N = PARAM(pb, 2);
  const transposed = PARAM(pb, 10) == 1 && PARAM(pb, 11) != 1;
  const items = (N + GV_COLS - 1) / GV_COLS;
  for (;;) {
    const item = atomic.add<i32>(pb + 16 * 4, 1);
    if (item >= items) break;
    const n0 = item * GV_COLS;
    const n1 = min(N, n0 + GV_COLS);
    if (transposed) gemvT(pb, n0, n1);
    else gemvN(pb, n0, n1);
  }
}
