// concat and split along an axis. split returns narrow views (no copy); concat copies each input into place.
import type { F32 } from '../../backend/backend.js';
import { uninit, type Tensor } from '../../tensor/tensor.js';
import { contiguousStrides, fmtShape, normAxis } from '../../tensor/shape.js';
import { record } from '../graph.js';
import { strided } from './kernels.js';
import { narrow } from './views.js';

/** Join along `axis`; all other dims must agree.  dx_i = the matching slice of gy */
export function concat(xs: readonly Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new Error('concat: no tensors given');
  const first = xs[0]!;
  const a = normAxis(axis, first.ndim);
  let total = 0;
  for (const x of xs) {
    if (x.ndim !== first.ndim || x.shape.some((d, i) => i !== a && d !== first.shape[i])) {
      throw new Error(`concat: shapes ${xs.map((t) => fmtShape(t.shape)).join(', ')} differ outside axis ${axis}`);
    }
    if (x.backend !== first.backend || x.dtype !== 'f32') throw new Error('concat: tensors must be float32 on one backend');
    total += x.shape[a]!;
  }
  const shape = [...first.shape];
  shape[a] = total;
  const out = uninit(first.backend, shape); // the inputs cover it
  const st = contiguousStrides(shape);
  let at = 0;
  const starts: number[] = [];
  for (const x of xs) {
    starts.push(at);
    first.backend.copy(strided(x), { buf: out.data as F32, offset: at * st[a]!, strides: st }, x.shape);
    at += x.shape[a]!;
  }
  return record(out, 'concat', xs, (gy) => xs.map((x, i) => (x.requiresGrad ? narrow(gy, a, starts[i]!, x.shape[a]!) : null)));
}

/** Split along `axis` into pieces of the given sizes (views). */
export function split(x: Tensor, sizes: readonly number[], axis: number): Tensor[] {
  const a = normAxis(axis, x.ndim);
  const sum = sizes.reduce((p, s) => p + s, 0);
  if (sum !== x.shape[a]) throw new Error(`split: sizes [${sizes.join(', ')}] do not add up to axis ${axis} of size ${x.shape[a]}`);
  let at = 0;
  return sizes.map((s) => {
    const piece = narrow(x, a, at, s);
    at += s;
    return piece;
  });
}
