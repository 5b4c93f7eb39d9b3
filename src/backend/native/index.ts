// The `native` backend: the Node-API addon built from ./csrc by node-gyp at install (AVX2/FMA kernels, AVX-512 ones
// where the CPU has them, chosen at run time; OpenMP threads). Buffers are ordinary typed arrays; the addon reads and
// writes their memory in place, so no operand is ever copied at the boundary. Sizes travel in a reused Float64Array
// ("meta") to keep a call near 0.2 µs.
import { denseAttentionLayout } from '../backend.js';
import { QUANT_CODE } from '../../quant/formats.js';
import type {
  AdamWParams,
  AttentionParams,
  Backend,
  BinaryOp,
  F32,
  GemmParams,
  I32,
  PagedAttentionParams,
  MlaDecodeParams,
  QGemmParams,
  ReduceOp,
  Strided,
  UnaryOp,
} from '../backend.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
type Addon = Record<string, (...args: any[]) => any>;

const UNARY: Record<UnaryOp, number> = { neg: 0, exp: 1, log: 2, sqrt: 3, rsqrt: 4, silu: 5, scale: 6, square: 7, abs: 8 };
const BINARY: Record<BinaryOp, number> = { add: 0, sub: 1, mul: 2, div: 3 };

let loadError: string | null = null;

/** Why the addon did not load (null when it did, or before the first attempt). */
export function nativeLoadError(): string | null {
  return loadError;
}

async function nodeRequire(): Promise<((id: string) => unknown) | null> {
  if (typeof process === 'undefined' || !process.versions?.node) return null;
  const { createRequire } = await import('node:module');
  return createRequire(import.meta.url);
}
const requireFn = await nodeRequire();

function loadAddon(): Addon | null {
  if (!requireFn) {
    loadError = 'not running in Node.js';
    return null;
  }
  // dist/src/backend/native/index.js → the package root is four folders up; DSV2_NATIVE_ADDON names another build
  const path =
    process.env['DSV2_NATIVE_ADDON'] || decodeURIComponent(new URL('../../../../build/Release/dsv2_native.node', import.meta.url).pathname);
  try {
    const addon = requireFn(path) as Addon;
    if (!addon['avx2']!()) {
      loadError = 'this CPU lacks AVX2/FMA';
      return null;
    }
    return addon;
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    loadError = /Cannot find module|ENOENT/.test(msg)
      ? 'the addon is not built (npm ci builds it; see scripts/build-native.js)'
      : msg.split('\n')[0]!;
    return null;
  }
}

function stridedMeta(prefix: number[], shape: readonly number[], ...strides: (readonly number[])[]): Float64Array {
  const m = new Float64Array(prefix.length + shape.length * (1 + strides.length));
  m.set(prefix);
  let at = prefix.length;
  m.set(shape, at);
  for (const s of strides) m.set(s, (at += shape.length));
  return m;
}

export function createNativeBackend(): Backend | null {
  const n = loadAddon();
  if (!n) return null;
  const isaEnv = process.env['DSV2_ISA'];
  if (isaEnv) {
    if (!n['setIsa']) throw new Error(`DSV2_ISA=${isaEnv}: this build of the native addon has one instruction set (avx2)`);
    try {
      n['setIsa'](isaEnv);
    } catch (e) {
      throw new Error(`DSV2_ISA=${isaEnv}: ${(e as Error).message}`);
    }
  }
  const gemmMeta = new Float64Array(16);
  let manyMeta = new Float64Array(16 * 64);
  const attnMeta = new Float64Array(10 + 8 * 3);
  const adamMeta = new Float64Array(8);
  const pagedMeta = new Float64Array(14);
  const mlaMeta = new Float64Array(10);
  let qMeta = new Float64Array(7 * 64);
  const qgemmMany = (ps: readonly QGemmParams[]): void => {
    if (qMeta.length < 7 * ps.length) qMeta = new Float64Array(14 * ps.length);
    const xs: F32[] = [];
    const ws: Uint8Array[] = [];
    const ys: F32[] = [];
    ps.forEach((p, i) => {
      qMeta.set([QUANT_CODE[p.type], p.M, p.N, p.K, p.xOffset, p.yOffset, p.beta], 7 * i);
      xs.push(p.x);
      ws.push(p.w);
      ys.push(p.y);
    });
    n['qgemmMany']!(xs, ws, ys, qMeta, ps.length);
  };
  const attention = (p: AttentionParams): Float64Array => {
    attnMeta.set([p.B, p.H, p.Hkv, p.T, p.S, p.Dk, p.Dv, p.scale, p.causal ? 1 : 0, p.maskBatch]);
    const L = p.layout ?? denseAttentionLayout(p);
    [L.q, L.k, L.v, L.out, L.dout, L.dq, L.dk, L.dv].forEach((s, i) => attnMeta.set(s, 10 + 3 * i));
    return attnMeta;
  };
  return {
    name: 'native',
    threads: () => n['threads']!() as number,
    setThreads: (t: number) => n['setThreads']!(t),
    // (an addon built before the instruction-set choice, named by DSV2_NATIVE_ADDON, has none of these)
    ...(n['isa']
      ? { isa: () => n['isa']!() as string, isas: () => n['isas']!() as string[], setIsa: (name: string) => n['setIsa']!(name) }
      : {}),
    alloc: (len: number): F32 => new Float32Array(len),
    allocInt: (len: number): I32 => new Int32Array(len),
    // Uninitialised memory from malloc (Buffer.allocUnsafeSlow): no zero-filling, and with the addon's malloc
    // settings a recently freed block comes back warm instead of as fresh pages to fault in.
    allocUninit: (len: number): F32 =>
      len < 4096 ? new Float32Array(len) : new Float32Array(Buffer.allocUnsafeSlow(len * 4).buffer, 0, len),
    adviseHugePages: (collapse: boolean): number => n['adviseHugePages']!(collapse ? 1 : 0) as number,
    lowerPriority: (nice: number) => n['lowerPriority']?.(nice),
    watchStopSignals: () => {
      n['watchStop']!();
      return { received: () => n['stopSignal']!() as number, restore: () => n['unwatchStop']!() };
    },
    mapFile: (path: string): Uint8Array | null => {
      const ab = n['mapFile']?.(path) as ArrayBuffer | null | undefined;
      return ab ? new Uint8Array(ab) : null;
    },
    free: () => {
      // plain typed arrays: the garbage collector reclaims them
    },
    copy: (src: Strided, dst: Strided, shape: readonly number[]) =>
      n['copy']!(src.buf, dst.buf, stridedMeta([shape.length, 0, src.offset, dst.offset], shape, src.strides, dst.strides)),
    accumulate: (src: Strided, dst: Strided, shape: readonly number[]) =>
      n['copy']!(src.buf, dst.buf, stridedMeta([shape.length, 1, src.offset, dst.offset], shape, src.strides, dst.strides)),
    fill: (out, len, value) => n['fill']!(out, len, value),
    binary: (op: BinaryOp, a: Strided, b: Strided, out: F32, shape: readonly number[]) =>
      n['binary']!(BINARY[op], a.buf, b.buf, out, stridedMeta([shape.length, a.offset, b.offset], shape, a.strides, b.strides)),
    unary: (op, x, out, len, alpha) => n['unary']!(UNARY[op], x, out, len, alpha),
    unaryBackward: (op, x, y, dy, dx, len, alpha) => n['unaryBackward']!(UNARY[op], x, y, dy, dx, len, alpha),
    reduce: (op: ReduceOp, x, out, arg, O, N, I) => n['reduce']!(op === 'max', x, out, arg, O, N, I),
    reduceMaxBackward: (dy, arg, dx, O, N, I) => n['reduceMaxBackward']!(dy, arg, dx, O, N, I),
    gemm: (p: GemmParams) => {
      gemmMeta.set([
        p.batch, p.M, p.N, p.K, p.aOffset, p.aBatchStride, p.aRowStride, p.aColStride,
        p.bOffset, p.bBatchStride, p.bRowStride, p.bColStride, p.cOffset, p.cBatchStride, p.alpha, p.beta,
      ]); // prettier-ignore
      n['gemm']!(p.a, p.b, p.c, gemmMeta);
    },
    gemmMany: (ps: readonly GemmParams[]) => {
      if (manyMeta.length < 16 * ps.length) manyMeta = new Float64Array(32 * ps.length);
      const as: F32[] = [];
      const bs: F32[] = [];
      const cs: F32[] = [];
      ps.forEach((p, i) => {
        manyMeta.set([
          p.batch, p.M, p.N, p.K, p.aOffset, p.aBatchStride, p.aRowStride, p.aColStride,
          p.bOffset, p.bBatchStride, p.bRowStride, p.bColStride, p.cOffset, p.cBatchStride, p.alpha, p.beta,
        ], 16 * i); // prettier-ignore
        as.push(p.a);
        bs.push(p.b);
        cs.push(p.c);
      });
      n['gemmMany']!(as, bs, cs, manyMeta, ps.length);
    },
    qgemm: (p: QGemmParams) => qgemmMany([p]),
    qgemmMany: (ps: readonly QGemmParams[]) => qgemmMany(ps),
    quantizeRows: (type, x, out, rows, K) => n['quantizeRows']!(QUANT_CODE[type], x, out, rows, K),
    dequantRows: (type, w, idx, out, M, N, K) => n['dequantRows']!(QUANT_CODE[type], w, idx, out, M, N, K),
    rmsnorm: (x, w, y, rstd, R, D, eps) => n['rmsnorm']!(x, w, y, rstd, R, D, eps),
    rmsnormBackward: (x, w, rstd, dy, dx, dw, R, D) => n['rmsnormBackward']!(x, w, rstd, dy, dx, dw, R, D),
    softmax: (x, y, R, N, log) => n['softmax']!(x, y, R, N, log),
    softmaxBackward: (y, dy, dx, R, N, log) => n['softmaxBackward']!(y, dy, dx, R, N, log),
    swiglu: (a, b, out, len) => n['swiglu']!(a, b, out, len),
    swigluBackward: (a, b, dy, da, db, len) => n['swigluBackward']!(a, b, dy, da, db, len),
    crossEntropy: (logits, targets, loss, lse, R, V, ignore) => n['crossEntropy']!(logits, targets, loss, lse, R, V, ignore),
    crossEntropyBackward: (logits, targets, lse, dloss, dlogits, R, V, ignore) =>
      n['crossEntropyBackward']!(logits, targets, lse, dloss, dlogits, R, V, ignore),
    gatherRows: (src, idx, out, M, N, D) => n['gatherRows']!(src, idx, out, M, N, D),
    scatterRows: (src, idx, dst, M, N, D) => n['scatterRows']!(src, idx, dst, M, N, D),
    scatterAddRows: (src, idx, dst, M, N, D, w) => n['scatterAddRows']!(src, idx, dst, M, N, D, w ?? null),
    scatterAddRowsBackward: (dy, idx, src, w, dsrc, dw, M, N, D) => n['scatterAddRowsBackward']!(dy, idx, src, w, dsrc, dw, M, N, D),
    gatherLast: (x, idx, out, R, N, K) => n['gatherLast']!(x, idx, out, R, N, K),
    scatterAddLast: (dy, idx, dx, R, N, K) => n['scatterAddLast']!(dy, idx, dx, R, N, K),
    topk: (x, idx, R, N, K) => n['topk']!(x, idx, R, N, K),
    argsort: (x, idx, R, N, desc) => n['argsort']!(x, idx, R, N, desc),
    rope: (x, cos, sin, out, B, T, H, D, Bc, inverse, pass = 0) => n['rope']!(x, cos, sin, out, B, T, H, D, Bc, inverse, pass),
    attention: (p, out, lse) => n['attention']!(p.q, p.k, p.v, p.mask, out, lse, attention(p)),
    attentionBackward: (p, out, lse, dout, dq, dk, dv) =>
      n['attentionBackward']!(p.q, p.k, p.v, p.mask, out, lse, dout, dq, dk, dv, attention(p)),
    pagedAttention: (p: PagedAttentionParams, out: F32) => {
      pagedMeta.set([
        p.N,
        p.H,
        p.Hkv,
        p.Dk,
        p.Dv,
        p.scale,
        p.W,
        p.kOffset,
        p.kHeadStride,
        p.vOffset,
        p.vHeadStride,
        p.blockSize,
        p.numBlocks,
        p.maxBlocks,
      ]);
      n['pagedAttention']!(p.q, p.cache, p.blockTables, p.contextLens, out, pagedMeta);
    },
    mlaDecode: (p: MlaDecodeParams, out: F32) => {
      mlaMeta.set([p.N, p.H, p.dn, p.dr, p.dc, p.dv, p.scale, p.blockSize, p.numBlocks, p.maxBlocks]);
      n['mlaDecode']!(p.q, p.kvB, p.cache, p.blockTables, p.contextLens, out, mlaMeta);
    },
    adamw: (p: AdamWParams) => {
      adamMeta.set([p.n, p.lr, p.beta1, p.beta2, p.eps, p.weightDecay, p.step, p.gradScale]);
      n['adamw']!(p.param, p.grad, p.m, p.v, adamMeta);
    },
    sumsq: (x, len) => n['sumsq']!(x, len) as number,
    adamwMany: (ps: readonly AdamWParams[]) => {
      const p0 = ps[0];
      if (!p0) return;
      const meta = new Float64Array(6 + 2 * ps.length);
      meta.set([p0.lr, p0.beta1, p0.beta2, p0.eps, p0.step, p0.gradScale]);
      ps.forEach((p, i) => {
        if (
          p.lr !== p0.lr ||
          p.beta1 !== p0.beta1 ||
          p.beta2 !== p0.beta2 ||
          p.eps !== p0.eps ||
          p.step !== p0.step ||
          p.gradScale !== p0.gradScale
        )
          throw new Error('adamwMany: the tensors of one call share lr, betas, eps, step and gradScale');
        meta[6 + 2 * i] = p.n;
        meta[7 + 2 * i] = p.weightDecay;
      });
      n['adamwMany']!(
        ps.map((p) => p.param),
        ps.map((p) => p.grad),
        ps.map((p) => p.m),
        ps.map((p) => p.v),
        meta,
        ps.length,
      );
    },
    sumsqMany: (xs, ns) => n['sumsqMany']!(xs, Float64Array.from(ns), xs.length) as number,
  };
}
