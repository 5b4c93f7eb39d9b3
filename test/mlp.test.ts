// End to end on the engine: a 2-layer MLP learns a toy task with SGD, and 1,000 training steps keep memory flat.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as T from '../src/node.js';
import { testBackends } from './helpers.js';

/** Toy task: 4 classes decided by the signs of two inputs (an XOR-like partition a linear model cannot fit). */
function makeData(backend: T.Backend, n: number, rng: T.Rng): { x: T.Tensor; y: T.Tensor } {
  const xs: number[] = [];
  const ys: number[] = [];
  for (let i = 0; i < n; i++) {
    const a = rng.uniform() * 2 - 1;
    const b = rng.uniform() * 2 - 1;
    xs.push(a, b);
    ys.push((a > 0 ? 1 : 0) + (b > 0 ? 2 : 0));
  }
  return { x: T.tensor(xs, [n, 2], { backend }), y: T.intTensor(ys, [n], { backend }) };
}

function mlp(backend: T.Backend, seed: number): { params: T.Tensor[]; forward: (x: T.Tensor) => T.Tensor } {
  const rng = new T.Rng(seed);
  const w1 = T.randn([32, 2], { backend, rng, std: 0.7, requiresGrad: true });
  const b1 = T.zeros([32], { backend, requiresGrad: true });
  const w2 = T.randn([4, 32], { backend, rng, std: 0.2, requiresGrad: true });
  const b2 = T.zeros([4], { backend, requiresGrad: true });
  return {
    params: [w1, b1, w2, b2],
    forward: (x) => T.add(T.linear(T.silu(T.add(T.linear(x, w1), b1)), w2), b2),
  };
}

/** Heap + ArrayBuffer bytes after full collections; backing stores are freed lazily, so let several GCs settle. */
async function memory(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc!;
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

for (const backend of testBackends()) {
  describe(`2-layer MLP [${backend.name}]`, () => {
    it('reaches near-zero loss with SGD and repeats bit for bit', () => {
      const run = (): number[] => {
        const rng = new T.Rng(5);
        const { x, y } = makeData(backend, 64, rng);
        const net = mlp(backend, 11);
        const opt = new T.SGD(net.params, 0.5);
        const losses: number[] = [];
        for (let step = 0; step < 600; step++) {
          opt.zeroGrad();
          const loss = T.crossEntropy(net.forward(x), y);
          loss.backward();
          opt.step();
          losses.push(loss.item());
        }
        return losses;
      };
      const losses = run();
      assert.ok(losses[0]! > 1.2, `initial loss ${losses[0]}`);
      assert.ok(losses.at(-1)! < 0.05, `final loss ${losses.at(-1)}`);
      assert.deepEqual(run(), losses, 'deterministic');
    });

    it('1,000 training steps keep memory flat', async () => {
      assert.ok(typeof (globalThis as { gc?: () => void }).gc === 'function', 'run with --expose-gc (npm test does)');
      const { x, y } = makeData(backend, 256, new T.Rng(1));
      const net = mlp(backend, 2);
      const opt = new T.AdamW(net.params, { lr: 1e-2 });
      const step = (): void => {
        opt.zeroGrad();
        const loss = T.crossEntropy(net.forward(x), y);
        loss.backward();
        opt.step();
      };
      for (let i = 0; i < 100; i++) step();
      const before = await memory();
      for (let i = 0; i < 1000; i++) step();
      const after = await memory();
      // one [256, 64] activation is 64 KiB: leaking even one per step would add 64 MiB over 1,000 steps, while
      // V8's lazily freed backing stores leave a few MiB of noise
      assert.ok(after - before < 16 * 1024 * 1024, `memory grew by ${((after - before) / 1024).toFixed(0)} KiB over 1,000 steps`);
    });
  });
}
