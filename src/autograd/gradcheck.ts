// Finite-difference gradient check. The scalar probed is L = Σ f(x)·R for a fixed random R; the analytic side
// is backward() of that L, the numeric side central differences of L accumulated in float64. Each perturbation
// uses the float32-representable points actually evaluated, so rounding of x ± eps does not bias the slope.
import { Rng } from '../tensor/random.js';
import { tensor, type Tensor } from '../tensor/tensor.js';
import { backward, noGrad } from './graph.js';
import { mul, sum } from './ops/index.js';

export interface GradcheckOptions {
  eps?: number;
  atol?: number;
  rtol?: number;
  seed?: number;
}

export interface GradcheckResult {
  ok: boolean;
  /** Largest |analytic − numeric| over all checked elements. */
  maxAbsErr: number;
  /** Where the worst violation of atol + rtol·|numeric| happened, for the failure message. */
  worst: string;
}

function project(out: Tensor, r: Float64Array): number {
  const v = out.toArray();
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i]! * r[i]!;
  return s;
}

export function gradcheck(f: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: GradcheckOptions = {}): GradcheckResult {
  const { eps = 1e-2, atol = 1e-3, rtol = 1e-2, seed = 1234 } = opts;
  const rng = new Rng(seed);
  const probe = noGrad(() => f(...inputs));
  const r = new Float64Array(probe.size);
  for (let i = 0; i < r.length; i++) r[i] = Math.fround(rng.normal());
  const R = tensor(Float32Array.from(r), probe.shape, { backend: probe.backend });

  for (const x of inputs) x.grad = null;
  backward(sum(mul(f(...inputs), R)));

  let maxAbsErr = 0;
  let worstRatio = 0;
  let worst = '';
  inputs.forEach((x, n) => {
    if (!x.requiresGrad) return;
    if (!x.isContiguous()) throw new Error('gradcheck: inputs must be contiguous');
    const analytic = x.grad ? x.grad.toArray() : new Array<number>(x.size).fill(0);
    for (let i = 0; i < x.size; i++) {
      const at = x.offset + i;
      const v = x.data[at]!;
      const hi = Math.fround(v + eps);
      const lo = Math.fround(v - eps);
      x.data[at] = hi;
      const lp = noGrad(() => project(f(...inputs), r));
      x.data[at] = lo;
      const lm = noGrad(() => project(f(...inputs), r));
      x.data[at] = v;
      const numeric = (lp - lm) / (hi - lo);
      const err = Math.abs(analytic[i]! - numeric);
      maxAbsErr = Math.max(maxAbsErr, err);
      const ratio = err / (atol + rtol * Math.abs(numeric));
      if (ratio > worstRatio) {
        worstRatio = ratio;
        worst = `input ${n} element ${i}: analytic ${analytic[i]}, numeric ${numeric}`;
      }
    }
  });
  return { ok: worstRatio <= 1, maxAbsErr, worst };
}
