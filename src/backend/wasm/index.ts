// The `wasm` backend: AssemblyScript SIMD128 kernels (./assembly, built by scripts/build-wasm.js into
// dist/wasm/) behind the Backend contract, with the `ts` reference for the kernels that stay in JavaScript.
//
// What runs in WebAssembly: GEMM (packed 4×8 register tiles; relaxed-SIMD FMA where the runtime has it),
// causal attention forward and backward, RMSNorm, softmax, SwiGLU, cross-entropy, RoPE, AdamW and Σx².
// GEMM and attention also run on worker threads sharing the memory (./pool.ts) when it is shared.
// What stays in the reference: strided copies and broadcasts, reductions, the gathers and scatters (row copies that
// JavaScript already does at memory speed: staging them into linear memory would only add copies), top-k,
// argsort, paged decode attention (mlaDecode's too: only its two products run here) and the quantized products.
//
// This module is browser-safe: it is handed a compiled module and, for threads, a way to start a worker.
import type { AdamWParams, AttentionParams, Backend, F32, GemmParams, I32 } from '../backend.js';
import { denseAttentionLayout } from '../backend.js';
import { createTsBackend } from '../ts/index.js';
import { mlaDecodeWith } from '../ts/paged.js';
import { Heap, PARAMS_AT, whole, type Operand } from './heap.js';
import { ThreadPool, wasmAbort, type WorkerHandle } from './pool.js';

/** Threaded kernels by number (the `run` export of ./assembly/index.ts). */
const KERNEL = { gemm: 1, attention: 2, attentionBackward: 3, gemmMany: 4, gemv: 5 } as const;

/** Which build of the kernels: shared memory (threads) and relaxed SIMD (FMA) are separate modules. */
export interface WasmVariant {
  shared: boolean;
  relaxed: boolean;
}

export const wasmFileName = (v: WasmVariant): string => `kernels${v.relaxed ? '-relaxed' : ''}${v.shared ? '-shared' : ''}.wasm`;

/** Memory pages: the module's initial size, and the 4 GiB a 32-bit memory can reach. */
const INITIAL_PAGES = 17;
const MAX_PAGES = 65536;

/** A module using f32x4.relaxed_madd: whether this runtime validates relaxed SIMD. */
function relaxedModule(): Uint8Array<ArrayBuffer> {
  const v128 = (x: number): number[] => [0xfd, 0x0c, ...new Array<number>(16).fill(x)];
  const body = [0x00, ...v128(1), ...v128(2), ...v128(3), 0xfd, 0x85, 0x02, 0x0b];
  const code = [0x01, body.length, ...body];
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b,
    0x03, 0x02, 0x01, 0x00,
    0x0a, code.length, ...code,
  ]); // prettier-ignore
}

/** The variant this runtime can run: threads need a shared memory, FMA needs relaxed SIMD. */
export function detectVariant(): WasmVariant {
  let shared = false;
  try {
    const isolated = (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated;
    if (typeof SharedArrayBuffer !== 'undefined' && isolated !== false) {
      new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
      shared = true;
    }
  } catch {
    shared = false;
  }
  return { shared, relaxed: WebAssembly.validate(relaxedModule()) };
}

/** Whether this runtime runs WebAssembly SIMD at all (every current browser and Node ≥ 16 do). */
export function hasWasmSimd(): boolean {
  // (func (result v128) v128.const 0)
  const bytes = Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b, 0x03, 0x02, 0x01, 0x00,
    0x0a, 0x16, 0x01, 0x14, 0x00, 0xfd, 0x0c, ...new Array<number>(16).fill(0), 0x0b,
  ]); // prettier-ignore
  return typeof WebAssembly === 'object' && WebAssembly.validate(bytes);
}

export interface WasmBackendOptions {
  /** Threads the kernels may use (the caller included); needs a shared-memory variant and `spawnWorker`. */
  threads?: number;
  /** Start one worker that runs src/backend/wasm/worker-*.ts. */
  spawnWorker?: () => WorkerHandle;
  /**
   * Wait up to this many milliseconds for the workers to start before returning (blocking, where the thread may
   * block: Node, a Web Worker; a page's main thread returns at once and its calls use the workers once they are up).
   */
  awaitWorkersMs?: number;
}

type Exports = Record<string, (...args: number[]) => number>;

/** The wasm backend, with what its thread pool has running now. */
export interface WasmBackend extends Backend {
  /** Threads that would run a call now: the caller and the started workers, at most threads(). */
  readyThreads(): number;
}

export function createWasmBackend(module: WebAssembly.Module, variant: WasmVariant, opts: WasmBackendOptions = {}): WasmBackend {
  const memory = new WebAssembly.Memory({ initial: INITIAL_PAGES, maximum: MAX_PAGES, shared: variant.shared });
  const inst = new WebAssembly.Instance(module, { env: { memory, abort: wasmAbort } });
  const x = inst.exports as unknown as Exports;
  const heap = new Heap(memory);
  const ref = createTsBackend();
  const want = Math.max(1, Math.floor(opts.threads ?? 1));
  const pool = variant.shared && opts.spawnWorker && want > 1 ? new ThreadPool(opts.spawnWorker, want - 1, module, memory) : null;
  if (pool && opts.awaitWorkersMs) pool.awaitReady(opts.awaitWorkersMs);
  let threads = pool ? want : 1;
  const gemmScratch = x['gemmScratchBytes']!();

  /** Stage, run, copy back: the shape of every call. */
  const call = <T>(ops: readonly Operand[], run: (ptrs: number[]) => T): T => {
    heap.begin();
    const ptrs = heap.stage(ops);
    const r = run(ptrs);
    heap.finish();
    return r;
  };

  /** Run a threaded kernel whose block is filled: `work` is its size in flops, to keep small calls on one thread. */
  const runThreaded = (kernel: number, scratchPerThread: number, work: number): void => {
    const nt = pool && work >= 1 << 21 ? threads : 1;
    const per = Math.ceil(scratchPerThread / 64) * 64;
    const base = heap.reserve(per * nt);
    heap.i32[16] = 0; // the work counter
    heap.i32[17] = base;
    heap.i32[18] = per;
    if (nt === 1 || !pool) x['run']!(kernel, PARAMS_AT, 0);
    else pool.run(kernel, PARAMS_AT, nt, (tid) => x['run']!(kernel, PARAMS_AT, tid));
  };

  /** The staged operands of one product (A, B read; C written whole or read-modified). */
  const gemmOperands = (p: GemmParams): Operand[] => {
    const { batch, M, N, K } = p;
    const extent = (bs: number, rs: number, cs: number, rows: number, cols: number): number =>
      rows === 0 || cols === 0 ? 0 : (batch - 1) * bs + (rows - 1) * rs + (cols - 1) * cs + 1;
    // C is overwritten entirely only when beta is 0 and the batches tile it without gaps
    const cDense = p.beta === 0 && (batch === 1 || p.cBatchStride === M * N);
    return [
      { arr: p.a, lo: p.aOffset, n: extent(p.aBatchStride, p.aRowStride, p.aColStride, M, K), access: 'r' },
      { arr: p.b, lo: p.bOffset, n: extent(p.bBatchStride, p.bRowStride, p.bColStride, K, N), access: 'r' },
      { arr: p.c, lo: p.cOffset, n: (batch - 1) * p.cBatchStride + M * N, access: cDense ? 'w' : 'rw' },
    ];
  };

  /** Fill a GEMM parameter block (./assembly/gemm.ts) at `at` for operands staged at a, b, c. */
  const gemmBlock = (p: GemmParams, a: number, b: number, c: number, at: number, parallel: number): void => {
    const { i32: w, f32: f } = at === PARAMS_AT ? { i32: heap.i32, f32: heap.f32 } : heap.words(at, 20);
    w.set([
      p.batch,
      p.M,
      p.N,
      p.K,
      a,
      p.aBatchStride,
      p.aRowStride,
      p.aColStride,
      b,
      p.bBatchStride,
      p.bRowStride,
      p.bColStride,
      c,
      p.cBatchStride,
    ]);
    f[14] = p.alpha;
    f[15] = p.beta;
    w[16] = 0;
    // row splits: enough items for `parallel` threads when N alone gives too few column tiles
    const tilesN = Math.ceil(p.N / 256);
    const items = (p.cBatchStride === 0 && p.batch > 1 ? 1 : p.batch) * tilesN;
    w[19] = Math.max(1, Math.min(Math.ceil(p.M / 64), Math.ceil((4 * parallel) / items)));
  };

  const runnable = (p: GemmParams): boolean => p.batch > 0 && p.M > 0 && p.N > 0;

  const gemm = (p: GemmParams): void => {
    if (!runnable(p)) return;
    if (p.K === 0) return ref.gemm(p); // no products to sum: C = beta·C
    call(gemmOperands(p), ([a, b, c]) => {
      gemmBlock(p, a!, b!, c!, PARAMS_AT, threads);
      // a few rows against a weight read in place (decode): no packing, the weight streamed once
      const gemv = p.batch === 1 && p.M <= 4 && p.aColStride === 1 && (p.bRowStride === 1 || p.bColStride === 1);
      runThreaded(gemv ? KERNEL.gemv : KERNEL.gemm, gemv ? 0 : gemmScratch, 2 * p.batch * p.M * p.N * p.K);
    });
  };

  /** Independent products (an MoE layer's experts): staged together, then one threaded call, a product per item. */
  const gemmMany = (ps: readonly GemmParams[]): void => {
    const run = ps.filter((p) => runnable(p) && p.K > 0);
    for (const p of ps) if (runnable(p) && p.K === 0) ref.gemm(p);
    if (run.length === 0) return;
    if (run.length === 1) return gemm(run[0]!);
    call(run.flatMap(gemmOperands), (ptrs) => {
      const blocks = heap.reserve(80 * run.length);
      run.forEach((p, i) => gemmBlock(p, ptrs[3 * i]!, ptrs[3 * i + 1]!, ptrs[3 * i + 2]!, blocks + 80 * i, 1));
      const list = heap.reserve(4 * (4 + run.length));
      const work = run.reduce((s, p) => s + 2 * p.batch * p.M * p.N * p.K, 0);
      const nt = pool && work >= 1 << 21 ? Math.min(threads, run.length) : 1;
      const per = Math.ceil(gemmScratch / 64) * 64;
      const scratch = heap.reserve(per * nt);
      const w = heap.words(list, 4 + run.length).i32;
      w.set([run.length, 0, scratch, per]);
      run.forEach((_, i) => (w[4 + i] = blocks + 80 * i));
      if (nt === 1 || !pool) x['run']!(KERNEL.gemmMany, list, 0);
      else pool.run(KERNEL.gemmMany, list, nt, (tid) => x['run']!(KERNEL.gemmMany, list, tid));
    });
  };

  /** Extent of an attention operand [B, heads, rows, D] in a layout's row strides. */
  const span = (s: readonly number[], B: number, heads: number, rows: number, D: number): number =>
    B === 0 || heads === 0 || rows === 0 ? 0 : (B - 1) * s[0]! + (heads - 1) * s[1]! + (rows - 1) * s[2]! + D;

  const attentionBlock = (p: AttentionParams, ptrs: number[], strides: readonly (readonly number[])[]): void => {
    const w = heap.i32;
    w.set([
      p.B,
      p.H,
      p.Hkv,
      p.T,
      p.S,
      p.Dk,
      p.Dv,
      0,
      p.causal ? 1 : 0,
      ptrs[0]!,
      ptrs[1]!,
      ptrs[2]!,
      ptrs[3]!,
      p.maskBatch,
      ptrs[4]!,
      ptrs[5]!,
    ]);
    heap.f32[7] = p.scale;
    if (!p.mask) w[12] = 0;
    strides.forEach((s, i) => w.set(s, 19 + 3 * i));
  };

  const attentionOps = (p: AttentionParams): Operand[] => {
    const L = p.layout ?? denseAttentionLayout(p);
    return [
      { arr: p.q, lo: 0, n: span(L.q, p.B, p.H, p.T, p.Dk), access: 'r' },
      { arr: p.k, lo: 0, n: span(L.k, p.B, p.Hkv, p.S, p.Dk), access: 'r' },
      { arr: p.v, lo: 0, n: span(L.v, p.B, p.Hkv, p.S, p.Dv), access: 'r' },
      { arr: p.mask ?? new Float32Array(0), lo: 0, n: p.mask ? p.maskBatch * p.T * p.S : 0, access: 'r' },
    ];
  };

  const layoutOf = (p: AttentionParams) => {
    const L = p.layout ?? denseAttentionLayout(p);
    return [L.q, L.k, L.v, L.out, L.dout, L.dq, L.dk, L.dv];
  };
  const dense = (s: readonly number[], heads: number, rows: number, D: number): boolean =>
    s[2] === D && s[1] === rows * D && s[0] === heads * rows * D;

  const backend: WasmBackend = {
    ...ref,
    name: 'wasm',
    readyThreads: () => Math.min(threads, 1 + (pool?.ready() ?? 0)),
    pin: (buf) => heap.pin(buf),
    free: (buf) => heap.unpin(buf),
    threads: () => threads,
    setThreads: (n: number) => {
      threads = pool ? Math.max(1, Math.min(Math.floor(n), pool.size + 1)) : 1;
    },
    gemm,
    gemmMany,
    mlaDecode: (p, out) => mlaDecodeWith(gemm, p, out), // its two products on this backend's GEMM
    attention: (p, out, lse) => {
      const L = p.layout ?? denseAttentionLayout(p);
      const ops = attentionOps(p);
      ops.push(
        { arr: out, lo: 0, n: span(L.out, p.B, p.H, p.T, p.Dv), access: dense(L.out, p.H, p.T, p.Dv) ? 'w' : 'rw' },
        whole(lse, p.B * p.H * p.T, 'w'),
      );
      call(ops, (ptrs) => {
        attentionBlock(p, ptrs, layoutOf(p));
        runThreaded(KERNEL.attention, 4 * (p.S + p.Dv + 16), 2 * p.B * p.H * p.T * p.S * (p.Dk + p.Dv));
      });
    },
    attentionBackward: (p, out, lse, dout, dq, dk, dv) => {
      const L = p.layout ?? denseAttentionLayout(p);
      const ops = attentionOps(p);
      ops.push(
        { arr: out, lo: 0, n: span(L.out, p.B, p.H, p.T, p.Dv), access: 'r' },
        whole(lse, p.B * p.H * p.T, 'r'),
        { arr: dout, lo: 0, n: span(L.dout, p.B, p.H, p.T, p.Dv), access: 'r' },
        { arr: dq, lo: 0, n: span(L.dq, p.B, p.H, p.T, p.Dk), access: dense(L.dq, p.H, p.T, p.Dk) ? 'w' : 'rw' },
        { arr: dk, lo: 0, n: span(L.dk, p.B, p.Hkv, p.S, p.Dk), access: dense(L.dk, p.Hkv, p.S, p.Dk) ? 'w' : 'rw' },
        { arr: dv, lo: 0, n: span(L.dv, p.B, p.Hkv, p.S, p.Dv), access: dense(L.dv, p.Hkv, p.S, p.Dv) ? 'w' : 'rw' },
      );
      call(ops, (ptrs) => {
        attentionBlock(p, [ptrs[0]!, ptrs[1]!, ptrs[2]!, ptrs[3]!, ptrs[4]!, ptrs[5]!], layoutOf(p));
        heap.i32.set([ptrs[6]!, ptrs[7]!, ptrs[8]!, ptrs[9]!], 43);
        runThreaded(KERNEL.attentionBackward, 4 * (8 * (p.S + 4) + 16), 4 * p.B * p.H * p.T * p.S * (p.Dk + p.Dv));
      });
    },
    rmsnorm: (xs, w, y, rstd, R, D, eps) =>
      call([whole(xs, R * D, 'r'), whole(w, D, 'r'), whole(y, R * D, 'w'), whole(rstd, R, 'w')], ([a, b, c, d]) =>
        x['rmsnorm']!(a!, b!, c!, d!, R, D, eps),
      ),
    rmsnormBackward: (xs, w, rstd, dy, dx, dw, R, D) =>
      call(
        [whole(xs, R * D, 'r'), whole(w, D, 'r'), whole(rstd, R, 'r'), whole(dy, R * D, 'r'), whole(dx, R * D, 'w'), whole(dw, D, 'rw')],
        ([a, b, c, d, e, f]) => x['rmsnormBackward']!(a!, b!, c!, d!, e!, f!, R, D),
      ),
    softmax: (xs, y, R, N, log) =>
      call([whole(xs, R * N, 'r'), whole(y, R * N, 'w')], ([a, b]) => x['softmax']!(a!, b!, R, N, log ? 1 : 0)),
    softmaxBackward: (y, dy, dx, R, N, log) =>
      call([whole(y, R * N, 'r'), whole(dy, R * N, 'r'), whole(dx, R * N, 'w')], ([a, b, c]) =>
        x['softmaxBackward']!(a!, b!, c!, R, N, log ? 1 : 0),
      ),
    swiglu: (a, b, out, n) => call([whole(a, n, 'r'), whole(b, n, 'r'), whole(out, n, 'w')], ([p, q, r]) => x['swiglu']!(p!, q!, r!, n)),
    swigluBackward: (a, b, dy, da, db, n) =>
      call([whole(a, n, 'r'), whole(b, n, 'r'), whole(dy, n, 'r'), whole(da, n, 'w'), whole(db, n, 'w')], ([p, q, r, s, t]) =>
        x['swigluBackward']!(p!, q!, r!, s!, t!, n),
      ),
    crossEntropy: (logits, targets, loss, lse, R, V, ignore) => {
      checkTargets(targets, R, V, ignore);
      call([whole(logits, R * V, 'r'), whole(targets, R, 'r'), whole(loss, R, 'w'), whole(lse, R, 'w')], ([a, b, c, d]) =>
        x['crossEntropy']!(a!, b!, c!, d!, R, V, ignore),
      );
    },
    crossEntropyBackward: (logits, targets, lse, dloss, dlogits, R, V, ignore) => {
      checkTargets(targets, R, V, ignore);
      call(
        [whole(logits, R * V, 'r'), whole(targets, R, 'r'), whole(lse, R, 'r'), whole(dloss, R, 'r'), whole(dlogits, R * V, 'w')],
        ([a, b, c, d, e]) => x['crossEntropyBackward']!(a!, b!, c!, d!, e!, R, V, ignore),
      );
    },
    rope: (xs, cos, sin, out, B, T, H, D, Bc, inverse, pass = 0) => {
      const n = B * T * H * (pass + D);
      const tab = Bc * T * (D / 2);
      call([whole(xs, n, 'r'), whole(cos, tab, 'r'), whole(sin, tab, 'r'), whole(out, n, 'w')], ([a, b, c, d]) =>
        x['rope']!(a!, b!, c!, d!, B, T, H, D, Bc, inverse ? 1 : 0, pass),
      );
    },
    adamw: (p) => adamw(p),
    adamwMany: (ps) => ps.forEach(adamw),
    sumsq: (xs, n) => call([whole(xs, n, 'r')], ([a]) => x['sumsq']!(a!, n)),
    sumsqMany: (xs, ns) => xs.reduce((s, v, i) => s + (ns[i]! ? call([whole(v, ns[i]!, 'r')], ([a]) => x['sumsq']!(a!, ns[i]!)) : 0), 0),
  };

  // the heap, for tests that check resident copies (not part of the Backend contract)
  Object.defineProperty(backend, '__heap', { value: heap, enumerable: false });

  function adamw(p: AdamWParams): void {
    const { n } = p;
    if (n === 0) return;
    call([whole(p.param, n, 'rw'), whole(p.grad, n, 'r'), whole(p.m, n, 'rw'), whole(p.v, n, 'rw')], ([a, b, c, d]) =>
      x['adamw']!(
        n,
        a!,
        b!,
        c!,
        d!,
        p.lr,
        p.beta1,
        p.beta2,
        p.eps,
        1 - p.lr * p.weightDecay,
        1 - p.beta1 ** p.step,
        1 - p.beta2 ** p.step,
        p.gradScale,
      ),
    );
  }
  return backend;
}

function checkTargets(targets: I32, R: number, V: number, ignore: number): void {
  for (let r = 0; r < R; r++) {
    const t = targets[r]!;
    if (t !== ignore && !(t >= 0 && t < V)) throw new Error(`cross-entropy target ${t} at row ${r} is outside the vocabulary [0, ${V})`);
  }
}

export type { F32 };
