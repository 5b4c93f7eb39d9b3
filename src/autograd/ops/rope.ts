// Rotary position embedding on interleaved pairs (2k, 2k+1) (spec §3.1), from precomputed cos/sin tables.
//   y[2k] = x[2k]·cos − x[2k+1]·sin,  y[2k+1] = x[2k]·sin + x[2k+1]·cos;  dx = rotation of dy by −θ
import { uninit, type Tensor } from '../../tensor/tensor.js';
import { fmtShape } from '../../tensor/shape.js';
import { freshGrad, record } from '../graph.js';
import { contiguous } from './views.js';

/** x [B, T, H, D] (D even), cos/sin [T, D/2] or [B, T, D/2] → [B, T, H, D]. The tables carry no gradient. */
export function rope(xIn: Tensor, cosIn: Tensor, sinIn: Tensor): Tensor {
  if (xIn.ndim !== 4) throw new Error(`rope: x must be [B, T, H, D], got ${fmtShape(xIn.shape)}`);
  return ropeTail(xIn, xIn.shape[3]!, cosIn, sinIn);
}

/**
 * RoPE on the last `D` values of each head vector of x [B, T, H, P+D]; the first P pass through (MLA's query:
 * [q_nope | q_rope] per head, spec §2.3). One kernel each way instead of slicing, rotating and joining.
 */
export function ropeTail(xIn: Tensor, D: number, cosIn: Tensor, sinIn: Tensor): Tensor {
  if (xIn.ndim !== 4) throw new Error(`rope: x must be [B, T, H, D], got ${fmtShape(xIn.shape)}`);
  const [B, T, H, W] = xIn.shape as [number, number, number, number];
  if (!(Number.isInteger(D) && D > 0 && D <= W)) throw new Error(`rope: rotated width ${D} must be in 1…${W}`);
  if (D % 2 !== 0) throw new Error(`rope: the rotated width ${D} must be even`);
  const tableOk = (t: Tensor): boolean =>
    (t.ndim === 2 && t.shape[0] === T && t.shape[1] === D / 2) ||
    (t.ndim === 3 && (t.shape[0] === B || t.shape[0] === 1) && t.shape[1] === T && t.shape[2] === D / 2);
  if (!tableOk(cosIn) || !tableOk(sinIn)) {
    throw new Error(`rope: cos/sin tables ${fmtShape(cosIn.shape)} / ${fmtShape(sinIn.shape)} do not fit x ${fmtShape(xIn.shape)}`);
  }
  const Bc = cosIn.ndim === 3 ? cosIn.shape[0]! : 1;
  const P = W - D;
  const x = contiguous(xIn);
  const cos = contiguous(cosIn);
  const sin = contiguous(sinIn);
  const out = uninit(x.backend, x.shape);
  x.backend.rope(x.f32(), cos.f32(), sin.f32(), out.f32(), B, T, H, D, Bc, false, P);
  return record(out, 'rope', [x], (gy) => {
    const gx = uninit(x.backend, x.shape);
    x.backend.rope(contiguous(gy).f32(), cos.f32(), sin.f32(), gx.f32(), B, T, H, D, Bc, true, P);
    return [freshGrad(gx)]; // a whole gradient: the walk may add later contributions into it
  });
}
