// Fused RMSNorm (spec §1): y = x · rsqrt(mean(x²) + eps) · w over the last axis.
import { empty, uninit, type Tensor } from '../../tensor/tensor.js';
import { fmtShape } from '../../tensor/shape.js';
import { record } from '../graph.js';
import { contiguous } from './views.js';

/** x [..., D], w [D] → y [..., D].  Saves rstd [rows] for the backward. */
export function rmsnorm(xIn: Tensor, w: Tensor, eps: number): Tensor {
  const D = xIn.shape[xIn.ndim - 1]!;
  if (w.ndim !== 1 || w.shape[0] !== D) throw new Error(`rmsnorm: weight ${fmtShape(w.shape)} does not match input width ${D}`);
  const x = contiguous(xIn);
  const wc = contiguous(w);
  const R = x.size / D;
  const y = uninit(x.backend, x.shape);
  const rstd = uninit(x.backend, [R]);
  x.backend.rmsnorm(x.f32(), wc.f32(), y.f32(), rstd.f32(), R, D, eps);
  return record(y, 'rmsnorm', [x, wc], (gy) => {
    const dx = uninit(x.backend, x.shape);
    const dw = empty(x.backend, [D]);
    x.backend.rmsnormBackward(x.f32(), wc.f32(), rstd.f32(), gy.f32(), dx.f32(), dw.f32(), R, D);
    return [dx, dw];
  });
}
