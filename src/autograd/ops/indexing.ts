// Index ops: embedding lookup, gather rows (index-select), scatter-add rows (index-add), take-along-last-axis
// gather, top-k and argsort. Indices are int32 tensors and never carry gradient.
import { storedEmbedding } from './stored.js';
import { empty, uninit, emptyInt, type Tensor } from '../../tensor/tensor.js';
import { fmtShape, sizeOf } from '../../tensor/shape.js';
import { freshGrad, gradTarget, record } from '../graph.js';
import { contiguous, reshape } from './views.js';

function needInt(t: Tensor, what: string): void {
  if (t.dtype !== 'i32') throw new Error(`${what}: indices must be an int32 tensor`);
}

/** Rows of x [N, ...] picked by idx [M] → [M, ...].  dx = index-add of gy at idx */
export function indexSelect(xIn: Tensor, idxIn: Tensor): Tensor {
  needInt(idxIn, 'index_select');
  if (idxIn.ndim !== 1) throw new Error(`index_select: indices must be 1-D, got ${fmtShape(idxIn.shape)}`);
  const x = contiguous(xIn);
  const idx = contiguous(idxIn);
  const N = x.shape[0]!;
  const D = x.size / Math.max(N, 1);
  const M = idx.size;
  const out = uninit(x.backend, [M, ...x.shape.slice(1)]);
  x.backend.gatherRows(x.f32(), idx.i32(), out.f32(), M, N, D);
  return record(out, 'index_select', [x], (gy) => {
    // an embedding table adds straight into its .grad (cleared first if it counts as zero); the MoE dispatch adds
    // into the gradient its input already has
    const target = gradTarget(x);
    const gx = target?.out ?? empty(x.backend, x.shape);
    if (target?.beta === 0) x.backend.fill(gx.f32(), gx.size, 0);
    x.backend.scatterAddRows(gy.f32(), idx.i32(), gx.f32(), M, N, D);
    return [target ? null : freshGrad(gx)];
  });
}

/**
 * target [N, ...] + scatter of src [M, ...] into rows idx [M], each source row times weights[m] when given (the MoE
 * combine, spec §5.1: Σ_k g_k · FFN_k(x) added into the shared experts' output in one pass).
 *   dtarget = gy,  dsrc[m] = w[m] · gy[idx[m]],  dw[m] = ⟨gy[idx[m]], src[m]⟩
 */
export function indexAdd(targetIn: Tensor, idxIn: Tensor, srcIn: Tensor, weightsIn?: Tensor): Tensor {
  needInt(idxIn, 'index_add');
  const target = contiguous(targetIn);
  const idx = contiguous(idxIn);
  const src = contiguous(srcIn);
  const N = target.shape[0]!;
  const D = target.size / Math.max(N, 1);
  const M = idx.size;
  if (idx.ndim !== 1 || src.shape[0] !== M || src.size !== M * D) {
    throw new Error(
      `index_add: target ${fmtShape(target.shape)}, indices ${fmtShape(idx.shape)} and source ${fmtShape(src.shape)} do not fit`,
    );
  }
  if (weightsIn && weightsIn.size !== M) {
    throw new Error(`index_add: ${weightsIn.size} row weights for ${M} source rows (shape ${fmtShape(weightsIn.shape)})`);
  }
  const weights = weightsIn ? contiguous(weightsIn) : null;
  const b = target.backend;
  const out = uninit(b, target.shape);
  out.f32().set(target.f32());
  b.scatterAddRows(src.f32(), idx.i32(), out.f32(), M, N, D, weights ? weights.f32() : null);
  const inputs = weights ? [target, src, weights] : [target, src];
  return record(out, 'index_add', inputs, (gy) => {
    const gs = src.requiresGrad ? uninit(b, src.shape) : null;
    if (!weights) {
      if (gs) b.gatherRows(gy.f32(), idx.i32(), gs.f32(), M, N, D);
      return [gy, gs];
    }
    const gw = weights.requiresGrad ? uninit(b, weights.shape) : null;
    if (gs || gw)
      b.scatterAddRowsBackward(gy.f32(), idx.i32(), src.f32(), weights.f32(), gs ? gs.f32() : null, gw ? gw.f32() : null, M, N, D);
    return [gy, gs, gw];
  });
}

/** Embedding lookup: weight [V, D], ids int [...] → [..., D].  dweight = scatter-add of gy rows at ids */
export function embedding(weight: Tensor, ids: Tensor): Tensor {
  needInt(ids, 'embedding');
  if (weight.ndim !== 2) throw new Error(`embedding: weight must be [vocab, dim], got ${fmtShape(weight.shape)}`);
  if (weight.isStored()) return storedEmbedding(weight, ids);
  const flat = reshape(ids, [ids.size]);
  const rows = indexSelect(weight, flat);
  return reshape(rows, [...ids.shape, weight.shape[1]!]);
}

/** Take along the last axis: x [..., N], idx [..., K] → [..., K].  dx = scatter-add of gy at idx */
export function gather(xIn: Tensor, idxIn: Tensor): Tensor {
  needInt(idxIn, 'gather');
  const x = contiguous(xIn);
  const idx = contiguous(idxIn);
  const N = x.shape[x.ndim - 1]!;
  const K = idx.shape[idx.ndim - 1]!;
  if (x.ndim !== idx.ndim || x.shape.slice(0, -1).join() !== idx.shape.slice(0, -1).join()) {
    throw new Error(`gather: input ${fmtShape(x.shape)} and indices ${fmtShape(idx.shape)} must agree on all but the last axis`);
  }
  const R = sizeOf(x.shape.slice(0, -1));
  const out = uninit(x.backend, idx.shape);
  x.backend.gatherLast(x.f32(), idx.i32(), out.f32(), R, N, K);
  return record(out, 'gather', [x], (gy) => {
    const gx = empty(x.backend, x.shape);
    x.backend.scatterAddLast(gy.f32(), idx.i32(), gx.f32(), R, N, K);
    return [gx];
  });
}

/** The k largest along the last axis, descending (ties → lower index). Values carry gradient; indices do not. */
export function topk(xIn: Tensor, k: number): { values: Tensor; indices: Tensor } {
  const x = contiguous(xIn);
  const N = x.shape[x.ndim - 1]!;
  if (!Number.isInteger(k) || k < 1 || k > N) throw new Error(`topk: k = ${k} must be in [1, ${N}]`);
  const R = x.size / N;
  const indices = emptyInt(x.backend, [...x.shape.slice(0, -1), k]);
  x.backend.topk(x.f32(), indices.i32(), R, N, k);
  return { values: gather(x, indices), indices };
}

/** A stable sorting permutation along the last axis (int32, no gradient). */
export function argsort(xIn: Tensor, descending = false): Tensor {
  const x = contiguous(xIn);
  const N = x.shape[x.ndim - 1]!;
  const out = emptyInt(x.backend, x.shape);
  x.backend.argsort(x.f32(), out.i32(), x.size / Math.max(N, 1), N, descending);
  return out;
}

/** A float mask [..., n] with 1 at idx [..., k] and 0 elsewhere (no gradient). */
export function maskFromIndices(idxIn: Tensor, n: number): Tensor {
  needInt(idxIn, 'mask_from_indices');
  const idx = contiguous(idxIn);
  const K = idx.shape[idx.ndim - 1]!;
  const R = idx.size / Math.max(K, 1);
  const out = empty(idx.backend, [...idx.shape.slice(0, -1), n]);
  const ones = empty(idx.backend, idx.shape);
  idx.backend.fill(ones.f32(), ones.size, 1);
  idx.backend.scatterAddLast(ones.f32(), idx.i32(), out.f32(), R, n, K);
  return out;
}
