// matmul with batch broadcasting and transposed operands read in place (no copy for a transposed view, which
// is how linear layers hit the kernel: y = x·Wᵀ with W [out, in]).
//   C [..., M, N] = A [..., M, K] · B [..., K, N]
//   dA = dC · Bᵀ   (summed over the batch dims A was broadcast along)
//   dB = Aᵀ · dC   (likewise)
import type { F32, GemmParams } from '../../backend/backend.js';
import { empty, uninit, type Tensor } from '../../tensor/tensor.js';
import { broadcastShapes, fmtShape, sizeOf } from '../../tensor/shape.js';
import { freshGrad, gradTarget, record } from '../graph.js';
import { sumTo } from './kernels.js';
import { contiguous, expand, reshape } from './views.js';
import { storedGroupedLinear, storedLinears } from './stored.js';

/** How the gemm reads one operand. */
interface Operand {
  t: Tensor;
  batchStride: number;
  rowStride: number;
  colStride: number;
}

/** Batch dims collapse to one stride when, ignoring size-1 dims, each stride is the next one times its size. */
function collapsedBatchStride(t: Tensor, nb: number): number | null {
  let stride: number | null = null;
  let expected: number | null = null;
  for (let i = nb - 1; i >= 0; i--) {
    const d = t.shape[i]!;
    if (d === 1) continue;
    const s = t.strides[i]!;
    if (expected !== null && s !== expected) return null;
    if (stride === null) stride = s;
    expected = s * d;
  }
  return stride ?? 0;
}

function operand(tIn: Tensor, batchShape: readonly number[]): Operand {
  let t = tIn;
  const nb = t.ndim - 2;
  const rs = t.strides[nb]!;
  const cs = t.strides[nb + 1]!;
  // the fast kernels want one of the two matrix strides to be 1
  if (rs !== 1 && cs !== 1 && t.shape[nb]! > 1 && t.shape[nb + 1]! > 1) t = contiguous(t);
  const batchSize = sizeOf(t.shape.slice(0, nb));
  const fullBatch = sizeOf(batchShape);
  if (batchSize === 1 || fullBatch === 1) {
    return { t, batchStride: 0, rowStride: t.strides[nb]!, colStride: t.strides[nb + 1]! };
  }
  const sameBatch = nb === batchShape.length && t.shape.slice(0, nb).every((d, i) => d === batchShape[i]);
  const bs = sameBatch ? collapsedBatchStride(t, nb) : null;
  if (bs !== null) return { t, batchStride: bs, rowStride: t.strides[nb]!, colStride: t.strides[nb + 1]! };
  // partial broadcast or an awkward layout: materialise the full batch
  const m = contiguous(expand(t, [...batchShape, t.shape[nb]!, t.shape[nb + 1]!]));
  return { t: m, batchStride: m.shape[nb]! * m.shape[nb + 1]!, rowStride: m.shape[nb + 1]!, colStride: 1 };
}

/** Run the product gemmParams describes. */
function gemmInto(...args: Parameters<typeof gemmParams>): void {
  args[5].t.backend.gemm(gemmParams(...args));
}

function gemmParams(
  out: F32,
  batch: number,
  M: number,
  N: number,
  K: number,
  A: Operand,
  B: Operand,
  cBatchStride: number,
  beta: number,
): GemmParams {
  return {
    batch,
    M,
    N,
    K,
    a: A.t.data as F32,
    aOffset: A.t.offset,
    aBatchStride: A.batchStride,
    aRowStride: A.rowStride,
    aColStride: A.colStride,
    b: B.t.data as F32,
    bOffset: B.t.offset,
    bBatchStride: B.batchStride,
    bRowStride: B.rowStride,
    bColStride: B.colStride,
    c: out,
    cOffset: 0,
    cBatchStride,
    alpha: 1,
    beta,
  };
}

const swap = (o: Operand): Operand => ({ t: o.t, batchStride: o.batchStride, rowStride: o.colStride, colStride: o.rowStride });

/** Gradient for one operand: either summed over a broadcast batch in the kernel, or computed per batch and reduced. */
function operandGrad(x: Tensor, xo: Operand, batchShape: number[], rows: number, cols: number, K: number, L: Operand, R: Operand): Tensor {
  const batch = sizeOf(batchShape);
  if (xo.batchStride === 0 && batch > 1) {
    const g = empty(x.backend, [rows, cols]);
    gemmInto(g.f32(), batch, rows, cols, K, L, R, 0, 1); // cBatchStride 0, beta 1: Σ over the batch
    return reshape(g, x.shape);
  }
  const g = uninit(x.backend, [...batchShape, rows, cols]);
  gemmInto(g.f32(), batch, rows, cols, K, L, R, rows * cols, 0);
  return sumTo(g, x.shape);
}

export function matmul(a: Tensor, b: Tensor): Tensor {
  if (a.ndim < 2 || b.ndim < 2) throw new Error(`matmul needs operands with ≥ 2 dims, got ${fmtShape(a.shape)} and ${fmtShape(b.shape)}`);
  if (a.dtype !== 'f32' || b.dtype !== 'f32') throw new Error('matmul needs float32 operands');
  if (a.backend !== b.backend) throw new Error(`matmul operands live on different backends (${a.backend.name} vs ${b.backend.name})`);
  const M = a.shape[a.ndim - 2]!;
  const K = a.shape[a.ndim - 1]!;
  const N = b.shape[b.ndim - 1]!;
  if (b.shape[b.ndim - 2] !== K) {
    throw new Error(`matmul: inner dims differ: ${fmtShape(a.shape)} · ${fmtShape(b.shape)}`);
  }
  const batchShape = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const batch = sizeOf(batchShape);
  const A = operand(a, batchShape);
  const B = operand(b, batchShape);
  const out = uninit(a.backend, [...batchShape, M, N]);
  gemmInto(out.f32(), batch, M, N, K, A, B, M * N, 0);
  return record(out, 'matmul', [a, b], (gy) => {
    const G: Operand = { t: gy, batchStride: batch > 1 ? M * N : 0, rowStride: N, colStride: 1 };
    return [
      a.requiresGrad ? operandGrad(a, A, batchShape, M, K, N, G, swap(B)) : null, // dA = dC·Bᵀ
      b.requiresGrad ? operandGrad(b, B, batchShape, K, N, M, swap(A), G) : null, // dB = Aᵀ·dC
    ];
  });
}

/**
 * Linear layer without bias: y [..., out] = x [..., in] · Wᵀ, W [out, in] (PyTorch nn.Linear layout).
 *   dX = dY · W,   dW = dYᵀ · X   (over all leading positions; written straight into W's .grad when it has one)
 */
export function linear(x: Tensor, w: Tensor): Tensor {
  return linears(x, [w])[0]!;
}

/**
 * Several linear layers on the same input (an MLP's gate and up projections), y_i = x · W_iᵀ: one `gemmMany`
 * call, so products of equal size run side by side, one per thread, with no barrier between them. Each output is
 * its own autograd node, exactly as `linear`.
 */
export function linears(x: Tensor, ws: readonly Tensor[]): Tensor[] {
  const In = x.shape[x.ndim - 1]!;
  for (const w of ws) {
    if (w.ndim !== 2) throw new Error(`linear: weight must be [out, in], got ${fmtShape(w.shape)}`);
    if (In !== w.shape[1]) throw new Error(`linear: input width ${In} does not match weight ${fmtShape(w.shape)} ([out, in])`);
    if (x.dtype !== 'f32' || (w.dtype !== 'f32' && !w.isStored())) throw new Error('linear needs float32 operands');
    if (x.backend !== w.backend) throw new Error(`linear operands live on different backends (${x.backend.name} vs ${w.backend.name})`);
  }
  if (ws.some((w) => w.isStored())) {
    // stored weights (bf16, f16, quantized) go through their own kernels; float32 ones in the same call as usual
    const stored = storedLinears(
      x,
      ws.filter((w) => w.isStored()),
    );
    let s = 0;
    return ws.map((w) => (w.isStored() ? stored[s++]! : linears(x, [w])[0]!));
  }
  const lead = x.shape.slice(0, -1);
  const rows = sizeOf(lead);
  const xc = contiguous(x); // rows of In values, read as one [rows, In] matrix
  const X: Operand = { t: xc, batchStride: 0, rowStride: In, colStride: 1 };
  const ys = ws.map((w) => uninit(x.backend, [rows, w.shape[0]!]));
  const products = ws.map((w, i) => gemmParams(ys[i]!.f32(), 1, rows, w.shape[0]!, In, X, swap(operand(w, [])), 0, 0));
  if (products.length === 1) x.backend.gemm(products[0]!);
  else x.backend.gemmMany(products);
  return ws.map((w, i) => reshape(recordLinear(ys[i]!, xc, X, w, rows), [...lead, w.shape[0]!]));
}

/** The autograd node of y = x · Wᵀ (x as the [rows, in] matrix X). */
function recordLinear(y: Tensor, xc: Tensor, X: Operand, w: Tensor, rows: number): Tensor {
  const [Out, In] = w.shape as [number, number];
  const W = operand(w, []);
  return record(y, 'linear', [xc, w], (gy) => {
    const G: Operand = { t: gy, batchStride: 0, rowStride: Out, colStride: 1 };
    // each gradient goes where gradTarget says (W's .grad; the sum x's gradient already has), else a fresh buffer
    const products: GemmParams[] = [];
    let dx: Tensor | null = null;
    if (xc.requiresGrad) {
      const target = gradTarget(xc);
      const out = target?.out ?? uninit(xc.backend, xc.shape);
      products.push(gemmParams(out.f32(), 1, rows, In, Out, G, W, 0, target?.beta ?? 0)); // dX = dY·W
      if (!target) dx = freshGrad(out);
    }
    let dw: Tensor | null = null;
    if (w.requiresGrad) {
      const target = gradTarget(w);
      const out = target?.out ?? uninit(w.backend, [Out, In]);
      products.push(gemmParams(out.f32(), 1, Out, In, rows, swap(G), X, 0, target?.beta ?? 0)); // dW = dYᵀ·X
      if (!target) dw = freshGrad(out);
    }
    // dX and dW have the same flop count: as one gemmMany the backend may run them side by side, one per thread,
    // with no barrier between the threads (they write different outputs)
    if (products.length === 2) xc.backend.gemmMany(products);
    else if (products.length === 1) xc.backend.gemm(products[0]!);
    return [dx, dw];
  });
}

/**
 * Row groups through their own weights, as the routed experts of an MoE layer (spec §5.1): rows
 * [start_g, start_g + counts[g]) of x [R, in] go through weights[g] [out, in] → y [R, out]. Forward and backward
 * are one `gemmMany` call each, so dozens of small per-expert products share the threads (one product per
 * thread) instead of each paying to split across them.
 */
export function groupedLinear(xIn: Tensor, counts: readonly number[], weights: readonly Tensor[]): Tensor {
  if (xIn.ndim !== 2) throw new Error(`groupedLinear: input must be [rows, in], got ${fmtShape(xIn.shape)}`);
  if (counts.length !== weights.length) throw new Error(`groupedLinear: ${counts.length} row counts for ${weights.length} weights`);
  const [R, In] = xIn.shape as [number, number];
  const Out = weights[0]?.shape[0] ?? 0;
  for (const w of weights) {
    if (w.ndim !== 2 || w.shape[0] !== Out || w.shape[1] !== In) {
      throw new Error(
        `groupedLinear: weight ${fmtShape(w.shape)} does not fit input ${fmtShape(xIn.shape)} (every weight [${Out}, ${In}])`,
      );
    }
  }
  const total = counts.reduce((s, n) => s + n, 0);
  if (total !== R || counts.some((n) => n < 0 || !Number.isInteger(n))) {
    throw new Error(`groupedLinear: row counts sum to ${total}, input has ${R} rows`);
  }
  if (weights[0]?.isStored()) return storedGroupedLinear(xIn, counts, weights);
  const x = contiguous(xIn);
  const ws = weights.map((w) => contiguous(w));
  const starts: number[] = [];
  counts.reduce((s, n) => (starts.push(s), s + n), 0);
  const b = x.backend;
  const y = uninit(b, [R, Out]);
  const yd = y.f32();
  const product = (
    M: number,
    N: number,
    K: number,
    a: [F32, number, number, number],
    bm: [F32, number, number, number],
    c: [F32, number],
    beta = 0,
  ) => ({
    batch: 1,
    M,
    N,
    K,
    a: a[0],
    aOffset: a[1],
    aBatchStride: 0,
    aRowStride: a[2],
    aColStride: a[3],
    b: bm[0],
    bOffset: bm[1],
    bBatchStride: 0,
    bRowStride: bm[2],
    bColStride: bm[3],
    c: c[0],
    cOffset: c[1],
    cBatchStride: 0,
    alpha: 1,
    beta,
  });
  const xd = x.data as F32;
  const groups = counts.flatMap((n, g) => (n > 0 ? [g] : []));
  // y_g = x_g · W_gᵀ
  b.gemmMany(
    groups.map((g) =>
      product(
        counts[g]!,
        Out,
        In,
        [xd, x.offset + starts[g]! * In, In, 1],
        [ws[g]!.data as F32, ws[g]!.offset, 1, In],
        [yd, starts[g]! * Out],
      ),
    ),
  );
  return record(y, 'groupedLinear', [xIn, ...weights], (gy) => {
    const gd = gy.data as F32;
    const list = [];
    let dx: Tensor | null = null;
    const xTarget = xIn.requiresGrad ? gradTarget(xIn) : null; // the second of gate/up adds into the first's dX
    if (xIn.requiresGrad) {
      const out = xTarget?.out ?? uninit(b, [R, In]);
      if (!xTarget) dx = freshGrad(out);
      const dxd = out.f32();
      for (const g of groups) {
        // dx_g = dy_g · W_g
        list.push(
          product(
            counts[g]!,
            In,
            Out,
            [gd, gy.offset + starts[g]! * Out, Out, 1],
            [ws[g]!.data as F32, ws[g]!.offset, In, 1],
            [dxd, starts[g]! * In],
            xTarget?.beta ?? 0,
          ),
        );
      }
    }
    const claimed = new Set<Tensor>(); // a weight given for two groups: one product writes its .grad, the other a fresh buffer (one list item per output)
    const dws = weights.map((w, g) => {
      if (!w.requiresGrad || counts[g] === 0) return null;
      const target = claimed.has(w) ? null : gradTarget(w);
      if (target) claimed.add(w);
      const dw = target?.out ?? uninit(b, [Out, In]);
      // dW_g = dy_gᵀ · x_g
      const p = product(
        Out,
        In,
        counts[g]!,
        [gd, gy.offset + starts[g]! * Out, 1, Out],
        [xd, x.offset + starts[g]! * In, In, 1],
        [dw.f32(), 0],
      );
      list.push(target ? { ...p, beta: target.beta } : p);
      return target ? null : freshGrad(dw);
    });
    b.gemmMany(list);
    return [dx, ...dws];
  });
}
