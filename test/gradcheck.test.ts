// Finite-difference gradient checks for every differentiable op, on every backend.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as T from '../src/node.js';
import { testBackends } from './helpers.js';

for (const backend of testBackends()) {
  describe(`gradcheck [${backend.name}]`, () => {
    let seed = 1;
    const rn = (shape: number[], std = 1): T.Tensor => T.randn(shape, { backend, seed: seed++, std, requiresGrad: true });
    const pos = (shape: number[]): T.Tensor => T.rand(shape, { backend, seed: seed++, low: 0.5, high: 2, requiresGrad: true });
    const ints = (values: number[], shape?: number[]): T.Tensor => T.intTensor(values, shape, { backend });
    const check = (name: string, f: (...xs: T.Tensor[]) => T.Tensor, inputs: () => T.Tensor[], opts: T.GradcheckOptions = {}): void => {
      it(name, () => {
        const r = T.gradcheck(f, inputs(), opts);
        assert.ok(r.ok, `${name}: ${r.worst} (max abs err ${r.maxAbsErr})`);
      });
    };

    // elementwise with broadcasting
    check(
      'add (broadcast [3,1,4] + [2,4])',
      (a, b) => T.add(a!, b!),
      () => [rn([3, 1, 4]), rn([2, 4])],
    );
    check(
      'sub (broadcast [2,3] − [3])',
      (a, b) => T.sub(a!, b!),
      () => [rn([2, 3]), rn([3])],
    );
    check(
      'mul (broadcast [4,1] ⊙ [1,5])',
      (a, b) => T.mul(a!, b!),
      () => [rn([4, 1]), rn([1, 5])],
    );
    check(
      'div (broadcast [2,3] / [2,1])',
      (a, b) => T.div(a!, b!),
      () => [rn([2, 3]), pos([2, 1])],
    );
    check(
      'mul by scalar tensor []',
      (a, b) => T.mul(a!, b!),
      () => [rn([2, 3]), rn([])],
    );
    check(
      'neg',
      (a) => T.neg(a!),
      () => [rn([5])],
    );
    check(
      'scale',
      (a) => T.scale(a!, -2.5),
      () => [rn([5])],
    );
    check(
      'exp',
      (a) => T.exp(a!),
      () => [rn([6])],
    );
    check(
      'log',
      (a) => T.log(a!),
      () => [pos([6])],
    );
    check(
      'sqrt',
      (a) => T.sqrt(a!),
      () => [pos([6])],
    );
    check(
      'rsqrt',
      (a) => T.rsqrt(a!),
      () => [pos([6])],
    );
    check(
      'silu',
      (a) => T.silu(a!),
      () => [rn([8], 2)],
    );
    check(
      'square',
      (a) => T.square(a!),
      () => [rn([6])],
    );
    check(
      'swiglu',
      (a, b) => T.swiglu(a!, b!),
      () => [rn([3, 4], 2), rn([3, 4])],
    );

    // reductions
    check(
      'sum over all',
      (a) => T.sum(a!),
      () => [rn([2, 3, 4])],
    );
    check(
      'sum over axes [0,2] keepdim',
      (a) => T.sum(a!, [0, 2], true),
      () => [rn([2, 3, 4])],
    );
    check(
      'mean over axis 1',
      (a) => T.mean(a!, 1),
      () => [rn([2, 3, 4])],
    );
    // distinct values far apart so ±eps never changes the arg-max
    check(
      'max over axis -1',
      (a) => T.max(a!, -1),
      () => [
        T.tensor(
          [
            [0.1, 2.0, -1.0],
            [3.0, -0.5, 1.2],
          ],
          undefined,
          { backend, requiresGrad: true },
        ),
      ],
    );

    // matmul and linear
    check(
      'matmul [3,4]·[4,5]',
      (a, b) => T.matmul(a!, b!),
      () => [rn([3, 4]), rn([4, 5])],
    );
    check(
      'batched matmul [2,3,4]·[2,4,2]',
      (a, b) => T.matmul(a!, b!),
      () => [rn([2, 3, 4]), rn([2, 4, 2])],
    );
    check(
      'batched matmul with broadcast [2,3,4]·[4,5]',
      (a, b) => T.matmul(a!, b!),
      () => [rn([2, 3, 4]), rn([4, 5])],
    );
    check(
      'batched matmul with broadcast [3,4]·[2,4,5]',
      (a, b) => T.matmul(a!, b!),
      () => [rn([3, 4]), rn([2, 4, 5])],
    );
    check(
      'matmul partial broadcast [2,1,3,4]·[1,3,4,2]',
      (a, b) => T.matmul(a!, b!),
      () => [rn([2, 1, 3, 4]), rn([1, 3, 4, 2])],
    );
    check(
      'matmul with transposed operands Aᵀ·Bᵀ',
      (a, b) => T.matmul(T.transpose(a!), T.transpose(b!)),
      () => [rn([4, 3]), rn([5, 4])],
    );
    check(
      'linear x·Wᵀ',
      (x, w) => T.linear(x!, w!),
      () => [rn([2, 3, 4]), rn([5, 4])],
    );
    check(
      'linears: two weights on one input, side by side (gate and up)',
      (x, w0, w1) => {
        const [a, b] = T.linears(x!, [w0!, w1!]);
        return T.mul(a!, b!);
      },
      () => [rn([2, 3, 4]), rn([5, 4]), rn([5, 4])],
    );
    check(
      'groupedLinear (row groups 2, 0, 3 through their own weights)',
      (x, w0, w1, w2) => T.groupedLinear(x!, [2, 0, 3], [w0!, w1!, w2!]),
      () => [rn([5, 4]), rn([3, 4]), rn([3, 4]), rn([3, 4])],
    );

    // fused norms, softmax, loss
    check(
      'rmsnorm',
      (x, w) => T.rmsnorm(x!, w!, 1e-6),
      () => [rn([3, 8]), rn([8])],
    );
    check(
      'softmax (last axis)',
      (x) => T.softmax(x!),
      () => [rn([3, 5])],
    );
    check(
      'softmax (axis 0)',
      (x) => T.softmax(x!, 0),
      () => [rn([3, 5])],
    );
    check(
      'log-softmax',
      (x) => T.logSoftmax(x!),
      () => [rn([3, 5])],
    );
    check(
      'cross-entropy (mean, ignore −100)',
      (x) => T.crossEntropy(x!, ints([1, -100, 4, 0], [4])),
      () => [rn([4, 6])],
    );
    check(
      'cross-entropy (none)',
      (x) => T.crossEntropy(x!, ints([2, 0, 1], [3]), { reduction: 'none' }),
      () => [rn([3, 4])],
    );

    // index ops
    check(
      'embedding (repeated ids)',
      (w) => T.embedding(w!, ints([1, 3, 1, 0, 3, 3], [2, 3])),
      () => [rn([5, 4])],
    );
    check(
      'index_select',
      (x) => T.indexSelect(x!, ints([2, 0, 2])),
      () => [rn([4, 3])],
    );
    check(
      'index_add',
      (t, s) => T.indexAdd(t!, ints([1, 3, 1]), s!),
      () => [rn([4, 2]), rn([3, 2])],
    );
    check(
      'one op output read by two linears and an index_select (the later backwards add into the first gradient)',
      (x, a, b) => {
        const h = T.mul(x!, 1.5);
        const two = T.add(T.sum(T.linear(h, a!)), T.sum(T.mul(T.linear(h, b!), T.linear(h, b!))));
        return T.add(two, T.sum(T.mul(T.indexSelect(h, ints([2, 0, 2])), h)));
      },
      () => [rn([3, 4]), rn([5, 4]), rn([2, 4])],
    );
    check(
      'one op output read by two grouped products (gate and up of the experts)',
      (x, a, b) => {
        const h = T.mul(x!, 1.5);
        return T.add(T.sum(T.groupedLinear(h, [2, 0, 1], [a!, b!, a!])), T.sum(T.mul(T.groupedLinear(h, [1, 2, 0], [b!, a!, b!]), h)));
      },
      () => [rn([3, 4]), rn([4, 4]), rn([4, 4])],
    );
    check(
      'index_add with row weights (MoE combine; a vector body and a tail per row)',
      (t, s, w) => T.indexAdd(t!, ints([1, 3, 1]), s!, w!),
      () => [rn([4, 11]), rn([3, 11]), rn([3])],
    );
    check(
      'gather (take along last axis)',
      (x) => T.gather(x!, ints([0, 2, 2, 1], [2, 2])),
      () => [rn([2, 3])],
    );
    check(
      'topk values',
      (x) => T.topk(x!, 2).values,
      () => [
        T.tensor(
          [
            [0.3, -1.2, 2.5, 0.9],
            [1.7, 0.2, -0.4, 1.1],
          ],
          undefined,
          { backend, requiresGrad: true },
        ),
      ],
    );

    // views and joins
    check(
      'reshape',
      (x) => T.reshape(x!, [3, 4]),
      () => [rn([2, 6])],
    );
    check(
      'permute',
      (x) => T.permute(x!, [2, 0, 1]),
      () => [rn([2, 3, 4])],
    );
    check(
      'slices of one tensor assembled in place: disjoint, a gap, overlapping, another axis, then a whole use',
      (x) => {
        const h = T.mul(x!, 1.5);
        const cube = (t: T.Tensor) => T.sum(T.mul(T.mul(t, t), t));
        const disjoint = T.add(cube(T.narrow(h, 1, 0, 2)), T.sum(T.mul(T.narrow(h, 1, 3, 2), 3))); // column 2 untouched
        const overlap = T.add(disjoint, cube(T.narrow(h, 1, 1, 3)));
        const otherAxis = T.add(overlap, cube(T.narrow(h, 0, 1, 1)));
        return T.add(otherAxis, T.sum(T.mul(h, x!)));
      },
      () => [rn([3, 5])],
    );
    check(
      'slices of a leaf covering it exactly (q = [q_nope | q_rope])',
      (x) => T.add(T.sum(T.mul(T.narrow(x!, 1, 0, 3), 2)), T.sum(T.mul(T.narrow(x!, 1, 3, 2), T.narrow(x!, 1, 3, 2)))),
      () => [rn([3, 5])],
    );
    check(
      'a slice with a gap only (the rest of the gradient is zero)',
      (x) => T.sum(T.mul(T.narrow(T.mul(x!, 2), 0, 1, 1), 4)),
      () => [rn([3, 2])],
    );
    check(
      'narrow',
      (x) => T.narrow(x!, 1, 1, 2),
      () => [rn([2, 4])],
    );
    check(
      'expand',
      (x) => T.expand(x!, [3, 2, 4]),
      () => [rn([2, 1])],
    );
    check(
      'contiguous of a transpose',
      (x) => T.contiguous(T.transpose(x!, 0, 1)),
      () => [rn([3, 2])],
    );
    check(
      'concat',
      (a, b) => T.concat([a!, b!], 1),
      () => [rn([2, 3]), rn([2, 2])],
    );
    check(
      'split',
      (x) => T.mul(T.split(x!, [1, 3], 1)[1]!, 2),
      () => [rn([2, 4])],
    );

    // positional and attention
    const ropeTables = (T_: number, D: number): [T.Tensor, T.Tensor] => {
      const c: number[] = [];
      const s: number[] = [];
      for (let t = 0; t < T_; t++)
        for (let k = 0; k < D / 2; k++) {
          const th = t * 10000 ** ((-2 * k) / D);
          c.push(Math.cos(th));
          s.push(Math.sin(th));
        }
      return [T.tensor(c, [T_, D / 2], { backend }), T.tensor(s, [T_, D / 2], { backend })];
    };
    check(
      'rope',
      (x) => T.rope(x!, ...ropeTables(3, 4)),
      () => [rn([2, 3, 2, 4])],
    );
    check(
      'ropeTail (the first 3 values of each head pass through, the last 4 rotate)',
      (x) => T.ropeTail(x!, 4, ...ropeTables(3, 4)),
      () => [rn([2, 3, 2, 7])],
    );
    check(
      'attention causal, d_qk ≠ d_v',
      (q, k, v) => T.attention(q!, k!, v!, { scale: 0.4, causal: true }),
      () => [rn([2, 2, 3, 5]), rn([2, 2, 3, 5]), rn([2, 2, 3, 3])],
    );
    check(
      'attention with cache offset (T < S) and grouped KV heads',
      (q, k, v) => T.attention(q!, k!, v!, { scale: 0.3, causal: true }),
      () => [rn([1, 4, 2, 3]), rn([1, 2, 5, 3]), rn([1, 2, 5, 4])],
    );
    check(
      'attention with additive mask',
      (q, k, v) =>
        T.attention(q!, k!, v!, {
          scale: 0.5,
          mask: T.tensor(
            [
              [0, -Infinity, 0],
              [0, 0, -1],
              [-Infinity, 0, 0],
            ],
            undefined,
            { backend },
          ),
        }),
      () => [rn([1, 1, 3, 4]), rn([1, 1, 3, 4]), rn([1, 1, 3, 2])],
    );
  });
}
