// Small non-differentiable helpers over backend kernels, used by the ops' backward functions and the graph.
import type { Strided } from '../../backend/backend.js';
import { empty, uninit, type Tensor } from '../../tensor/tensor.js';
import { broadcastStrides, contiguousStrides, type Shape } from '../../tensor/shape.js';

export function strided(t: Tensor): Strided {
  t.check('strided read');
  return { buf: t.data as Float32Array, offset: t.offset, strides: t.strides };
}

/** A fresh contiguous copy (no graph). */
export function cloneTensor(t: Tensor): Tensor {
  const out = uninit(t.backend, t.shape);
  t.backend.copy(strided(t), { buf: out.data as Float32Array, offset: 0, strides: out.strides }, t.shape);
  return out;
}

/** dst ← src in place, same shape (no graph). */
export function copyInto(dst: Tensor, src: Tensor): void {
  dst.backend.copy(strided(src), strided(dst), src.shape);
}

/** dst += src in place, same shape (no graph). */
export function addInto(dst: Tensor, src: Tensor): void {
  dst.backend.accumulate(strided(src), strided(dst), src.shape);
}

export function onesLike(t: Tensor): Tensor {
  const out = empty(t.backend, t.shape);
  out.backend.fill(out.data as Float32Array, out.size, 1);
  return out;
}

/** Sum a gradient of a broadcast result back to the input's shape (no graph). */
export function sumTo(g: Tensor, shape: Shape): Tensor {
  if (g.shape.length === shape.length && g.shape.every((d, i) => d === shape[i])) return g;
  const out = empty(g.backend, shape);
  const dstStrides = broadcastStrides(shape, contiguousStrides(shape), g.shape);
  g.backend.accumulate(strided(g), { buf: out.data as Float32Array, offset: 0, strides: dstStrides }, g.shape);
  return out;
}
