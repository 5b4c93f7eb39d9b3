// The wasm backend's builds and threads: every kernel variant this runtime runs (shared memory or not, relaxed SIMD
// or not) against the ts reference, at shapes large enough that the threaded paths (GEMM tiles, products of
// gemmMany, attention rows) really run on several threads; memory growth mid-call; operands that share a buffer.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import * as T from '../src/node.js';
import type { AttentionParams, Backend, GemmParams } from '../src/backend/backend.js';
import { createWasmBackend, detectVariant, wasmFileName, type WasmBackend, type WasmVariant } from '../src/backend/wasm/index.js';
import { Heap } from '../src/backend/wasm/heap.js';
import { ThreadPool } from '../src/backend/wasm/pool.js';
import { ggufMetadata, ggufTensors } from '../src/io/gguf-deepseek2.js';
import { writeGguf } from '../src/io/gguf.js';
import { assertClose } from './helpers.js';

const ref = T.loadBackend('ts');
const have = detectVariant();
const variants: WasmVariant[] = [
  { shared: false, relaxed: false },
  { shared: true, relaxed: false },
  { shared: false, relaxed: true },
  { shared: true, relaxed: true },
].filter((v) => (!v.shared || have.shared) && (!v.relaxed || have.relaxed));

function backendOf(v: WasmVariant, threads: number, awaitWorkersMs?: number): WasmBackend {
  const module = new WebAssembly.Module(readFileSync(new URL(`../../dist/wasm/${wasmFileName(v)}`, import.meta.url)));
  const workerUrl = new URL('../src/backend/wasm/worker-node.js', import.meta.url);
  return createWasmBackend(module, v, {
    threads,
    ...(awaitWorkersMs ? { awaitWorkersMs } : {}),
    spawnWorker: () => {
      const w = new Worker(workerUrl);
      w.unref();
      return w;
    },
  });
}

function rand(n: number, seed: number): Float32Array {
  const r = new T.Rng(seed);
  return Float32Array.from({ length: n }, () => r.uniform() * 2 - 1);
}

function gemmCase(M: number, N: number, K: number, seed: number, transB: boolean, beta: number, batch = 1): GemmParams {
  return {
    batch, M, N, K,
    a: rand(batch * M * K, seed), aOffset: 0, aBatchStride: M * K, aRowStride: K, aColStride: 1,
    b: rand(batch * K * N, seed + 1), bOffset: 0, bBatchStride: K * N, bRowStride: transB ? 1 : N, bColStride: transB ? K : 1,
    c: rand(batch * M * N, seed + 2), cOffset: 0, cBatchStride: M * N, alpha: 0.75, beta,
  }; // prettier-ignore
}
const clone = (p: GemmParams): GemmParams => ({ ...p, c: p.c.slice() });

/** Until the workers have attached (they start asynchronously). */
async function settle(): Promise<void> {
  await new Promise((r) => setTimeout(r, 300));
}

describe('wasm builds and threads', () => {
  it('a synchronous load in Node returns with its workers started (its first calls are not on one thread)', () => {
    const w = T.loadBackend('wasm') as WasmBackend;
    assert.equal(w.readyThreads(), w.threads!());
    const b = backendOf(have, 2, 5000);
    assert.equal(b.readyThreads(), have.shared ? 2 : 1);
  });

  it('runs here: at least the shared-memory build (Node always has SharedArrayBuffer)', () => {
    assert.ok(
      variants.some((v) => v.shared),
      JSON.stringify(have),
    );
  });

  for (const v of variants) {
    const name = `${v.shared ? 'shared' : 'unshared'}${v.relaxed ? ', relaxed SIMD' : ''}`;
    it(`${name}: GEMM, gemmMany and attention on ${v.shared ? 'two threads' : 'one thread'} equal the reference`, async () => {
      const b = backendOf(v, 2);
      assert.equal(b.threads!(), v.shared ? 2 : 1);
      await settle();
      const shapes = [
        [300, 257, 190, true, 0],
        [129, 520, 300, false, 1],
        // GEMV shapes (M ≤ 4: no packing), both layouts of B, with and without beta, one of them large enough for threads
        [1, 700, 513, true, 0],
        [3, 701, 300, false, 1],
        [4, 129, 77, true, 1],
        [2, 70, 33, false, 0],
        [1, 4096, 1024, true, 1],
      ] as const;
      for (const [M, N, K, tr, beta] of shapes) {
        const p = gemmCase(M, N, K, M, tr, beta);
        const q = clone(p);
        b.gemm(p);
        ref.gemm(q);
        assertClose(p.c, q.c, 1e-4, 1e-4, `gemm ${M}×${N}×${K}`);
      }
      // batched, with the batches summed into one C (cBatchStride 0, beta 1): one item runs them in order
      const s = { ...gemmCase(64, 300, 96, 7, false, 1, 3), cBatchStride: 0, c: rand(64 * 300, 9) };
      const s2 = clone(s);
      b.gemm(s);
      ref.gemm(s2);
      assertClose(s.c, s2.c, 1e-4, 1e-4, 'summed batches');
      // gemmMany: 24 experts' products, outputs side by side in one buffer
      const rows = Array.from({ length: 24 }, (_, e) => 40 + e);
      const at = rows.map((_, e) => rows.slice(0, e).reduce((s, r) => s + r * 64, 0));
      const out = new Float32Array(rows.reduce((s, r) => s + r * 64, 0));
      const many = rows.map((M, e) => ({ ...gemmCase(M, 64, 128, 100 + e, true, 0), c: out, cOffset: at[e]! }));
      const want = new Float32Array(out.length);
      b.gemmMany(many);
      ref.gemmMany(many.map((p) => ({ ...p, c: want })));
      assertClose(out, want, 1e-4, 1e-4, 'gemmMany');
      // attention over 2×4 heads of 160 rows, q/k/v read in the token-major layout of one fused buffer
      const [B, H, Tn, Dk, Dv] = [2, 4, 160, 24, 16];
      const row = H * (2 * Dk + Dv);
      const qkv = rand(B * Tn * row, 5);
      const L = {
        q: [Tn * row, 2 * Dk + Dv, row] as const,
        k: [Tn * row, 2 * Dk + Dv, row] as const,
        v: [Tn * row, 2 * Dk + Dv, row] as const,
        out: [H * Tn * Dv, Tn * Dv, Dv] as const,
        dout: [H * Tn * Dv, Tn * Dv, Dv] as const,
        dq: [Tn * row, 2 * Dk + Dv, row] as const,
        dk: [Tn * row, 2 * Dk + Dv, row] as const,
        dv: [Tn * row, 2 * Dk + Dv, row] as const,
      };
      const ap = (buf: Float32Array): AttentionParams => ({
        B, H, Hkv: H, T: Tn, S: Tn, Dk, Dv, scale: 0.2, causal: true,
        q: buf, k: buf.subarray(Dk), v: buf.subarray(2 * Dk), mask: null, maskBatch: 1, layout: L,
      }); // prettier-ignore
      const o1 = new Float32Array(B * H * Tn * Dv);
      const o2 = new Float32Array(o1.length);
      const l1 = new Float32Array(B * H * Tn);
      const l2 = new Float32Array(l1.length);
      b.attention(ap(qkv), o1, l1);
      ref.attention(ap(qkv), o2, l2);
      assertClose(o1, o2, 1e-5, 1e-4, 'attention out');
      assertClose(l1, l2, 1e-5, 1e-5, 'attention lse');
      // backward into one fused dqkv buffer: the three outputs interleave row by row and must not overwrite each other
      const dout = rand(o1.length, 6);
      const g1 = new Float32Array(qkv.length);
      const g2 = new Float32Array(qkv.length);
      b.attentionBackward(ap(qkv), o2, l2, dout, g1, g1.subarray(Dk), g1.subarray(2 * Dk));
      ref.attentionBackward(ap(qkv), o2, l2, dout, g2, g2.subarray(Dk), g2.subarray(2 * Dk));
      assertClose(g1, g2, 1e-5, 1e-4, 'attention dq/dk/dv');
    });
  }

  it('grows its memory for operands larger than it has, and keeps working after', () => {
    const b = backendOf(have, 1);
    const p = gemmCase(2000, 1500, 64, 3, true, 0); // ~24 MB of operands: the 1 MB initial memory grows
    const q = clone(p);
    b.gemm(p);
    ref.gemm(q);
    assertClose(p.c, q.c, 1e-4, 1e-4, 'large gemm');
    const x = rand(4096, 2);
    const y = new Float32Array(4096);
    const y2 = new Float32Array(4096);
    b.softmax(x, y, 4, 1024, false);
    ref.softmax(x, y2, 4, 1024, false);
    assertClose(y, y2, 1e-6, 1e-5, 'softmax after growth');
  });

  it('pinned weights: read in place, kept equal through AdamW, released by free and by the garbage collector', async () => {
    const b = backendOf(have, 2);
    const heapOf = (x: Backend): { residentBytes(): number } => (x as unknown as { __heap: { residentBytes(): number } }).__heap;
    const w = rand(256 * 300, 11);
    b.pin!(w);
    assert.ok(heapOf(b).residentBytes() >= w.byteLength);
    const x = rand(64 * 300, 12);
    const mk = (c: Float32Array): GemmParams => ({
      batch: 1, M: 64, N: 256, K: 300, a: x, aOffset: 0, aBatchStride: 0, aRowStride: 300, aColStride: 1,
      b: w, bOffset: 0, bBatchStride: 0, bRowStride: 1, bColStride: 300, c, cOffset: 0, cBatchStride: 0, alpha: 1, beta: 0,
    }); // prettier-ignore
    const c1 = new Float32Array(64 * 256);
    const c2 = new Float32Array(64 * 256);
    b.gemm(mk(c1));
    ref.gemm(mk(c2));
    assertClose(c1, c2, 1e-4, 1e-4, 'product with a pinned weight');
    // AdamW writes the pinned buffer in its resident copy and copies it out: the array and the copy stay equal
    const g = rand(w.length, 13);
    const w2 = w.slice();
    const opt = { n: w.length, grad: g, lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 1, gradScale: 1 };
    b.adamw({ ...opt, param: w, m: new Float32Array(w.length), v: new Float32Array(w.length) });
    ref.adamw({ ...opt, param: w2, m: new Float32Array(w.length), v: new Float32Array(w.length) });
    assertClose(w, w2, 1e-6, 1e-5, 'AdamW on a pinned buffer');
    b.gemm(mk(c1));
    ref.gemm({ ...mk(c2), b: w2 });
    assertClose(c1, c2, 1e-4, 1e-4, 'product after the update reads the updated weight');
    b.free(w);
    assert.equal(heapOf(b).residentBytes(), 0);
    // a pinned buffer nobody holds is released when collected
    b.pin!(rand(1 << 16, 14));
    assert.ok(heapOf(b).residentBytes() > 0);
    for (let i = 0; i < 50 && heapOf(b).residentBytes() > 0; i++) {
      (globalThis as { gc?: () => void }).gc?.();
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(heapOf(b).residentBytes(), 0, 'released after collection (the suite runs with --expose-gc)');
  });

  it('a pin the memory cannot hold fails alone: the heap stages calls as before', () => {
    const heap = new Heap(new WebAssembly.Memory({ initial: 3, maximum: 3 })); // 192 KiB: 64 KiB of room
    assert.throws(() => heap.pin(new Float32Array(1 << 20)), /more than WebAssembly allows/);
    assert.equal(heap.residentBytes(), 0);
    heap.begin();
    assert.ok(heap.reserve(4096) >= 2 * 65536);
  });

  it('freed resident ranges merge with their neighbours, so a larger buffer fits where two smaller ones were', () => {
    const heap = new Heap(new WebAssembly.Memory({ initial: 8 }));
    const k = 4096; // floats: 16 KiB a buffer
    const [a, b, c, d] = [1, 1, 1, 1].map(() => new Float32Array(k));
    for (const x of [a, b, c, d]) heap.pin(x!);
    const end = heap.residentEnd();
    heap.unpin(a!);
    heap.unpin(c!);
    heap.unpin(b!); // a, b, c: one hole of 48 KiB below d
    assert.equal(heap.residentBytes(), 4 * k);
    const big = new Float32Array(3 * k);
    heap.pin(big);
    assert.equal(heap.residentEnd(), end, 'the 48 KiB buffer took the merged hole, not new memory');
    heap.unpin(d!);
    heap.unpin(big); // everything free: merged down to the bottom
    assert.equal(heap.residentBytes(), 0);
    assert.equal(heap.residentEnd(), 2 * 65536);
  });

  it('a GGUF loaded for inference has its weights resident, like a safetensors checkpoint', () => {
    const b = backendOf(have, 1);
    const heapOf = (x: Backend): { residentBytes(): number } => (x as unknown as { __heap: { residentBytes(): number } }).__heap;
    const src = T.loadModel('test/golden/lite', { trainable: false, backend: ref });
    const path = join(mkdtempSync(join(tmpdir(), 'dsv2-wasm-')), 'lite.gguf');
    writeGguf(
      path,
      ggufMetadata(src.config, null, 'f32', 'test'),
      ggufTensors(src.config, (n) => src.params.get(n).f32(), 'f32'),
    );
    T.loadModel(path, { trainable: false, backend: b });
    assert.ok(heapOf(b).residentBytes() > 0);
  });
});

/**
 * A module with the kernels' imports (a shared one-page memory, AssemblyScript's abort) whose run(kernel, pb, tid)
 * traps when pb is not 0 and tid is (a worker's share), and returns otherwise.
 */
const TRAP_MODULE = Uint8Array.from([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
  0x01, 0x0e, 0x02, 0x60, 0x04, 0x7f, 0x7f, 0x7f, 0x7f, 0x00, 0x60, 0x03, 0x7f, 0x7f, 0x7f, 0x00, // types
  0x02, 0x1c, 0x02, // imports: env.memory (shared, 1..1 pages), env.abort
  0x03, 0x65, 0x6e, 0x76, 0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x02, 0x03, 0x01, 0x01,
  0x03, 0x65, 0x6e, 0x76, 0x05, 0x61, 0x62, 0x6f, 0x72, 0x74, 0x00, 0x00,
  0x03, 0x02, 0x01, 0x01, // one function of type 1
  0x07, 0x07, 0x01, 0x03, 0x72, 0x75, 0x6e, 0x00, 0x01, // export "run"
  // if (pb && tid) unreachable
  0x0a, 0x0d, 0x01, 0x0b, 0x00, 0x20, 0x01, 0x20, 0x02, 0x71, 0x04, 0x40, 0x00, 0x0b, 0x0b,
]); // prettier-ignore

describe('wasm thread pool', () => {
  it('a share that traps in a worker is raised by the caller (no hang), and the worker goes on serving', async () => {
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    const pool = new ThreadPool(
      () => {
        const w = new Worker(new URL('../src/backend/wasm/worker-node.js', import.meta.url));
        w.unref();
        return w;
      },
      1,
      new WebAssembly.Module(TRAP_MODULE),
      memory,
    );
    for (let i = 0; i < 200 && pool.ready() < 1; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(pool.ready(), 1, 'the worker attached');
    let own = 0;
    assert.throws(() => pool.run(7, 1, 2, () => own++), /wasm kernel 7 trapped in a worker thread/);
    assert.equal(own, 1, 'the caller ran its share');
    pool.run(7, 0, 2, () => own++); // the same worker, a share that does not trap
    assert.equal(own, 2);
    // the caller's own share traps: raised once the worker has finished, and the next call runs normally
    assert.throws(() => pool.run(7, 0, 2, () => {
      throw new Error('caller share trapped');
    }), /caller share trapped/); // prettier-ignore
    pool.run(7, 0, 2, () => own++);
    assert.equal(own, 3);
    pool.terminate();
  });
});
