// Products with weights kept in a stored type (bf16, f16, quantized; src/quant/formats.ts): y = x · Wᵀ straight from
// the stored bytes, the grouped expert products, and the embedding lookup. Inference only: nothing differentiates
// through a stored weight (train from float32 weights and quantize the result).
import type { QGemmParams } from '../../backend/backend.js';
import { uninit, type Tensor } from '../../tensor/tensor.js';
import { fmtShape, sizeOf } from '../../tensor/shape.js';
import { isGradEnabled } from '../graph.js';
import { contiguous, reshape } from './views.js';

function inferenceOnly(x: Tensor, w: Tensor, op: string): void {
  if (isGradEnabled() && x.requiresGrad) {
    throw new Error(`${op}: '${w.name ?? 'weight'}' is stored as ${w.dtype}, which is for inference only; train from float32 weights`);
  }
}

/** y_i = x · W_iᵀ for stored weights, side by side in one qgemmMany call (no graph is recorded). */
export function storedLinears(x: Tensor, ws: readonly Tensor[]): Tensor[] {
  const In = x.shape[x.ndim - 1]!;
  for (const w of ws) inferenceOnly(x, w, 'linear');
  const lead = x.shape.slice(0, -1);
  const rows = sizeOf(lead);
  const xc = contiguous(x);
  const ys = ws.map((w) => uninit(x.backend, [rows, w.shape[0]!]));
  const ps: QGemmParams[] = ws.map((w, i) => ({
    type: w.dtype as QGemmParams['type'],
    M: rows,
    N: w.shape[0]!,
    K: In,
    x: xc.f32(),
    xOffset: 0,
    w: w.bytes(),
    y: ys[i]!.f32(),
    yOffset: 0,
    beta: 0,
  }));
  if (rows > 0) x.backend.qgemmMany(ps);
  return ys.map((y, i) => reshape(y, [...lead, ws[i]!.shape[0]!]));
}

/** groupedLinear (matmul.ts) with stored weights: rows of group g times W_gᵀ, every group in one qgemmMany call. */
export function storedGroupedLinear(xIn: Tensor, counts: readonly number[], weights: readonly Tensor[]): Tensor {
  const [R, In] = xIn.shape as [number, number];
  const Out = weights[0]!.shape[0]!;
  weights.forEach((w) => inferenceOnly(xIn, w, 'groupedLinear'));
  const x = contiguous(xIn);
  const y = uninit(x.backend, [R, Out]);
  const ps: QGemmParams[] = [];
  let start = 0;
  counts.forEach((n, g) => {
    const w = weights[g]!;
    if (!w.isStored()) throw new Error(`groupedLinear: experts mix stored (${weights[0]!.dtype}) and ${w.dtype} weights`);
    if (n > 0) {
      ps.push({
        type: w.dtype as QGemmParams['type'],
        M: n,
        N: Out,
        K: In,
        x: x.f32(),
        xOffset: start * In,
        w: w.bytes(),
        y: y.f32(),
        yOffset: start * Out,
        beta: 0,
      });
    }
    start += n;
  });
  if (ps.length) x.backend.qgemmMany(ps);
  return y;
}

/** Rows idx of a stored [N, D] table, decoded to float32: [..., D] (an embedding lookup). */
export function storedEmbedding(weight: Tensor, ids: Tensor): Tensor {
  if (weight.ndim !== 2) throw new Error(`embedding: weight must be [vocab, dim], got ${fmtShape(weight.shape)}`);
  const [N, D] = weight.shape as [number, number];
  const flat = contiguous(reshape(ids, [ids.size]));
  const out = uninit(weight.backend, [flat.size, D]);
  weight.backend.dequantRows(weight.dtype as QGemmParams['type'], weight.bytes(), flat.i32(), out.f32(), flat.size, N, D);
  return reshape(out, [...ids.shape, D]);
}
