// Reference RoPE on interleaved pairs (spec §3.1): for pair k of each head vector,
//   y[2k]   = x[2k]·cos θ_k − x[2k+1]·sin θ_k
//   y[2k+1] = x[2k]·sin θ_k + x[2k+1]·cos θ_k
// The inverse (backward) rotates by −θ_k.
import type { F32 } from '../backend.js';

export function rope(
  x: F32,
  cos: F32,
  sin: F32,
  out: F32,
  B: number,
  T: number,
  H: number,
  D: number,
  Bc: number,
  inverse: boolean,
  pass = 0,
): void {
  const half = D / 2;
  const W = pass + D; // each head vector: `pass` values copied, then D rotated
  const sgn = inverse ? -1 : 1;
  for (let b = 0; b < B; b++) {
    const cb = Bc === 1 ? 0 : b;
    for (let t = 0; t < T; t++) {
      const tab = (cb * T + t) * half;
      for (let h = 0; h < H; h++) {
        const row = ((b * T + t) * H + h) * W;
        for (let i = 0; i < pass; i++) out[row + i] = x[row + i]!;
        const o = row + pass;
        for (let k = 0; k < half; k++) {
          const c = cos[tab + k]!;
          const s = sgn * sin[tab + k]!;
          const x0 = x[o + 2 * k]!;
          const x1 = x[o + 2 * k + 1]!;
          out[o + 2 * k] = x0 * c - x1 * s;
          out[o + 2 * k + 1] = x0 * s + x1 * c;
        }
      }
    }
  }
}
