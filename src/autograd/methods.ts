// The Tensor's fluent methods (`x.reshape(…)`, `a.matmul(b)`, `loss.backward()`), installed on its prototype here
// so that src/tensor never imports the ops (no tensor ↔ autograd import circle). The library's entry imports this
// module, so users always have them; src/ itself calls the functions.
import { Tensor } from '../tensor/tensor.js';
import { backward } from './graph.js';
import * as ew from './ops/elementwise.js';
import { matmul } from './ops/matmul.js';
import * as views from './ops/views.js';

declare module '../tensor/tensor.js' {
  interface Tensor {
    /** Reverse-mode autodiff from this tensor; a non-scalar needs an explicit upstream gradient. */
    backward(grad?: Tensor, opts?: { retainGraph?: boolean }): void;
    reshape(shape: readonly number[]): Tensor;
    permute(dims: readonly number[]): Tensor;
    transpose(a?: number, b?: number): Tensor;
    /** The last two dims swapped. */
    readonly T: Tensor;
    narrow(axis: number, start: number, length: number): Tensor;
    expand(shape: readonly number[]): Tensor;
    contiguous(): Tensor;
    add(b: Tensor | number): Tensor;
    sub(b: Tensor | number): Tensor;
    mul(b: Tensor | number): Tensor;
    div(b: Tensor | number): Tensor;
    matmul(b: Tensor): Tensor;
  }
}

const methods: Partial<Record<keyof Tensor, (this: Tensor, ...args: never[]) => unknown>> = {
  backward(this: Tensor, grad?: Tensor, opts: { retainGraph?: boolean } = {}) {
    backward(this, grad, opts);
  },
  reshape(this: Tensor, shape: readonly number[]) {
    return views.reshape(this, shape);
  },
  permute(this: Tensor, dims: readonly number[]) {
    return views.permute(this, dims);
  },
  transpose(this: Tensor, a = -2, b = -1) {
    return views.transpose(this, a, b);
  },
  narrow(this: Tensor, axis: number, start: number, length: number) {
    return views.narrow(this, axis, start, length);
  },
  expand(this: Tensor, shape: readonly number[]) {
    return views.expand(this, shape);
  },
  contiguous(this: Tensor) {
    return views.contiguous(this);
  },
  add(this: Tensor, b: Tensor | number) {
    return ew.add(this, b);
  },
  sub(this: Tensor, b: Tensor | number) {
    return ew.sub(this, b);
  },
  mul(this: Tensor, b: Tensor | number) {
    return ew.mul(this, b);
  },
  div(this: Tensor, b: Tensor | number) {
    return ew.div(this, b);
  },
  matmul(this: Tensor, b: Tensor) {
    return matmul(this, b);
  },
};
for (const [name, fn] of Object.entries(methods))
  Object.defineProperty(Tensor.prototype, name, { value: fn, writable: true, configurable: true });
Object.defineProperty(Tensor.prototype, 'T', {
  get(this: Tensor) {
    return views.transpose(this, -2, -1);
  },
  configurable: true,
});
