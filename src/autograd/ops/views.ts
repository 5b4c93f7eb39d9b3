// Views share storage with their input: reshape, permute/transpose, narrow (slice), expand (broadcast),
// squeeze/unsqueeze. contiguous() copies only when the layout is not already row-major.
import { emptyInt, uninit, Tensor } from '../../tensor/tensor.js';
import { broadcastStrides, contiguousStrides, fmtShape, normAxis, sizeOf } from '../../tensor/shape.js';
import { record } from '../graph.js';
import { strided, sumTo } from './kernels.js';

function view(x: Tensor, shape: readonly number[], strides: readonly number[], offset: number): Tensor {
  return new Tensor(x.backend, x.data, shape, strides, offset, x.dtype, x.base ?? x);
}

/** Row-major copy when needed. backward: identity. */
export function contiguous(x: Tensor): Tensor {
  if (x.isContiguous()) return x;
  const out = x.dtype === 'f32' ? uninit(x.backend, x.shape) : emptyInt(x.backend, x.shape);
  x.backend.copy(strided(x), { buf: out.data as Float32Array, offset: 0, strides: out.strides }, x.shape);
  return record(out, 'contiguous', [x], (gy) => [gy], { stridedGrad: true });
}

/** One dim may be -1 (inferred). */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const known = shape.reduce((p, d) => (d === -1 ? p : p * d), 1);
  const infer = shape.filter((d) => d === -1).length;
  if (infer > 1) throw new Error(`reshape: at most one dim may be -1, got ${fmtShape(shape)}`);
  const target = shape.map((d) => (d === -1 ? (known === 0 ? 0 : x.size / known) : d));
  if (sizeOf(target) !== x.size || target.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`reshape: cannot view ${fmtShape(x.shape)} (${x.size} elements) as ${fmtShape(shape)}`);
  }
  const src = contiguous(x);
  const out = view(src, target, contiguousStrides(target), src.offset);
  return record(out, 'reshape', [src], (gy) => [reshape(gy, src.shape)]);
}

export function permute(x: Tensor, dims: readonly number[]): Tensor {
  if (dims.length !== x.ndim) throw new Error(`permute: ${dims.length} dims given for a ${x.ndim}-dim tensor`);
  const axes = dims.map((d) => normAxis(d, x.ndim));
  if (new Set(axes).size !== axes.length) throw new Error(`permute: dims ${fmtShape(dims)} repeat an axis`);
  const out = view(
    x,
    axes.map((a) => x.shape[a]!),
    axes.map((a) => x.strides[a]!),
    x.offset,
  );
  const inverse = new Array<number>(axes.length);
  axes.forEach((a, i) => (inverse[a] = i));
  return record(out, 'permute', [x], (gy) => [permute(gy, inverse)], { stridedGrad: true });
}

export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  const dims = Array.from({ length: x.ndim }, (_, i) => i);
  const i = normAxis(a, x.ndim);
  const j = normAxis(b, x.ndim);
  dims[i] = j;
  dims[j] = i;
  return permute(x, dims);
}

/** x[..., start:start+length, ...] along `axis`. backward: the gradient placed into its slice (a SliceGrad). */
export function narrow(x: Tensor, axis: number, start: number, length: number): Tensor {
  const a = normAxis(axis, x.ndim);
  if (!Number.isInteger(start) || !Number.isInteger(length) || start < 0 || length < 0 || start + length > x.shape[a]!) {
    throw new Error(`narrow: [${start}, ${start + length}) is outside axis ${axis} of size ${x.shape[a]}`);
  }
  const shape = [...x.shape];
  shape[a] = length;
  const out = view(x, shape, x.strides, x.offset + start * x.strides[a]!);
  return record(out, 'narrow', [x], (gy) => [{ slice: gy, axis: a, start }], { stridedGrad: true });
}

/** Broadcast to `shape` without copying (stride 0). backward: sum back to the input shape. */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  const target = shape.map((d, i) => (d === -1 ? x.shape[x.ndim - shape.length + i]! : d));
  const out = view(x, target, broadcastStrides(x.shape, x.strides, target), x.offset);
  return record(out, 'expand', [x], (gy) => [sumTo(gy, x.shape)], { stridedGrad: true });
}

export function unsqueeze(x: Tensor, axis: number): Tensor {
  const a = normAxis(axis, x.ndim + 1);
  const shape = [...x.shape];
  shape.splice(a, 0, 1);
  return reshape(x, shape);
}

export function squeeze(x: Tensor, axis: number): Tensor {
  const a = normAxis(axis, x.ndim);
  if (x.shape[a] !== 1) throw new Error(`squeeze: axis ${axis} has size ${x.shape[a]}, not 1`);
  const shape = [...x.shape];
  shape.splice(a, 1);
  return reshape(x, shape);
}

/** Copy src into dst[..., start:start+len, ...] along `axis`, in place. Not differentiable (caches, buffers). */
export function writeSlice(dst: Tensor, src: Tensor, axis: number, start: number): void {
  const a = normAxis(axis, dst.ndim);
  if (src.ndim !== dst.ndim || src.shape.some((d, i) => i !== a && d !== dst.shape[i]) || start + src.shape[a]! > dst.shape[a]!) {
    throw new Error(`writeSlice: ${fmtShape(src.shape)} does not fit into ${fmtShape(dst.shape)} at ${start} along axis ${axis}`);
  }
  dst.backend.copy(
    strided(src),
    { buf: dst.data as Float32Array, offset: dst.offset + start * dst.strides[a]!, strides: dst.strides },
    src.shape,
  );
}
