// Elementwise ops with NumPy broadcasting, forward and backward side by side.
import type { UnaryOp } from '../../backend/backend.js';
import { uninit, Tensor, wrap } from '../../tensor/tensor.js';
import { broadcastShapes, broadcastStrides } from '../../tensor/shape.js';
import { record } from '../graph.js';
import { sumTo } from './kernels.js';
import { contiguous } from './views.js';

function asTensor(x: Tensor | number, like: Tensor): Tensor {
  if (typeof x !== 'number') {
    if (x.backend !== like.backend) throw new Error(`tensors live on different backends (${x.backend.name} vs ${like.backend.name})`);
    if (x.dtype !== 'f32') throw new Error('arithmetic needs float32 tensors; got an int32 tensor');
    return x;
  }
  const t = wrap(like.backend, like.backend.alloc(1), []);
  t.data[0] = x;
  return t;
}

function binaryForward(op: 'add' | 'sub' | 'mul' | 'div', a: Tensor, b: Tensor): Tensor {
  const shape = broadcastShapes(a.shape, b.shape);
  const out = uninit(a.backend, shape);
  a.backend.binary(
    op,
    { buf: a.data as Float32Array, offset: a.offset, strides: broadcastStrides(a.shape, a.strides, shape) },
    { buf: b.data as Float32Array, offset: b.offset, strides: broadcastStrides(b.shape, b.strides, shape) },
    out.data as Float32Array,
    shape,
  );
  return out;
}

/** a + b.  da = gy, db = gy (each summed over its broadcast dims) */
export function add(a: Tensor, bIn: Tensor | number): Tensor {
  const b = asTensor(bIn, a);
  const out = binaryForward('add', a, b);
  return record(out, 'add', [a, b], (gy) => [a.requiresGrad ? sumTo(gy, a.shape) : null, b.requiresGrad ? sumTo(gy, b.shape) : null]);
}

/** a − b.  da = gy, db = −gy */
export function sub(a: Tensor, bIn: Tensor | number): Tensor {
  const b = asTensor(bIn, a);
  const out = binaryForward('sub', a, b);
  return record(out, 'sub', [a, b], (gy) => [a.requiresGrad ? sumTo(gy, a.shape) : null, b.requiresGrad ? sumTo(neg(gy), b.shape) : null]);
}

/** a ⊙ b.  da = gy ⊙ b, db = gy ⊙ a */
export function mul(a: Tensor, bIn: Tensor | number): Tensor {
  const b = asTensor(bIn, a);
  const out = binaryForward('mul', a, b);
  return record(out, 'mul', [a, b], (gy) => [
    a.requiresGrad ? sumTo(binaryForward('mul', gy, b), a.shape) : null,
    b.requiresGrad ? sumTo(binaryForward('mul', gy, a), b.shape) : null,
  ]);
}

/** a / b.  da = gy / b, db = −gy ⊙ a / b² = −gy ⊙ out / b */
export function div(a: Tensor, bIn: Tensor | number): Tensor {
  const b = asTensor(bIn, a);
  const out = binaryForward('div', a, b);
  return record(out, 'div', [a, b], (gy) => [
    a.requiresGrad ? sumTo(binaryForward('div', gy, b), a.shape) : null,
    b.requiresGrad ? sumTo(neg(binaryForward('div', binaryForward('mul', gy, out), b)), b.shape) : null,
  ]);
}

function unaryOp(op: UnaryOp, xIn: Tensor, alpha = 0): Tensor {
  if (xIn.dtype !== 'f32') throw new Error(`${op} needs a float32 tensor`);
  const x = contiguous(xIn);
  const out = uninit(x.backend, x.shape);
  x.backend.unary(op, x.f32(), out.f32(), x.size, alpha);
  return record(out, op, [x], (gy) => {
    const gx = uninit(x.backend, x.shape);
    x.backend.unaryBackward(op, x.f32(), out.f32(), gy.f32(), gx.f32(), x.size, alpha);
    return [gx];
  });
}

export const neg = (x: Tensor): Tensor => unaryOp('neg', x);
export const exp = (x: Tensor): Tensor => unaryOp('exp', x);
export const log = (x: Tensor): Tensor => unaryOp('log', x);
export const sqrt = (x: Tensor): Tensor => unaryOp('sqrt', x);
export const rsqrt = (x: Tensor): Tensor => unaryOp('rsqrt', x);
export const silu = (x: Tensor): Tensor => unaryOp('silu', x);
export const square = (x: Tensor): Tensor => unaryOp('square', x);
export const abs = (x: Tensor): Tensor => unaryOp('abs', x);
/** x · alpha (alpha a constant) */
export const scale = (x: Tensor, alpha: number): Tensor => unaryOp('scale', x, alpha);

/** Fused SwiGLU: silu(a) ⊙ b, same shapes.  da = gy·b·σ(a)(1 + a(1−σ(a))), db = gy·silu(a) */
export function swiglu(aIn: Tensor, bIn: Tensor): Tensor {
  if (aIn.shape.join() !== bIn.shape.join()) throw new Error(`swiglu: gate and up shapes differ (${aIn.shape} vs ${bIn.shape})`);
  const a = contiguous(aIn);
  const b = contiguous(bIn);
  const out = uninit(a.backend, a.shape);
  a.backend.swiglu(a.f32(), b.f32(), out.f32(), a.size);
  return record(out, 'swiglu', [a, b], (gy) => {
    const da = uninit(a.backend, a.shape);
    const db = uninit(a.backend, a.shape);
    a.backend.swigluBackward(a.f32(), b.f32(), gy.f32(), da.f32(), db.f32(), a.size);
    return [da, db];
  });
}
