// Tensor storage, views, RNG determinism, dtype conversion and autograd mechanics.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import * as T from '../src/node.js';
import { testBackends } from './helpers.js';

describe('rng', () => {
  it('repeats bit for bit from a seed, and differs across seeds', () => {
    const a = new T.Rng(42);
    const b = new T.Rng(42);
    const xs = Array.from({ length: 1000 }, () => a.normal());
    const ys = Array.from({ length: 1000 }, () => b.normal());
    assert.deepEqual(xs, ys);
    assert.notDeepEqual(
      xs.slice(0, 10),
      Array.from({ length: 10 }, () => new T.Rng(43).normal()),
    );
  });

  it('has the right moments and a restorable state', () => {
    const r = new T.Rng(7);
    const n = 20000;
    let s = 0;
    let s2 = 0;
    for (let i = 0; i < n; i++) {
      const x = r.normal();
      s += x;
      s2 += x * x;
    }
    assert.ok(Math.abs(s / n) < 0.03, `mean ${s / n}`);
    assert.ok(Math.abs(s2 / n - 1) < 0.04, `var ${s2 / n}`);
    const st = r.getState();
    const next = [r.uniform(), r.normal(), r.nextU32()];
    r.setState(st);
    assert.deepEqual([r.uniform(), r.normal(), r.nextU32()], next);
    for (let i = 0; i < 1000; i++) {
      const u = r.uniform();
      assert.ok(u >= 0 && u < 1);
    }
  });
});

describe('dtype conversion', () => {
  it('bf16 ↔ f32 round-trips bf16-representable values and rounds to nearest even', () => {
    const vals = new Float32Array([0, -0, 1, -2.5, 3.140625, 65280, Infinity, -Infinity, 2 ** -130]);
    assert.deepEqual(Array.from(T.bf16ToF32(T.f32ToBf16(vals))), Array.from(vals));
    // 1 + 2^-8 sits exactly halfway between two bf16 values: ties go to the even one (1.0)
    assert.deepEqual(Array.from(T.bf16ToF32(T.f32ToBf16(new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8])))), [1, 1 + 2 ** -6]);
    assert.ok(Number.isNaN(T.bf16ToF32(T.f32ToBf16(new Float32Array([NaN])))[0]!));
  });

  it('f16 ↔ f32 handles normals, subnormals, overflow and specials', () => {
    const vals = new Float32Array([0, 1, -2, 0.5, 65504, 2 ** -24, 2 ** -14, Infinity]);
    assert.deepEqual(Array.from(T.f16ToF32(T.f32ToF16(vals))), Array.from(vals));
    assert.equal(T.f16ToF32(T.f32ToF16(new Float32Array([70000])))[0], Infinity);
    assert.ok(Number.isNaN(T.f16ToF32(T.f32ToF16(new Float32Array([NaN])))[0]!));
    assert.equal(T.f16ToF32(T.f32ToF16(new Float32Array([1 + 2 ** -11])))[0], 1, 'tie to even');
  });
});

for (const backend of testBackends()) {
  describe(`tensor [${backend.name}]`, () => {
    const t = (v: number[] | number[][], shape?: number[]): T.Tensor => T.tensor(v, shape, { backend });

    it('creates from nested arrays and typed arrays; rejects bad shapes', () => {
      assert.deepEqual(
        t([
          [1, 2],
          [3, 4],
        ]).shape,
        [2, 2],
      );
      assert.deepEqual(T.tensor(new Float32Array(6), [2, 3], { backend }).shape, [2, 3]);
      assert.throws(() => T.tensor([1, 2, 3], [2, 2], { backend }), /do not fill shape/);
      assert.throws(() => T.zeros([2, -1], { backend }), /invalid shape/);
      assert.throws(() => T.intTensor([1.5], undefined, { backend }), /integers/);
    });

    it('views share storage; contiguous copies only when needed', () => {
      const x = t([
        [1, 2, 3],
        [4, 5, 6],
      ]);
      const tr = x.transpose();
      assert.equal(tr.data, x.data);
      assert.equal(tr.isContiguous(), false);
      assert.deepEqual(tr.toNested(), [
        [1, 4],
        [2, 5],
        [3, 6],
      ]);
      const c = tr.contiguous();
      assert.notEqual(c.data, x.data);
      assert.equal(x.contiguous(), x);
      const n = x.narrow(1, 1, 2);
      assert.equal(n.data, x.data);
      assert.deepEqual(n.toNested(), [
        [2, 3],
        [5, 6],
      ]);
      assert.deepEqual(x.reshape([3, -1]).toNested(), [
        [1, 2],
        [3, 4],
        [5, 6],
      ]);
      assert.deepEqual(t([7, 8]).reshape([2, 1]).expand([2, 3]).toNested(), [
        [7, 7, 7],
        [8, 8, 8],
      ]);
      assert.deepEqual(T.permute(T.zeros([2, 3, 4], { backend }), [2, 0, 1]).shape, [4, 2, 3]);
      assert.deepEqual(T.unsqueeze(x, 0).shape, [1, 2, 3]);
      assert.deepEqual(T.squeeze(T.unsqueeze(x, 2), 2).shape, [2, 3]);
      assert.throws(() => x.reshape([4, 2]), /cannot view/);
      assert.throws(() => x.narrow(1, 2, 2), /outside axis/);
      assert.throws(() => T.permute(x, [0, 0]), /repeat/);
    });

    it('a reshape of a non-contiguous view copies and still back-propagates', () => {
      const x = T.randn([3, 4], { backend, seed: 1, requiresGrad: true });
      const y = x.transpose().reshape([12]);
      T.sum(
        T.mul(
          y,
          T.tensor(
            Array.from({ length: 12 }, (_, i) => i),
            [12],
            { backend },
          ),
        ),
      ).backward();
      // d/dx[i][j] = index of (j, i) in the transposed flattening = j·3 + i
      const want: number[] = [];
      for (let i = 0; i < 3; i++) for (let j = 0; j < 4; j++) want.push(j * 3 + i);
      assert.deepEqual(x.grad!.toArray(), want);
    });

    it('autograd: accumulation across uses and calls, noGrad, detach, freed graph', () => {
      const x = t([1, 2, 3]).requireGrad();
      const y = T.sum(T.add(T.mul(x, x), x)); // Σ x² + x  → 2x + 1
      y.backward();
      assert.deepEqual(x.grad!.toArray(), [3, 5, 7]);
      T.sum(x).backward(); // accumulates
      assert.deepEqual(x.grad!.toArray(), [4, 6, 8]);
      assert.throws(() => y.backward(), /already freed/);
      const z = T.noGrad(() => T.mul(x, 2));
      assert.equal(z.requiresGrad, false);
      assert.equal(z.node, null);
      const d = x.detach();
      assert.equal(d.requiresGrad, false);
      assert.equal(d.data, x.data);
      assert.throws(() => T.sum(d).backward(), /does not require grad/);
      assert.throws(() => T.mul(x, 2).backward(), /explicit gradient/);
      const w = t([1, 2]).requireGrad();
      const out = T.mul(w, 3);
      out.backward(t([1, 1]), { retainGraph: true });
      out.backward(t([1, 1]));
      assert.deepEqual(w.grad!.toArray(), [6, 6]);
    });

    it('a leaf gradient never aliases another buffer', () => {
      const a = t([1, 2]).requireGrad();
      const b = t([3, 4]).requireGrad();
      T.sum(T.add(a, b)).backward();
      assert.notEqual(a.grad!.data, b.grad!.data);
      a.grad!.data[0] = 100;
      assert.equal(b.grad!.toArray()[0], 1);
    });

    it('zeroGrad keeps the buffer: the next backward overwrites it, writes weight gradients in place, and untouched grads read 0', () => {
      const rng = new T.Rng(5);
      const x = T.randn([5, 3], { backend, rng });
      const x2 = T.randn([4, 3], { backend, rng });
      const ids = T.intTensor([2, 0, 2], [3], { backend });
      // w is used three times, e through an embedding, g by a grouped product with an empty group; `unused` by nothing
      const run = ({ w, e, g }: { w: T.Tensor; e: T.Tensor; g: T.Tensor[] }): void => {
        const y = T.add(T.sum(T.mul(T.linear(x, w), T.linear(x, w))), T.sum(T.linear(x2, w)));
        const z = T.sum(T.mul(T.embedding(e, ids), T.embedding(e, ids)));
        const h = T.sum(T.mul(T.groupedLinear(x, [3, 0, 2], g), 1.5));
        T.add(T.add(y, z), h).backward();
      };
      const make = () => {
        const r = new T.Rng(9);
        const w = T.randn([2, 3], { backend, rng: r }).requireGrad();
        const e = T.randn([4, 2], { backend, rng: r }).requireGrad();
        const g = [0, 1, 2].map(() => T.randn([2, 3], { backend, rng: r }).requireGrad());
        const unused = T.randn([3], { backend, rng: r }).requireGrad();
        return { w, e, g, unused, all: [w, e, ...g, unused] };
      };
      const fresh = make();
      run(fresh);
      const reused = make();
      for (const p of reused.all) p.grad = T.full(p.shape, 1e3, { backend }); // stale contents
      T.zeroGrad(reused.all);
      const before = reused.all.map((p) => p.gradBuffer()!.buf);
      run(reused);
      reused.all.forEach((p, i) => {
        assert.equal(p.gradBuffer()!.buf, before[i], 'the same buffer is reused');
        const want = fresh.all[i]!.grad?.toArray() ?? new Array<number>(p.size).fill(0);
        const got = p.grad!.toArray();
        got.forEach((v, j) => assert.ok(Math.abs(v - want[j]!) < 1e-5, `param ${i}[${j}]: ${v} vs ${want[j]}`));
      });
      assert.deepEqual(reused.g[1]!.grad!.toArray(), [0, 0, 0, 0, 0, 0]);
      // a second backward without zeroGrad adds
      run(reused);
      const twice = reused.w.grad!.toArray();
      fresh.w.grad!.toArray().forEach((v, j) => assert.ok(Math.abs(twice[j]! - 2 * v) < 1e-4));
    });

    it('a weight serving two groups of one grouped product gets both contributions after zeroGrad (products big enough to run in parallel)', () => {
      const x = T.randn([64, 96], { backend, seed: 41 });
      const dy = T.randn([64, 80], { backend, seed: 42 });
      const grads = (reuse: boolean) => {
        const a = T.randn([80, 96], { backend, seed: 43 }).requireGrad();
        const b = T.randn([80, 96], { backend, seed: 44 }).requireGrad();
        if (reuse) {
          a.grad = T.full(a.shape, 7, { backend });
          b.grad = T.full(b.shape, 7, { backend });
          T.zeroGrad([a, b]);
        }
        // a serves groups 0 and 2; the larger group 2 may run first
        T.sum(T.mul(T.groupedLinear(x, [16, 16, 32], [a, b, a]), dy)).backward();
        return [a.grad!.toArray(), b.grad!.toArray()];
      };
      const fresh = grads(false);
      const reused = grads(true);
      for (let i = 0; i < 2; i++)
        fresh[i]!.forEach((v, j) => assert.ok(Math.abs(v - reused[i]![j]!) < 1e-3, `weight ${i}[${j}]: ${reused[i]![j]} vs ${v}`));
    });

    it('dispose releases storage and later use fails clearly', () => {
      const x = t([1, 2, 3]);
      const v = x.narrow(0, 0, 2);
      x.dispose();
      assert.throws(() => v.f32(), /disposed/);
    });

    it('mixing backends or dtypes fails with a clear message', () => {
      assert.throws(() => T.add(t([1]), T.intTensor([1], undefined, { backend })), /float32/);
      assert.throws(() => T.matmul(t([1, 2]), t([1, 2])), /≥ 2 dims/);
      assert.throws(() => T.matmul(t([[1, 2]]), t([[1, 2]])), /inner dims/);
    });
  });
}

describe('backend registry', () => {
  it('names unknown and unavailable backends clearly', () => {
    assert.throws(() => T.loadBackend('cuda'), /unknown backend 'cuda' \(known: ts, native, wasm\)/);
    if (!T.availableBackends().includes('wasm')) assert.throws(() => T.loadBackend('wasm'), /not available in this build/);
    assert.ok(T.availableBackends().includes('ts'));
  });
});

for (const backend of testBackends()) {
  describe(`buffer arena [${backend.name}]`, () => {
    it('recycles one step’s buffers for the next, keeps what it is told to keep, and detaches stale tensors', () => {
      const arena = new T.BufferArena(backend);
      const x = T.randn([64, 128], { backend, seed: 1 });
      const w = T.randn([96, 128], { backend, seed: 2, requiresGrad: true });
      const step = (): { loss: number; h: T.Tensor } =>
        T.withArena(arena, () => {
          if (w.grad) T.noGrad(() => backend.fill(w.grad!.f32(), w.grad!.size, 0));
          const h = T.linear(x, w); // [64, 96]: pooled
          const loss = T.sum(T.square(h));
          loss.backward();
          return { loss: loss.item(), h };
        });
      const a = step();
      const gradAfter1 = w.grad!.toArray();
      const held = arena.bytes;
      assert.ok(held > 0);
      arena.reset([w.grad!]); // w.grad leaves the arena for good
      assert.throws(() => a.h.toArray(), /belongs to an earlier step/);
      assert.deepEqual(w.grad!.toArray(), gradAfter1, 'a kept buffer is not recycled');
      const b = step();
      assert.equal(b.loss, a.loss);
      assert.deepEqual(w.grad!.toArray(), gradAfter1);
      assert.ok(arena.bytes <= held, `the second step reuses the first one's buffers (${arena.bytes} > ${held} bytes)`);
    });

    it('asks the backend for huge pages over the heap at each reset (native on Linux), with no effect on values', () => {
      const calls: boolean[] = [];
      const spy: T.Backend = Object.create(backend) as T.Backend;
      const native = backend.adviseHugePages?.bind(backend);
      spy.adviseHugePages = (collapse: boolean): number => {
        calls.push(collapse);
        return native ? native(collapse) : 0;
      };
      const arena = new T.BufferArena(spy);
      const x = T.randn([512, 512], { backend: spy, seed: 3 });
      const y1 = T.withArena(arena, () => T.matmul(x, x).toArray());
      arena.reset();
      const y2 = T.withArena(arena, () => T.matmul(x, x).toArray());
      arena.reset();
      assert.deepEqual(calls, [true, true]);
      assert.deepEqual(y2, y1);
      if (backend.name === 'native' && process.platform === 'linux') {
        const heap = T.withArena(arena, () => T.zeros([4 << 20], { backend: spy })); // 16 MB: whole 2 MiB pages of heap
        arena.reset();
        assert.equal(heap.size, 4 << 20);
        assert.ok(backend.adviseHugePages!(true) > 0, 'the heap was advised');
        const thp = readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8');
        if (/\[(always|madvise)\]/.test(thp)) {
          const huge = Number(/AnonHugePages:\s+(\d+)/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))?.[1] ?? 0);
          assert.ok(huge > 0, 'some of the heap is in huge pages');
        }
      }
    });

    it('hands reused buffers back zero-filled where asked, and serves only its own backend', () => {
      const arena = new T.BufferArena(backend);
      T.withArena(arena, () => [0, 1, 2].map(() => T.full([100, 100], 7, { backend })));
      const held = arena.bytes;
      arena.reset();
      const zs = T.withArena(arena, () => [0, 1, 2].map(() => T.zeros([100, 100], { backend })));
      assert.equal(arena.bytes, held);
      for (const z of zs) assert.ok(z.toArray().every((v) => v === 0));
      if (backend.name !== 'ts') {
        const ts = T.loadBackend('ts');
        T.withArena(arena, () => T.zeros([100, 100], { backend: ts }));
        assert.equal(arena.bytes, held);
      }
    });
  });
}

describe('module structure', () => {
  it('src/tensor does not import src/autograd at run time (no tensor ↔ autograd circle); the methods come from autograd', async () => {
    const { dirname, resolve } = await import('node:path');
    const { spawnSync } = await import('node:child_process');
    // the runtime imports (type-only ones are erased by the compiler) reachable from the compiled tensor module
    const start = resolve('dist/src/tensor/tensor.js');
    const seen = new Set<string>([start]);
    const todo = [start];
    while (todo.length) {
      const f = todo.pop()!;
      for (const m of readFileSync(f, 'utf8').matchAll(/^(?:import|export)\s[^'"]*?from\s+'(\.[^']+)'|^import\s+'(\.[^']+)'/gm)) {
        const dep = resolve(dirname(f), m[1] ?? m[2]!);
        if (seen.has(dep)) continue;
        seen.add(dep);
        todo.push(dep);
      }
    }
    assert.deepEqual(
      [...seen].filter((f) => f.includes('/autograd/')),
      [],
    );
    // alone, the Tensor has no op methods; the library's entry installs them
    const alone = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "const m = await import('./dist/src/tensor/tensor.js'); console.log(typeof m.Tensor.prototype.reshape)",
      ],
      { encoding: 'utf8' },
    );
    assert.equal(alone.stdout.trim(), 'undefined', alone.stderr);
    const x = T.randn([2, 3], { seed: 1 });
    assert.deepEqual(x.reshape([3, 2]).shape, [3, 2]);
    assert.deepEqual(x.T.shape, [3, 2]);
  });
});
