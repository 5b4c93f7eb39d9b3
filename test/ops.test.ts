// Forward values of the ops against independent straightforward computations, on every backend.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as T from '../src/node.js';
import type { AdamWParams, GemmParams } from '../src/backend/backend.js';
import { assertClose, testBackends } from './helpers.js';

for (const backend of testBackends()) {
  describe(`ops [${backend.name}]`, () => {
    const t = (v: number[] | number[][] | number[][][], shape?: number[]): T.Tensor => T.tensor(v, shape, { backend });
    const rn = (shape: number[], seed: number): T.Tensor => T.randn(shape, { backend, seed });

    it('gradcheck itself fails on a wrong backward', () => {
      const wrongSquare = (x: T.Tensor): T.Tensor => {
        const y = T.noGrad(() => T.square(x));
        return T.record(y, 'wrong_square', [x], (gy) => [T.noGrad(() => T.mul(gy, x))]); // misses the factor 2
      };
      const r = T.gradcheck(wrongSquare, [T.randn([4], { backend, seed: 3, requiresGrad: true })]);
      assert.equal(r.ok, false);
    });

    it('matmul equals the triple loop, for every transpose combination and a batch', () => {
      const a = rn([2, 3, 4], 1);
      const b = rn([2, 4, 5], 2);
      const av = a.toArray();
      const bv = b.toArray();
      const want: number[] = [];
      for (let p = 0; p < 2; p++)
        for (let i = 0; i < 3; i++)
          for (let j = 0; j < 5; j++) {
            let s = 0;
            for (let k = 0; k < 4; k++) s += av[p * 12 + i * 4 + k]! * bv[p * 20 + k * 5 + j]!;
            want.push(s);
          }
      assertClose(T.matmul(a, b).toArray(), want, 1e-5, 1e-5);
      const aT = T.contiguous(T.transpose(a));
      const bT = T.contiguous(T.transpose(b));
      assertClose(T.matmul(T.transpose(aT), b).toArray(), want, 1e-5, 1e-5, 'Aᵀ');
      assertClose(T.matmul(a, T.transpose(bT)).toArray(), want, 1e-5, 1e-5, 'Bᵀ');
      assertClose(T.matmul(T.transpose(aT), T.transpose(bT)).toArray(), want, 1e-5, 1e-5, 'AᵀBᵀ');
    });

    it('matmul matches the ts reference at blocked sizes, every transpose combination, ragged edges', () => {
      if (backend.name === 'ts') return; // the reference itself
      const ts = T.loadBackend('ts');
      let seed = 40;
      // native paths: A read in place (row-major A; a short, narrow Aᵀ), in column blocks when K·N is large
      // (7×150×40000); packed A for a long or wide Aᵀ: M ≤ 144 (130×140), all of B at once (600×140×300), blocked
      // (600×600×200)
      for (const [M, N, K] of [
        [7, 17, 9],
        [50, 40, 260],
        [150, 5, 300],
        [301, 33, 515],
        [7, 150, 40000],
        [130, 140, 600],
        [600, 140, 300],
        [600, 600, 200],
      ] as const) {
        for (const [ta, tb] of [
          [false, false],
          [true, false],
          [false, true],
          [true, true],
        ]) {
          const run = (be: T.Backend, s: number): number[] => {
            const a = T.scale(T.randn(ta ? [K, M] : [M, K], { backend: be, seed: s }), Math.min(1, Math.sqrt(512 / K))); // outputs of the same size at any K
            const b = T.randn(tb ? [N, K] : [K, N], { backend: be, seed: s + 1 });
            return T.matmul(ta ? T.transpose(a) : a, tb ? T.transpose(b) : b).toArray();
          };
          seed += 2;
          assertClose(run(backend, seed), run(ts, seed), 1e-4, 1e-5, `${M}×${N}×${K} ${ta ? 'Aᵀ' : 'A'}${tb ? 'Bᵀ' : 'B'}`);
        }
      }
    });

    it('gemmMany gives the same bits as one gemm after another, for big products run side by side too', () => {
      // two products of ≥ 4·10⁷ flops with equal cost run one per thread; a third, smaller one makes them unequal
      const mk = (M: number, N: number, K: number, s: number, beta: number): GemmParams => ({
        batch: 1,
        M,
        N,
        K,
        a: T.randn([M, K], { backend, seed: s }).f32(),
        aOffset: 0,
        aBatchStride: 0,
        aRowStride: K,
        aColStride: 1,
        b: T.randn([N, K], { backend, seed: s + 1 }).f32(),
        bOffset: 0,
        bBatchStride: 0,
        bRowStride: 1,
        bColStride: K,
        c: T.randn([M, N], { backend, seed: s + 2 }).f32(),
        cOffset: 0,
        cBatchStride: 0,
        alpha: 1,
        beta,
      });
      for (const shapes of [
        [
          [300, 400, 200],
          [400, 200, 300],
        ],
        [
          [300, 400, 200],
          [400, 200, 300],
          [50, 60, 70],
        ],
      ]) {
        const many = shapes.map(([M, N, K], i) => mk(M!, N!, K!, 10 * i, i % 2));
        const one = shapes.map(([M, N, K], i) => mk(M!, N!, K!, 10 * i, i % 2));
        backend.gemmMany(many);
        for (const p of one) backend.gemm(p);
        many.forEach((p, i) => assert.deepEqual(p.c, one[i]!.c, `product ${i} of ${shapes.length}`));
      }
    });

    it('adamwMany and sumsqMany equal adamw and sumsq tensor by tensor', () => {
      // sizes around the 16 Ki-element pieces and the 8-lane tails; one tensor without weight decay
      const sizes = [1, 7, 4096, 16384, 16389, 40000, 3];
      const mk = (n: number, s: number): Float32Array => T.randn([n], { backend, seed: s }).f32().slice();
      const make = (): AdamWParams[] =>
        sizes.map((n, i) => ({
          n,
          param: mk(n, 10 * i),
          grad: mk(n, 10 * i + 1),
          m: mk(n, 10 * i + 2).map(Math.abs),
          v: mk(n, 10 * i + 3).map((x) => x * x),
          lr: 1e-3,
          beta1: 0.9,
          beta2: 0.95,
          eps: 1e-8,
          weightDecay: i === 2 ? 0 : 0.1,
          step: 3,
          gradScale: 0.5,
        }));
      const many = make();
      const one = make();
      backend.adamwMany(many);
      for (const p of one) backend.adamw(p);
      many.forEach((p, i) => {
        assert.deepEqual(p.param, one[i]!.param, `param ${i}`);
        assert.deepEqual(p.m, one[i]!.m, `m ${i}`);
        assert.deepEqual(p.v, one[i]!.v, `v ${i}`);
      });
      const xs = one.map((p) => p.grad);
      const want = xs.reduce((s, x) => s + backend.sumsq(x, x.length), 0);
      const got = backend.sumsqMany(xs, sizes);
      assert.ok(Math.abs(got - want) <= 1e-12 * want, `${got} vs ${want}`);
      assert.equal(backend.sumsqMany([], []), 0);
    });

    it('ropeTail equals rope on the tail joined to the untouched head, values and gradients', () => {
      const x = T.randn([2, 5, 3, 10], { backend, seed: 7, requiresGrad: true });
      const cos = T.randn([2, 5, 3], { backend, seed: 8 });
      const sin = T.randn([2, 5, 3], { backend, seed: 9 });
      const w = T.randn([2, 5, 3, 10], { backend, seed: 10 });
      const a = T.ropeTail(x, 6, cos, sin);
      T.sum(T.mul(a, w)).backward();
      const ga = x.grad!.toArray();
      x.zeroGrad();
      const b = T.concat([T.narrow(x, 3, 0, 4), T.rope(T.narrow(x, 3, 4, 6), cos, sin)], 3);
      T.sum(T.mul(b, w)).backward();
      assert.deepEqual(a.toArray(), b.toArray());
      assertClose(ga, x.grad!.toArray(), 1e-6, 1e-6, 'dx');
      assert.throws(() => T.ropeTail(x, 5, cos, sin), /must be even/);
      assert.throws(() => T.ropeTail(x, 12, cos, sin), /must be in 1…10/);
    });

    it('indexAdd at training sizes matches the ts reference: repeated and absent rows, weights, ragged width', () => {
      if (backend.name === 'ts') return; // the reference itself
      const ts = T.loadBackend('ts');
      const [M, N, D] = [3000, 500, 70];
      const idx = Array.from({ length: M }, (_, m) => (m * 7919) % 397); // rows ≥ 397 receive nothing
      const run = (be: T.Backend, weighted: boolean): number[] =>
        T.indexAdd(
          T.randn([N, D], { backend: be, seed: 1 }),
          T.intTensor(idx, [M], { backend: be }),
          T.randn([M, D], { backend: be, seed: 2 }),
          weighted ? T.randn([M], { backend: be, seed: 3 }) : undefined,
        ).toArray();
      for (const weighted of [false, true])
        assertClose(run(backend, weighted), run(ts, weighted), 1e-5, 1e-5, weighted ? 'weighted' : 'plain');
    });

    it('linear uses the [out, in] weight layout', () => {
      const x = t([[1, 2, 3]]);
      const w = t([
        [1, 0, 0],
        [0, 1, 1],
      ]); // [2 out, 3 in]
      assert.deepEqual(T.linear(x, w).toArray(), [1, 5]);
    });

    it('groupedLinear equals a linear per row group (empty groups, gradients included)', () => {
      const counts = [40, 0, 17, 40, 1, 33, 0, 25];
      const R = counts.reduce((a, b) => a + b, 0);
      const x = T.randn([R, 64], { backend, seed: 5, requiresGrad: true });
      const ws = counts.map((_, g) => T.randn([48, 64], { backend, seed: 10 + g, requiresGrad: true }));
      const y = T.groupedLinear(x, counts, ws);
      const parts: T.Tensor[] = [];
      let start = 0;
      counts.forEach((n, g) => {
        if (n > 0) parts.push(T.linear(T.narrow(x, 0, start, n), ws[g]!));
        start += n;
      });
      const want = T.concat(parts, 0);
      assertClose(y.toArray(), want.toArray(), 1e-5, 1e-5, 'forward');
      const gy = T.randn([R, 48], { backend, seed: 99 });
      y.backward(gy);
      const gx = x.grad!.toArray();
      const gw = ws.map((w) => w.grad?.toArray() ?? null);
      x.grad = null;
      for (const w of ws) w.grad = null;
      want.backward(gy);
      assertClose(gx, x.grad!.toArray(), 1e-4, 1e-5, 'dx');
      ws.forEach((w, g) => {
        if (counts[g] === 0) assert.equal(gw[g], null, `no gradient for empty group ${g}`);
        else assertClose(gw[g]!, w.grad!.toArray(), 1e-4, 1e-5, `dW${g}`);
      });
      assert.throws(() => T.groupedLinear(x, [1, 2], ws.slice(0, 2)), /row counts sum to 3, input has 156 rows/);
      assert.throws(() => T.groupedLinear(x, [R], [T.randn([48, 63], { backend })]), /does not fit input/);
    });

    it('broadcasting edge cases: scalars, size-1 dims, leading dims, zero-size', () => {
      assert.deepEqual(T.add(t([[1], [2]]), t([10, 20, 30])).toNested(), [
        [11, 21, 31],
        [12, 22, 32],
      ]);
      assert.deepEqual(T.mul(t([1, 2]), 3).toArray(), [3, 6]);
      assert.deepEqual(T.sub(T.scalar(5, { backend }), t([1, 2])).toArray(), [4, 3]);
      assert.deepEqual(
        T.add(
          t([[[1, 2]]]),
          t([
            [10, 20],
            [30, 40],
          ]),
        ).shape,
        [1, 2, 2],
      );
      assert.deepEqual(T.add(T.zeros([0, 3], { backend }), t([1, 2, 3])).shape, [0, 3]);
      assert.throws(() => T.add(t([1, 2, 3]), t([1, 2])), /cannot be broadcast/);
    });

    it('reductions: sum, mean, max with axes and keepdim', () => {
      const x = t([
        [
          [1, 2],
          [3, 4],
          [5, 6],
        ],
      ]); // [1,3,2]
      assert.deepEqual(T.sum(x).toArray(), [21]);
      assert.deepEqual(T.sum(x, 1).toNested(), [[9, 12]]);
      assert.deepEqual(T.sum(x, [0, 1], true).shape, [1, 1, 2]);
      assert.deepEqual(T.mean(x, -1).toNested(), [[1.5, 3.5, 5.5]]);
      assert.deepEqual(T.max(x, 1).toNested(), [[5, 6]]);
      const { indices } = T.maxWithIndices(
        t([
          [1, 7, 7],
          [4, 2, 0],
        ]),
        1,
      );
      assert.deepEqual(indices.toArray(), [1, 0], 'first arg-max wins');
    });

    it('softmax and log-softmax are stable for large logits', () => {
      const x = t([
        [1000, 1001, 1002],
        [-5, 0, 5],
      ]);
      const p = T.softmax(x).toArray();
      const e = [Math.exp(-2), Math.exp(-1), 1];
      const z = e[0]! + e[1]! + e[2]!;
      assertClose(
        p.slice(0, 3),
        e.map((v) => v / z),
        1e-7,
        1e-6,
      );
      assertClose(
        T.logSoftmax(x).toArray().slice(0, 3),
        e.map((v) => Math.log(v / z)),
        1e-6,
        1e-6,
      );
    });

    it('rmsnorm matches x·rsqrt(mean(x²)+eps)·w', () => {
      const x = t([[1, 2, 3, 4]]);
      const w = t([1, 0.5, 2, -1]);
      const r = 1 / Math.sqrt((1 + 4 + 9 + 16) / 4 + 1e-6);
      assertClose(T.rmsnorm(x, w, 1e-6).toArray(), [r, 2 * r * 0.5, 3 * r * 2, -4 * r], 1e-7, 1e-6);
    });

    it('cross-entropy: mean over valid targets, −100 ignored, bad target rejected', () => {
      const logits = t([
        [0, Math.log(3)],
        [5, 5],
        [1, 2],
      ]);
      const loss = T.crossEntropy(logits, T.intTensor([1, -100, 0], undefined, { backend }));
      const want = (-Math.log(3 / 4) + -Math.log(Math.E / (Math.E + Math.E ** 2))) / 2;
      assertClose(loss.toArray(), [want], 1e-6, 1e-6);
      assert.throws(() => T.crossEntropy(logits, T.intTensor([2, 0, 0], undefined, { backend })), /outside the vocabulary/);
    });

    it('topk: descending, ties to the lower index; argsort is stable', () => {
      const x = t([[1, 3, 3, 2, 3]]);
      const { values, indices } = T.topk(x, 3);
      assert.deepEqual(indices.toArray(), [1, 2, 4]);
      assert.deepEqual(values.toArray(), [3, 3, 3]);
      assert.deepEqual(T.argsort(x).toArray(), [0, 3, 1, 2, 4]);
      assert.deepEqual(T.argsort(x, true).toArray(), [1, 2, 4, 3, 0]);
      assert.deepEqual(T.argsort(t([Infinity, -Infinity, 0])).toArray(), [1, 2, 0]);
    });

    it('embedding / index_select / index_add / gather', () => {
      const w = t([
        [0, 1],
        [2, 3],
        [4, 5],
      ]);
      assert.deepEqual(T.embedding(w, T.intTensor([[2, 0]], undefined, { backend })).toNested(), [
        [
          [4, 5],
          [0, 1],
        ],
      ]);
      assert.throws(() => T.embedding(w, T.intTensor([3], undefined, { backend })), /outside \[0, 3\)/);
      const added = T.indexAdd(
        T.zeros([3, 2], { backend }),
        T.intTensor([1, 1], undefined, { backend }),
        t([
          [1, 1],
          [2, 3],
        ]),
      );
      assert.deepEqual(added.toNested(), [
        [0, 0],
        [3, 4],
        [0, 0],
      ]);
      const weighted = T.indexAdd(
        t([
          [1, 1],
          [1, 1],
        ]),
        T.intTensor([1, 1, 0], undefined, { backend }),
        t([
          [1, 1],
          [2, 3],
          [4, 5],
        ]),
        t([0.5, 2, -1]),
      );
      assert.deepEqual(weighted.toNested(), [
        [-3, -4],
        [5.5, 7.5],
      ]);
      assert.throws(
        () => T.indexAdd(T.zeros([2, 2], { backend }), T.intTensor([0], undefined, { backend }), t([[1, 2]]), t([1, 2])),
        /2 row weights for 1 source rows/,
      );
      assert.deepEqual(T.gather(t([[5, 6, 7]]), T.intTensor([[2, 0]], undefined, { backend })).toNested(), [[7, 5]]);
    });

    it('concat / split round-trip', () => {
      const a = rn([2, 3], 4);
      const [p, q] = T.split(a, [1, 2], 1);
      assert.deepEqual(T.concat([p!, q!], 1).toArray(), a.toArray());
    });

    it('rope rotates interleaved pairs (2k, 2k+1)', () => {
      const x = t([1, 2, 3, 4], [1, 1, 1, 4]);
      const th = [0.3, 0.05];
      const cos = t([th.map(Math.cos)]);
      const sin = t([th.map(Math.sin)]);
      const y = T.rope(x, cos, sin).toArray();
      const want = [
        1 * Math.cos(0.3) - 2 * Math.sin(0.3),
        1 * Math.sin(0.3) + 2 * Math.cos(0.3),
        3 * Math.cos(0.05) - 4 * Math.sin(0.05),
        3 * Math.sin(0.05) + 4 * Math.cos(0.05),
      ];
      assertClose(y, want, 1e-6, 1e-6);
    });

    it('attention equals softmax(scale·QKᵀ + causal)·V computed naively (d_qk ≠ d_v, cache offset, GQA)', () => {
      const [B, H, Hkv, Tq, S, Dk, Dv] = [2, 4, 2, 3, 5, 6, 4];
      const q = rn([B, H, Tq, Dk], 7);
      const k = rn([B, Hkv, S, Dk], 8);
      const v = rn([B, Hkv, S, Dv], 9);
      const scale = 0.37;
      const got = T.attention(q, k, v, { scale, causal: true }).toArray();
      const qa = q.toArray();
      const ka = k.toArray();
      const va = v.toArray();
      const want: number[] = [];
      for (let b = 0; b < B; b++)
        for (let h = 0; h < H; h++)
          for (let i = 0; i < Tq; i++) {
            const g = Math.floor(h / (H / Hkv));
            const s: number[] = [];
            for (let j = 0; j <= S - Tq + i; j++) {
              let d = 0;
              for (let c = 0; c < Dk; c++) d += qa[((b * H + h) * Tq + i) * Dk + c]! * ka[((b * Hkv + g) * S + j) * Dk + c]!;
              s.push(d * scale);
            }
            const m = Math.max(...s);
            const e = s.map((x) => Math.exp(x - m));
            const z = e.reduce((p, x) => p + x, 0);
            for (let c = 0; c < Dv; c++) {
              let o = 0;
              e.forEach((w, j) => (o += (w / z) * va[((b * Hkv + g) * S + j) * Dv + c]!));
              want.push(o);
            }
          }
      assertClose(got, want, 1e-5, 1e-5);
    });

    it('attention at training sizes matches the ts reference, forward and backward (ragged blocks and head dims, cache offset, mask)', () => {
      if (backend.name === 'ts') return; // the reference itself
      const ts = T.loadBackend('ts');
      const [B, H, Hkv, Tq, S, Dk, Dv] = [2, 4, 2, 151, 170, 40, 24];
      const maskVals = Array.from({ length: B * Tq * S }, (_, i) => ((i * 7919) % 13 === 0 ? -Infinity : ((i * 31) % 17) / 17 - 0.5));
      for (let r = 0; r < S; r++) maskVals[(1 * Tq + 5) * S + r] = -Infinity; // one fully masked row: output 0
      for (const variant of ['causal', 'mask'] as const) {
        const run = (be: T.Backend) => {
          const q = T.randn([B, H, Tq, Dk], { backend: be, seed: 21, requiresGrad: true });
          const k = T.randn([B, Hkv, S, Dk], { backend: be, seed: 22, requiresGrad: true });
          const v = T.randn([B, Hkv, S, Dv], { backend: be, seed: 23, requiresGrad: true });
          const opts =
            variant === 'causal' ? { scale: 0.3, causal: true } : { scale: 0.3, mask: T.tensor(maskVals, [B, Tq, S], { backend: be }) };
          const o = T.attention(q, k, v, opts);
          o.backward(T.randn([B, H, Tq, Dv], { backend: be, seed: 24 }));
          return [o, q.grad!, k.grad!, v.grad!].map((x) => x.toArray());
        };
        const got = run(backend);
        const want = run(ts);
        ['out', 'dq', 'dk', 'dv'].forEach((name, i) => assertClose(got[i]!, want[i]!, 2e-5, 1e-4, `${variant} ${name}`));
      }
    });

    it('attention reads token-major, narrowed and broadcast operands in place: same values and gradients as dense copies', () => {
      const [B, H, Hkv, Tq, S, Dk, Dv] = [2, 4, 2, 37, 41, 20, 18];
      const run = (dense: boolean) => {
        // q token-major [B,T,H,Dk]; k a narrow of wider token-major rows; v one head broadcast over the KV heads
        const qT = T.randn([B, Tq, H, Dk], { backend, seed: 31, requiresGrad: true });
        const kW = T.randn([B, S, Hkv, Dk + 5], { backend, seed: 32, requiresGrad: true });
        const v1 = T.randn([B, 1, S, Dv], { backend, seed: 33, requiresGrad: true });
        let q = T.permute(qT, [0, 2, 1, 3]);
        let k = T.permute(T.narrow(kW, 3, 3, Dk), [0, 2, 1, 3]);
        let v = T.expand(v1, [B, Hkv, S, Dv]);
        if (dense) [q, k, v] = [T.contiguous(q), T.contiguous(k), T.contiguous(v)];
        const o = T.attention(q, k, v, { scale: 0.3, causal: true });
        if (!dense) assert.ok(T.permute(o, [0, 2, 1, 3]).isContiguous(), 'token-major queries give a token-major output');
        T.sum(T.mul(o, T.randn([B, H, Tq, Dv], { backend, seed: 34 }))).backward();
        return [o, qT.grad!, kW.grad!, v1.grad!].map((x) => x.toArray());
      };
      const got = run(false);
      const want = run(true);
      ['out', 'dq', 'dk', 'dv'].forEach((name, i) => assertClose(got[i]!, want[i]!, 1e-6, 1e-5, name));
    });

    it('AdamW matches the PyTorch formula, including decay only on ≥ 2-dim tensors and clipping', () => {
      const w = T.tensor([[0.5, -0.25]], undefined, { backend, requiresGrad: true });
      const n = T.tensor([1.5], undefined, { backend, requiresGrad: true });
      w.grad = t([[3, -4]]);
      n.grad = t([0]);
      const opt = new T.AdamW([w, n], { lr: 0.1, weightDecay: 0.5, maxGradNorm: 1 });
      const norm = opt.step();
      assert.equal(norm, 5);
      const gc = [3 / (5 + 1e-6), -4 / (5 + 1e-6)];
      const want = [0.5, -0.25].map((p, i) => p * (1 - 0.1 * 0.5) - (0.1 * gc[i]!) / (Math.abs(gc[i]!) + 1e-8));
      assertClose(w.toArray(), want, 1e-7, 1e-6);
      assert.deepEqual(n.toArray(), [1.5], 'no decay on 1-dim tensors; zero gradient → no move');
    });
  });
}
