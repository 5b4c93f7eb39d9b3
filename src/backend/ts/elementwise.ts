// Reference loops: layout copies, elementwise ops and reductions.
import type { BinaryOp, F32, I32, ReduceOp, Strided, UnaryOp } from '../backend.js';
import { forEachRow } from './strided.js';

/** Visit every element pair of two strided operands: the innermost dim as a tight loop. */
function pairRows(
  src: Strided,
  dst: Strided,
  shape: readonly number[],
  row: (a: F32, ia: number, sa: number, b: F32, ib: number, sb: number, n: number) => void,
): void {
  const nd = shape.length;
  const n = nd ? shape[nd - 1]! : 1;
  const sa = nd ? src.strides[nd - 1]! : 0;
  const sb = nd ? dst.strides[nd - 1]! : 0;
  forEachRow(shape, src.strides, src.offset, dst.strides, dst.offset, (ia, ib) => row(src.buf, ia, sa, dst.buf, ib, sb, n));
}

export function copy(src: Strided, dst: Strided, shape: readonly number[]): void {
  pairRows(src, dst, shape, (a, ia, sa, b, ib, sb, n) => {
    for (let i = 0; i < n; i++) b[ib + i * sb] = a[ia + i * sa]!;
  });
}

export function accumulate(src: Strided, dst: Strided, shape: readonly number[]): void {
  pairRows(src, dst, shape, (a, ia, sa, b, ib, sb, n) => {
    for (let i = 0; i < n; i++) b[ib + i * sb] += a[ia + i * sa]!;
  });
}

export function binary(op: BinaryOp, A: Strided, B: Strided, out: F32, shape: readonly number[]): void {
  const nd = shape.length;
  const n = nd ? shape[nd - 1]! : 1;
  const sa = nd ? A.strides[nd - 1]! : 0;
  const sb = nd ? B.strides[nd - 1]! : 0;
  const a = A.buf;
  const b = B.buf;
  forEachRow(shape, A.strides, A.offset, B.strides, B.offset, (ia, ib, o) => {
    switch (op) {
      case 'add':
        for (let i = 0; i < n; i++) out[o + i] = a[ia + i * sa]! + b[ib + i * sb]!;
        break;
      case 'sub':
        for (let i = 0; i < n; i++) out[o + i] = a[ia + i * sa]! - b[ib + i * sb]!;
        break;
      case 'mul':
        for (let i = 0; i < n; i++) out[o + i] = a[ia + i * sa]! * b[ib + i * sb]!;
        break;
      case 'div':
        for (let i = 0; i < n; i++) out[o + i] = a[ia + i * sa]! / b[ib + i * sb]!;
        break;
    }
  });
}

function sigmoid(z: number): number {
  return 1 / (1 + Math.exp(-z));
}

export function unary(op: UnaryOp, x: F32, out: F32, n: number, alpha: number): void {
  switch (op) {
    case 'neg':
      for (let i = 0; i < n; i++) out[i] = -x[i]!;
      return;
    case 'exp':
      for (let i = 0; i < n; i++) out[i] = Math.exp(x[i]!);
      return;
    case 'log':
      for (let i = 0; i < n; i++) out[i] = Math.log(x[i]!);
      return;
    case 'sqrt':
      for (let i = 0; i < n; i++) out[i] = Math.sqrt(x[i]!);
      return;
    case 'rsqrt':
      for (let i = 0; i < n; i++) out[i] = 1 / Math.sqrt(x[i]!);
      return;
    case 'silu':
      for (let i = 0; i < n; i++) out[i] = x[i]! * sigmoid(x[i]!);
      return;
    case 'scale':
      for (let i = 0; i < n; i++) out[i] = x[i]! * alpha;
      return;
    case 'square':
      for (let i = 0; i < n; i++) out[i] = x[i]! * x[i]!;
      return;
    case 'abs':
      for (let i = 0; i < n; i++) out[i] = Math.abs(x[i]!);
      return;
  }
}

export function unaryBackward(op: UnaryOp, x: F32, y: F32, dy: F32, dx: F32, n: number, alpha: number): void {
  switch (op) {
    case 'neg':
      for (let i = 0; i < n; i++) dx[i] = -dy[i]!;
      return;
    case 'exp': // d e^x = e^x
      for (let i = 0; i < n; i++) dx[i] = dy[i]! * y[i]!;
      return;
    case 'log':
      for (let i = 0; i < n; i++) dx[i] = dy[i]! / x[i]!;
      return;
    case 'sqrt': // 1 / (2 sqrt x)
      for (let i = 0; i < n; i++) dx[i] = (0.5 * dy[i]!) / y[i]!;
      return;
    case 'rsqrt': // -1/2 x^{-3/2} = -1/2 y^3
      for (let i = 0; i < n; i++) dx[i] = -0.5 * dy[i]! * y[i]! * y[i]! * y[i]!;
      return;
    case 'silu': // σ(x)(1 + x(1 − σ(x)))
      for (let i = 0; i < n; i++) {
        const s = sigmoid(x[i]!);
        dx[i] = dy[i]! * s * (1 + x[i]! * (1 - s));
      }
      return;
    case 'scale':
      for (let i = 0; i < n; i++) dx[i] = dy[i]! * alpha;
      return;
    case 'square':
      for (let i = 0; i < n; i++) dx[i] = 2 * dy[i]! * x[i]!;
      return;
    case 'abs':
      for (let i = 0; i < n; i++) dx[i] = x[i]! > 0 ? dy[i]! : x[i]! < 0 ? -dy[i]! : 0;
      return;
  }
}

export function reduce(op: ReduceOp, x: F32, out: F32, arg: I32 | null, O: number, N: number, I: number): void {
  for (let o = 0; o < O; o++) {
    const base = o * N * I;
    for (let i = 0; i < I; i++) {
      if (op === 'sum') {
        let s = 0;
        for (let n = 0; n < N; n++) s += x[base + n * I + i]!;
        out[o * I + i] = s;
      } else {
        let best = -Infinity;
        let at = 0;
        for (let n = 0; n < N; n++) {
          const v = x[base + n * I + i]!;
          if (v > best || (n === 0 && Number.isNaN(v))) {
            best = v;
            at = n;
          }
        }
        out[o * I + i] = best;
        if (arg) arg[o * I + i] = at;
      }
    }
  }
}

export function reduceMaxBackward(dy: F32, arg: I32, dx: F32, O: number, N: number, I: number): void {
  for (let o = 0; o < O; o++) {
    for (let i = 0; i < I; i++) dx[o * N * I + arg[o * I + i]! * I + i] += dy[o * I + i]!;
  }
}
