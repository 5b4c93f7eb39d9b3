// Reductions over axes: sum, mean, max (keepdim optional). A multi-axis reduction is a chain of single-axis
// ones, so its backward composes automatically.
import { empty, emptyInt, Tensor } from '../../tensor/tensor.js';
import { normAxis, sizeOf } from '../../tensor/shape.js';
import { record } from '../graph.js';
import { scale } from './elementwise.js';
import { contiguous, expand, reshape } from './views.js';

type Axes = number | readonly number[] | undefined;

function axesOf(x: Tensor, axes: Axes): number[] {
  const list = axes === undefined ? x.shape.map((_, i) => i) : typeof axes === 'number' ? [axes] : [...axes];
  const norm = list.map((a) => normAxis(a, x.ndim));
  return [...new Set(norm)].sort((p, q) => q - p); // highest first keeps the lower axis numbers valid
}

function dimsOf(x: Tensor, a: number): [number, number, number] {
  return [sizeOf(x.shape.slice(0, a)), x.shape[a]!, sizeOf(x.shape.slice(a + 1))];
}

function keptShape(x: Tensor, a: number): number[] {
  const s = [...x.shape];
  s[a] = 1;
  return s;
}

/** x [O,N,I] → [O,1,I].  backward: gy broadcast back over N */
function sumAxis(xIn: Tensor, a: number): Tensor {
  const x = contiguous(xIn);
  const [O, N, I] = dimsOf(x, a);
  const out = empty(x.backend, keptShape(x, a));
  x.backend.reduce('sum', x.f32(), out.f32(), null, O, N, I);
  return record(out, 'sum', [x], (gy) => [expand(gy, x.shape)]);
}

/** x [O,N,I] → [O,1,I].  backward: gy routed to the (first) arg-max */
function maxAxis(xIn: Tensor, a: number): { values: Tensor; indices: Tensor } {
  const x = contiguous(xIn);
  const [O, N, I] = dimsOf(x, a);
  const out = empty(x.backend, keptShape(x, a));
  const arg = emptyInt(x.backend, keptShape(x, a));
  x.backend.reduce('max', x.f32(), out.f32(), arg.i32(), O, N, I);
  record(out, 'max', [x], (gy) => {
    const gx = empty(x.backend, x.shape);
    x.backend.reduceMaxBackward(gy.f32(), arg.i32(), gx.f32(), O, N, I);
    return [gx];
  });
  return { values: out, indices: arg };
}

function finish(x: Tensor, out: Tensor, axes: number[], keepdim: boolean): Tensor {
  if (keepdim) return out;
  return reshape(
    out,
    x.shape.filter((_, i) => !axes.includes(i)),
  );
}

/** Σ over `axes` (all when omitted). */
export function sum(x: Tensor, axes?: Axes, keepdim = false): Tensor {
  const list = axesOf(x, axes);
  let out = x;
  for (const a of list) out = sumAxis(out, a);
  return finish(x, out, list, keepdim);
}

/** Mean over `axes` (all when omitted). */
export function mean(x: Tensor, axes?: Axes, keepdim = false): Tensor {
  const list = axesOf(x, axes);
  const n = list.reduce((p, a) => p * x.shape[a]!, 1);
  return scale(sum(x, list, keepdim), 1 / n);
}

/** Max over `axes` (all when omitted); the gradient goes to the first maximal element. */
export function max(x: Tensor, axes?: Axes, keepdim = false): Tensor {
  const list = axesOf(x, axes);
  let out = x;
  for (const a of list) out = maxAxis(out, a).values;
  return finish(x, out, list, keepdim);
}

/** Max and arg-max along one axis. */
export function maxWithIndices(x: Tensor, axis: number, keepdim = false): { values: Tensor; indices: Tensor } {
  const a = normAxis(axis, x.ndim);
  const r = maxAxis(x, a);
  if (keepdim) return r;
  return { values: finish(x, r.values, [a], false), indices: finish(x, r.indices, [a], false) };
}
