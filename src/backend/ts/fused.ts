// Reference fused kernels: RMSNorm, softmax / log-softmax, SwiGLU, cross-entropy. Reductions accumulate in
// double precision (JS numbers); outputs are stored as float32.
import type { F32, I32 } from '../backend.js';

export function rmsnorm(x: F32, w: F32, y: F32, rstd: F32, R: number, D: number, eps: number): void {
  for (let r = 0; r < R; r++) {
    const o = r * D;
    let ss = 0;
    for (let i = 0; i < D; i++) ss += x[o + i]! * x[o + i]!;
    const s = 1 / Math.sqrt(ss / D + eps);
    rstd[r] = s;
    for (let i = 0; i < D; i++) y[o + i] = x[o + i]! * s * w[i]!;
  }
}

// y_i = x_i·s·w_i with s = (mean(x²)+eps)^{-1/2}:
//   dw_i += dy_i·x_i·s
//   dx_i = s·(dy_i·w_i) − s³/D · x_i · Σ_j dy_j·w_j·x_j
export function rmsnormBackward(x: F32, w: F32, rstd: F32, dy: F32, dx: F32, dw: F32, R: number, D: number): void {
  for (let r = 0; r < R; r++) {
    const o = r * D;
    const s = rstd[r]!;
    let dot = 0;
    for (let i = 0; i < D; i++) {
      dot += dy[o + i]! * w[i]! * x[o + i]!;
      dw[i] += dy[o + i]! * x[o + i]! * s;
    }
    const k = (s * s * s * dot) / D;
    for (let i = 0; i < D; i++) dx[o + i] = s * dy[o + i]! * w[i]! - k * x[o + i]!;
  }
}

export function softmax(x: F32, y: F32, R: number, N: number, log: boolean): void {
  for (let r = 0; r < R; r++) {
    const o = r * N;
    let max = -Infinity;
    for (let i = 0; i < N; i++) if (x[o + i]! > max) max = x[o + i]!;
    if (max === -Infinity) max = 0; // a fully masked row: keep NaN-free exps of -inf (all zero)
    let sum = 0;
    for (let i = 0; i < N; i++) sum += Math.exp(x[o + i]! - max);
    if (log) {
      const lse = max + Math.log(sum);
      for (let i = 0; i < N; i++) y[o + i] = x[o + i]! - lse;
    } else {
      for (let i = 0; i < N; i++) y[o + i] = Math.exp(x[o + i]! - max) / sum;
    }
  }
}

// softmax:     dx = y ⊙ (dy − Σ dy⊙y)
// log-softmax: dx = dy − exp(y) · Σ dy
export function softmaxBackward(y: F32, dy: F32, dx: F32, R: number, N: number, log: boolean): void {
  for (let r = 0; r < R; r++) {
    const o = r * N;
    let s = 0;
    if (log) {
      for (let i = 0; i < N; i++) s += dy[o + i]!;
      for (let i = 0; i < N; i++) dx[o + i] = dy[o + i]! - Math.exp(y[o + i]!) * s;
    } else {
      for (let i = 0; i < N; i++) s += dy[o + i]! * y[o + i]!;
      for (let i = 0; i < N; i++) dx[o + i] = y[o + i]! * (dy[o + i]! - s);
    }
  }
}

function sigmoid(z: number): number {
  return 1 / (1 + Math.exp(-z));
}

export function swiglu(a: F32, b: F32, out: F32, n: number): void {
  for (let i = 0; i < n; i++) out[i] = a[i]! * sigmoid(a[i]!) * b[i]!;
}

export function swigluBackward(a: F32, b: F32, dy: F32, da: F32, db: F32, n: number): void {
  for (let i = 0; i < n; i++) {
    const s = sigmoid(a[i]!);
    db[i] = dy[i]! * a[i]! * s;
    da[i] = dy[i]! * b[i]! * s * (1 + a[i]! * (1 - s));
  }
}

export function crossEntropy(logits: F32, targets: I32, loss: F32, lse: F32, R: number, V: number, ignoreIndex: number): void {
  for (let r = 0; r < R; r++) {
    const o = r * V;
    const t = targets[r]!;
    if (t !== ignoreIndex && (t < 0 || t >= V)) {
      throw new Error(`cross-entropy target ${t} at row ${r} is outside the vocabulary [0, ${V})`);
    }
    let max = -Infinity;
    for (let i = 0; i < V; i++) if (logits[o + i]! > max) max = logits[o + i]!;
    let sum = 0;
    for (let i = 0; i < V; i++) sum += Math.exp(logits[o + i]! - max);
    const l = max + Math.log(sum);
    lse[r] = l;
    loss[r] = t === ignoreIndex ? 0 : l - logits[o + t]!;
  }
}

export function crossEntropyBackward(
  logits: F32,
  targets: I32,
  lse: F32,
  dloss: F32,
  dlogits: F32,
  R: number,
  V: number,
  ignoreIndex: number,
): void {
  for (let r = 0; r < R; r++) {
    const o = r * V;
    const t = targets[r]!;
    if (t === ignoreIndex) {
      for (let i = 0; i < V; i++) dlogits[o + i] = 0;
      continue;
    }
    const g = dloss[r]!;
    const l = lse[r]!;
    for (let i = 0; i < V; i++) dlogits[o + i] = g * Math.exp(logits[o + i]! - l);
    dlogits[o + t]! -= g;
  }
}
