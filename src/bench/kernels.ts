// Kernel benchmarks: GEMM/GEMV at fixed shapes (GFLOP/s) and every fused kernel at a training shape of the
// `small` preset (GB/s of the bytes it must move). Each fused kernel is paired with a plain copy of the same
// working set measured in the same run, so the ratio to the machine's bandwidth reads directly.
import type { Backend, GemmParams } from '../backend/backend.js';
import { preset } from '../model/presets.js';
import { Rng } from '../tensor/random.js';
import { time } from './timing.js';

export interface BenchRecord {
  bench: string;
  backend: string;
  threads: number;
  m?: number;
  k?: number;
  n?: number;
  shape?: number[];
  ms: number;
  gflops?: number;
  gbps?: number;
}

function randArray(n: number, rng: Rng, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (rng.uniform() * 2 - 1) * scale;
  return a;
}

export function threadsOf(b: Backend): number {
  return b.threads?.() ?? 1;
}

/** GEMM shapes of the issue (M×K×N); M ≤ 4 runs the GEMV path. B is read as Wᵀ, the layout of x·Wᵀ (linear). */
export const GEMM_SHAPES: [number, number, number][] = [
  [256, 256, 256],
  [1024, 1024, 1024],
  [64, 1024, 4096],
  [1, 2048, 2048],
  [1, 2048, 8192],
];

export function benchGemm(b: Backend, shapes = GEMM_SHAPES): BenchRecord[] {
  const rng = new Rng(1);
  return shapes.map(([M, K, N]) => {
    const p: GemmParams = {
      batch: 1,
      M,
      N,
      K,
      a: randArray(M * K, rng),
      aOffset: 0,
      aBatchStride: 0,
      aRowStride: K,
      aColStride: 1,
      b: randArray(K * N, rng),
      bOffset: 0,
      bBatchStride: 0,
      bRowStride: 1,
      bColStride: K,
      c: new Float32Array(M * N),
      cOffset: 0,
      cBatchStride: 0,
      alpha: 1,
      beta: 0,
    };
    const { ms } = time(() => b.gemm(p), { maxMs: 3000 });
    return { bench: 'gemm', backend: b.name, threads: threadsOf(b), m: M, k: K, n: N, ms, gflops: (2 * M * N * K) / ms / 1e6 };
  });
}

interface KernelCase {
  name: string;
  shape: number[];
  bytes: number;
  flops?: number;
  run: () => void;
}

/** The fused kernels at the shapes one training step of the `small` preset (batch 8 × 256) gives them. */
function kernelCases(b: Backend): KernelCase[] {
  const c = preset('small');
  const rng = new Rng(2);
  const B = 8;
  const T = 256;
  const R = B * T;
  const D = c.hidden_size;
  const V = c.vocab_size;
  const F = c.intermediate_size;
  const H = c.num_attention_heads;
  const Dk = c.qk_nope_head_dim + c.qk_rope_head_dim;
  const Dv = c.v_head_dim;
  const Dr = c.qk_rope_head_dim;
  const K = c.num_experts_per_tok!;
  const f = (n: number, s = 1): Float32Array => randArray(n, rng, s);
  const x = f(R * D);
  const w = f(D);
  const y = f(R * D);
  const rstd = f(R, 0.5).map((v) => 1 + v);
  const dx = f(R * D);
  const dw = f(D);
  const logits = f(R * V, 4);
  const prob = f(R * V);
  const targets = Int32Array.from({ length: R }, (_, i) => (i * 7919) % V);
  const loss = f(R);
  const lse = f(R);
  const ga = f(R * F);
  const gb = f(R * F);
  const go = f(R * F);
  const gda = f(R * F);
  const gdb = f(R * F);
  const rq = f(R * H * Dr);
  const ro = f(R * H * Dr);
  const cos = f(T * (Dr / 2));
  const sin = f(T * (Dr / 2));
  const idx = Int32Array.from({ length: R * K }, (_, i) => (i * 7919 + 13) % R); // scattered rows, as a router gives
  const rows = f(R * K * D);
  const att = {
    B,
    H,
    Hkv: H,
    T,
    S: T,
    Dk,
    Dv,
    scale: 1 / Math.sqrt(Dk),
    causal: true,
    q: f(B * H * T * Dk),
    k: f(B * H * T * Dk),
    v: f(B * H * T * Dv),
    mask: null,
    maskBatch: 1,
  };
  const aOut = f(B * H * T * Dv);
  const aLse = f(B * H * T);
  const aDo = f(B * H * T * Dv);
  const aDq = f(B * H * T * Dk);
  const aDk = f(B * H * T * Dk);
  const aDv = f(B * H * T * Dv);
  const nParams = 4_000_000;
  const pp = f(nParams);
  const pg = f(nParams, 1e-3);
  const pm = f(nParams, 1e-4);
  const pv = f(nParams, 1e-8).map(Math.abs);
  const F4 = 4;
  const attBytes = F4 * (att.q.length + att.k.length + att.v.length + aOut.length + aLse.length);
  const attFlops = 2 * B * H * ((T * (T + 1)) / 2) * (Dk + Dv);
  return [
    { name: 'rmsnorm', shape: [R, D], bytes: F4 * (2 * R * D + D + R), run: () => b.rmsnorm(x, w, y, rstd, R, D, 1e-6) },
    {
      name: 'rmsnorm_backward',
      shape: [R, D],
      bytes: F4 * (3 * R * D + 2 * D + R),
      run: () => b.rmsnormBackward(x, w, rstd, y, dx, dw, R, D),
    },
    { name: 'softmax', shape: [R, V], bytes: F4 * 2 * R * V, run: () => b.softmax(logits, prob, R, V, false) },
    { name: 'softmax_backward', shape: [R, V], bytes: F4 * 3 * R * V, run: () => b.softmaxBackward(prob, logits, prob, R, V, false) },
    { name: 'swiglu', shape: [R, F], bytes: F4 * 3 * R * F, run: () => b.swiglu(ga, gb, go, R * F) },
    { name: 'swiglu_backward', shape: [R, F], bytes: F4 * 5 * R * F, run: () => b.swigluBackward(ga, gb, go, gda, gdb, R * F) },
    {
      name: 'rope',
      shape: [B, T, H, Dr],
      bytes: F4 * (2 * R * H * Dr + T * Dr),
      run: () => b.rope(rq, cos, sin, ro, B, T, H, Dr, 1, false),
    },
    {
      name: 'cross_entropy',
      shape: [R, V],
      bytes: F4 * (R * V + 3 * R),
      run: () => b.crossEntropy(logits, targets, loss, lse, R, V, -100),
    },
    {
      name: 'cross_entropy_backward',
      shape: [R, V],
      bytes: F4 * (2 * R * V + 3 * R),
      run: () => b.crossEntropyBackward(logits, targets, lse, loss, prob, R, V, -100),
    },
    { name: 'gather_rows', shape: [R * K, D], bytes: F4 * (2 * R * K * D + R * K), run: () => b.gatherRows(x, idx, rows, R * K, R, D) },
    {
      name: 'scatter_add_rows',
      shape: [R * K, D],
      bytes: F4 * (3 * R * K * D + R * K),
      run: () => b.scatterAddRows(rows, idx, dx, R * K, R, D),
    },
    { name: 'attention', shape: [B, H, T, Dk, Dv], bytes: attBytes, flops: attFlops, run: () => b.attention(att, aOut, aLse) },
    {
      name: 'attention_backward',
      shape: [B, H, T, Dk, Dv],
      bytes: 2 * attBytes + F4 * aDo.length,
      flops: 2 * attFlops,
      run: () => b.attentionBackward(att, aOut, aLse, aDo, aDq, aDk, aDv),
    },
    {
      name: 'adamw',
      shape: [nParams],
      bytes: F4 * 7 * nParams,
      run: () =>
        b.adamw({
          n: nParams,
          param: pp,
          grad: pg,
          m: pm,
          v: pv,
          lr: 1e-9,
          beta1: 0.9,
          beta2: 0.95,
          eps: 1e-8,
          weightDecay: 0.1,
          step: 10,
          gradScale: 1,
        }),
    },
  ];
}

/** A plain copy over the same number of bytes (half read, half written): the bandwidth a kernel is held to. */
function copyBaseline(b: Backend, bytes: number, maxMs: number): BenchRecord {
  const n = Math.max(8, Math.round(bytes / 8));
  const src = new Float32Array(n).fill(1);
  const dst = new Float32Array(n);
  const view = (buf: Float32Array) => ({ buf, offset: 0, strides: [1] });
  const { ms } = time(() => b.copy(view(src), view(dst), [n]), { maxMs });
  return { bench: 'copy', backend: b.name, threads: threadsOf(b), shape: [n], ms, gbps: (8 * n) / ms / 1e6 };
}

export function benchKernels(b: Backend, only?: readonly string[]): BenchRecord[] {
  const out: BenchRecord[] = [];
  const maxMs = b.name === 'ts' ? 4000 : 1500;
  for (const k of kernelCases(b)) {
    if (only && !only.includes(k.name)) continue;
    const { ms } = time(k.run, { maxMs });
    const rec: BenchRecord = { bench: k.name, backend: b.name, threads: threadsOf(b), shape: k.shape, ms, gbps: k.bytes / ms / 1e6 };
    if (k.flops) rec.gflops = k.flops / ms / 1e6;
    out.push(rec, copyBaseline(b, k.bytes, maxMs));
  }
  return out;
}
