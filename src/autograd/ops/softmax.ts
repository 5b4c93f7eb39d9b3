// Softmax and log-softmax in fp32, max-subtracted, along one axis (the last by default).
import { uninit, type Tensor } from '../../tensor/tensor.js';
import { normAxis } from '../../tensor/shape.js';
import { record } from '../graph.js';
import { contiguous, transpose } from './views.js';

function lastAxis(xIn: Tensor, log: boolean): Tensor {
  const x = contiguous(xIn);
  const N = x.shape[x.ndim - 1]!;
  const R = x.size / N;
  const y = uninit(x.backend, x.shape);
  x.backend.softmax(x.f32(), y.f32(), R, N, log);
  return record(y, log ? 'log_softmax' : 'softmax', [x], (gy) => {
    const dx = uninit(x.backend, x.shape);
    x.backend.softmaxBackward(y.f32(), gy.f32(), dx.f32(), R, N, log);
    return [dx];
  });
}

function alongAxis(x: Tensor, axis: number, log: boolean): Tensor {
  const a = normAxis(axis, x.ndim);
  if (a === x.ndim - 1) return lastAxis(x, log);
  return transpose(lastAxis(transpose(x, a, -1), log), a, -1);
}

/** softmax over `axis`: y_i = e^{x_i − max} / Σ_j e^{x_j − max}.  dx = y ⊙ (dy − Σ dy⊙y) */
export function softmax(x: Tensor, axis = -1): Tensor {
  return alongAxis(x, axis, false);
}

/** log-softmax over `axis`: y_i = x_i − logsumexp(x).  dx = dy − softmax(x)·Σ dy */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return alongAxis(x, axis, true);
}
