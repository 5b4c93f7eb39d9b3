// The backend contract: buffer allocation plus a fixed list of kernels. The loops over tensor elements live behind
// this interface (docs/engine.md lists the few cheap ones that do not); `src/model/` never sees it. Buffers are plain typed arrays (Float32Array for values, Int32Array
// for indices) so that a native addon can read and write them in place, without copies at the boundary.
//
// Conventions: unless a parameter says otherwise, a buffer holds a contiguous row-major tensor starting at
// element 0 (callers pass `subarray` views). Shape comments use the letters of the parameters.

import type { QuantType } from '../quant/formats.js';

export type F32 = Float32Array;
export type I32 = Int32Array;

export type BinaryOp = 'add' | 'sub' | 'mul' | 'div';
export type UnaryOp = 'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'silu' | 'scale' | 'square' | 'abs';
export type ReduceOp = 'sum' | 'max';

/** A strided operand: element (i0, i1, …) lives at `buf[offset + Σ i_k·strides[k]]`. */
export interface Strided<T extends F32 | I32 = F32> {
  buf: T;
  offset: number;
  strides: readonly number[];
}

/**
 * Batched GEMM: for each batch index p,
 *   C_p[M,N] = alpha · A_p[M,K] · B_p[K,N] + beta · C_p[M,N]
 * A_p(i,k) = a[aOffset + p·aBatchStride + i·aRowStride + k·aColStride], likewise B_p(k,n); C is row-major with
 * leading dimension N. A batch stride of 0 broadcasts the operand; cBatchStride 0 with beta 1 sums over batches.
 */
export interface GemmParams {
  batch: number;
  M: number;
  N: number;
  K: number;
  a: F32;
  aOffset: number;
  aBatchStride: number;
  aRowStride: number;
  aColStride: number;
  b: F32;
  bOffset: number;
  bBatchStride: number;
  bRowStride: number;
  bColStride: number;
  c: F32;
  cOffset: number;
  cBatchStride: number;
  alpha: number;
  beta: number;
}

/**
 * Causal/masked attention with d_qk ≠ d_v and grouped KV heads (H % Hkv == 0; head h reads KV head
 * floor(h / (H / Hkv))): q [B,H,T,Dk], k [B,Hkv,S,Dk], v [B,Hkv,S,Dv] → out [B,H,T,Dv], lse [B,H,T].
 * Scores are `scale · q·k + mask`, softmax in fp32. With `causal`, query row t (absolute position S−T+t) sees
 * keys j ≤ S−T+t. `mask` is additive, [Bm,T,S] with Bm ∈ {1, B}, shared by all heads.
 * Every operand may be laid out with any row strides (`layout`; dense [B,H,T,D] where absent), so q, k, v in
 * the token-major [B,T,H,D] layout the projections produce are read without a permute copy.
 */
export interface AttentionParams {
  B: number;
  H: number;
  Hkv: number;
  T: number;
  S: number;
  Dk: number;
  Dv: number;
  scale: number;
  causal: boolean;
  q: F32;
  k: F32;
  v: F32;
  mask: F32 | null;
  maskBatch: number;
  layout?: AttentionLayout;
}

/** Element strides (batch, head, row) of an operand's rows; each row (Dk or Dv values) is contiguous. */
export type RowStrides = readonly [number, number, number];

/** Row strides of every attention operand: out/dout/dq are [B,H,T,·], k/v/dk/dv [B,Hkv,S,·]. */
export interface AttentionLayout {
  q: RowStrides;
  k: RowStrides;
  v: RowStrides;
  out: RowStrides;
  dout: RowStrides;
  dq: RowStrides;
  dk: RowStrides;
  dv: RowStrides;
}

/** The layout of dense [B,H,T,D] operands (what `layout` defaults to). */
export function denseAttentionLayout(p: Pick<AttentionParams, 'H' | 'Hkv' | 'T' | 'S' | 'Dk' | 'Dv'>): AttentionLayout {
  const dense = (heads: number, rows: number, d: number): RowStrides => [heads * rows * d, rows * d, d];
  const q = dense(p.H, p.T, p.Dk);
  const o = dense(p.H, p.T, p.Dv);
  const k = dense(p.Hkv, p.S, p.Dk);
  const v = dense(p.Hkv, p.S, p.Dv);
  return { q, k, v, out: o, dout: o, dq: q, dk: k, dv: v };
}

/**
 * Decode attention over a paged cache (the inference engine's, src/infer): each of N query tokens (one per
 * sequence) attends over the first contextLens[n] rows of its sequence, found through its block table: row j lives
 * at slot blockTables[n·maxBlocks + ⌊j/blockSize⌋]·blockSize + j mod blockSize of `cache` [slots, W]. KV head g's key
 * is the Dk values at kOffset + g·kHeadStride of a row, its value the Dv values at vOffset + g·vHeadStride; query
 * head h reads KV head ⌊h / (H / Hkv)⌋. MLA's absorbed decode (spec §4.2) is Hkv = 1, K = the whole
 * [latent | rope key] row and V = the latent (kHeadStride = vHeadStride = 0, vOffset = 0): no copy of the prefix.
 *   q [N,H,Dk] → out [N,H,Dv] = softmax(scale · q·Kᵀ) · V   (softmax in fp32 or wider)
 */
export interface PagedAttentionParams {
  N: number;
  H: number;
  Hkv: number;
  Dk: number;
  Dv: number;
  scale: number;
  q: F32;
  cache: F32;
  /** Elements per cache row (slot). */
  W: number;
  kOffset: number;
  kHeadStride: number;
  vOffset: number;
  vHeadStride: number;
  blockSize: number;
  /** Blocks in the cache (cache holds numBlocks·blockSize rows). */
  numBlocks: number;
  /** [N, maxBlocks] block ids; entries past a sequence's last block are ignored. */
  blockTables: I32;
  maxBlocks: number;
  /** [N] rows each query sees (its own, just written, included); 1 ≤ contextLens[n] ≤ maxBlocks·blockSize. */
  contextLens: I32;
}

/**
 * Absorbed MLA decode attention (spec §4.2) in one call, for N decode tokens reading a paged latent cache whose rows
 * are [normalised latent (dc) | rotated rope key (dr)]. Per token n and head h, with W^UK_h = kvB rows
 * [h·(dn+dv), h·(dn+dv)+dn) and W^UV_h the dv rows after them (kv_b_proj.weight [H·(dn+dv), dc]):
 *   q̃ = [q_nope · W^UK_h | q_pe]  (a dc + dr query in the latent space),
 *   c = Σ_j softmax_j(scale · q̃ · row_j) · latent_j,   out[n, h·dv : (h+1)·dv] = W^UV_h · c.
 * It is pagedAttention with Hkv = 1, Dk = dc + dr, Dv = dc between the two per-head products, which the decode
 * step would otherwise make as three more calls and two copies.
 */
export interface MlaDecodeParams {
  N: number;
  H: number;
  dn: number;
  dr: number;
  dc: number;
  dv: number;
  scale: number;
  /** [N, H, dn + dr]: q_nope, then the rotated q_pe, per head. */
  q: F32;
  /** kv_b_proj.weight [H·(dn + dv), dc]. */
  kvB: F32;
  /** Rows of dc + dr floats; the block layout as PagedAttentionParams. */
  cache: F32;
  blockSize: number;
  numBlocks: number;
  blockTables: I32;
  maxBlocks: number;
  contextLens: I32;
}

/**
 * A product with a stored (bf16, f16 or quantized) weight: y [M,N] = x [M,K] · Wᵀ (+ y when beta is 1), W [N,K]
 * row-major in `type`'s layout (src/quant/formats.ts: N rows of rowBytes(type, K) bytes). x rows start at xOffset
 * with stride K, y rows at yOffset with stride N. The 32-element integer types quantize x per block to int8 and
 * sum exact integer dot products (src/backend/ts/quant.ts defines it); the others use float32 activations.
 */
export interface QGemmParams {
  type: QuantType;
  M: number;
  N: number;
  K: number;
  x: F32;
  xOffset: number;
  w: Uint8Array;
  y: F32;
  yOffset: number;
  beta: 0 | 1;
}

export interface AdamWParams {
  n: number;
  param: F32;
  grad: F32;
  m: F32;
  v: F32;
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step count, for bias correction. */
  step: number;
  /** Gradient multiplier applied before the update (global-norm clipping). */
  gradScale: number;
}

export interface Backend {
  readonly name: string;

  // ---- memory ---------------------------------------------------------------------------------------------
  /** A zero-filled float buffer of n elements. */
  alloc(n: number): F32;
  /** A zero-filled index buffer of n elements. */
  allocInt(n: number): I32;
  /**
   * A float buffer of n elements whose contents are unspecified, for outputs a kernel overwrites entirely (skips
   * zero-filling and, for large buffers, lets the allocator hand back recently freed memory). Default: alloc.
   */
  allocUninit?(n: number): F32;
  /**
   * A hint, no effect on results: back the allocator's heap with 2 MiB pages where the OS can (Linux transparent
   * huge pages); `collapse` also converts the pages already in use. Returns the bytes advised (0: not supported).
   */
  adviseHugePages?(collapse: boolean): number;
  /**
   * A hint, no effect on results: run the calling thread and the backend's kernel threads at this nice value (Linux),
   * so that other threads of the process (the server's HTTP thread) preempt the compute when they have work.
   */
  lowerPriority?(nice: number): void;
  /**
   * A read-only memory map of a whole file (weights used in place; pages load when first touched and the OS may
   * drop them again), or null where the backend cannot map files. Writing into it is an error.
   */
  mapFile?(path: string): Uint8Array | null;
  /**
   * Record SIGINT/SIGTERM instead of dying, readable during a synchronous loop (JavaScript's listeners wait for the
   * event loop): returns a function giving the signal received so far (0: none) and a function that restores the
   * previous handling. Absent where the backend cannot.
   */
  watchStopSignals?(): { received: () => number; restore: () => void };
  /** Hand a buffer back early; the backend may reuse it. Using it afterwards is an error. */
  free(buf: F32 | I32): void;
  /**
   * A hint, no effect on results: from now on `buf` (a tensor's whole storage, such as a weight) is written only by
   * this backend's kernels, so a backend that copies operands into memory of its own (wasm) may keep a resident
   * copy instead of copying it for every call. Writing `buf` any other way afterwards is an error (the copy goes
   * stale); free(buf) ends the promise.
   */
  pin?(buf: F32): void;

  // ---- layout ---------------------------------------------------------------------------------------------
  /** dst (strided) = src (strided), over `shape`. Used for contiguous(), concat and narrow-backward. */
  copy(src: Strided, dst: Strided, shape: readonly number[]): void;
  /** dst (strided) += src (strided), over `shape`; dst strides may be 0 (that is how broadcasts are summed). */
  accumulate(src: Strided, dst: Strided, shape: readonly number[]): void;
  /** out[n] = value */
  fill(out: F32, n: number, value: number): void;

  // ---- elementwise ----------------------------------------------------------------------------------------
  /** out (contiguous, `shape`) = a ∘ b, with a and b read through broadcast strides. */
  binary(op: BinaryOp, a: Strided, b: Strided, out: F32, shape: readonly number[]): void;
  /** out[n] = f(x[n]); `alpha` is the factor of 'scale'. */
  unary(op: UnaryOp, x: F32, out: F32, n: number, alpha: number): void;
  /** dx[n] = dy · f'(x); y = f(x) is passed for ops whose derivative is cheaper from it (exp, sqrt, rsqrt). */
  unaryBackward(op: UnaryOp, x: F32, y: F32, dy: F32, dx: F32, n: number, alpha: number): void;

  // ---- reductions -----------------------------------------------------------------------------------------
  /** x [O,N,I] → out [O,I] (sum or max over N). For max, `arg` [O,I] receives the first arg-max. */
  reduce(op: ReduceOp, x: F32, out: F32, arg: I32 | null, O: number, N: number, I: number): void;
  /** dx [O,N,I] += scatter of dy [O,I] at arg (max backward). */
  reduceMaxBackward(dy: F32, arg: I32, dx: F32, O: number, N: number, I: number): void;

  // ---- matmul ---------------------------------------------------------------------------------------------
  gemm(p: GemmParams): void;
  /**
   * Several independent products, as `gemm` on each in turn; their outputs must not overlap. Backends may run
   * them concurrently (one small product per thread), which is what the routed experts of an MoE layer need:
   * dozens of products too small to split across threads one by one.
   */
  gemmMany(ps: readonly GemmParams[]): void;

  /** A product with a stored weight (QGemmParams); inference only, no backward. */
  qgemm(p: QGemmParams): void;
  /** Several qgemm products whose outputs do not overlap (the routed experts of a layer), possibly side by side. */
  qgemmMany(ps: readonly QGemmParams[]): void;
  /** out = x [rows, K] stored as a writable type (the reference quantizers of src/quant/formats.ts, byte for byte). */
  quantizeRows(type: QuantType, x: F32, out: Uint8Array, rows: number, K: number): void;
  /** out [M,K] = decoded rows idx[m] of a stored W [N,K] (an embedding lookup); throws on an index outside [0,N). */
  dequantRows(type: QuantType, w: Uint8Array, idx: I32, out: F32, M: number, N: number, K: number): void;

  // ---- fused kernels --------------------------------------------------------------------------------------
  /** x [R,D], w [D] → y [R,D] = x·rsqrt(mean(x²)+eps)·w, rstd [R]. */
  rmsnorm(x: F32, w: F32, y: F32, rstd: F32, R: number, D: number, eps: number): void;
  /** dx [R,D] = ∂/∂x; dw [D] += ∂/∂w. */
  rmsnormBackward(x: F32, w: F32, rstd: F32, dy: F32, dx: F32, dw: F32, R: number, D: number): void;
  /** x [R,N] → y [R,N] softmax (or log-softmax) over N, max-subtracted. */
  softmax(x: F32, y: F32, R: number, N: number, log: boolean): void;
  softmaxBackward(y: F32, dy: F32, dx: F32, R: number, N: number, log: boolean): void;
  /** out[n] = silu(a)·b */
  swiglu(a: F32, b: F32, out: F32, n: number): void;
  swigluBackward(a: F32, b: F32, dy: F32, da: F32, db: F32, n: number): void;
  /**
   * logits [R,V], targets [R] → loss [R] = logsumexp − logit[target] (0 where target == ignoreIndex), lse [R].
   * Throws on a target outside [0,V) that is not ignoreIndex.
   */
  crossEntropy(logits: F32, targets: I32, loss: F32, lse: F32, R: number, V: number, ignoreIndex: number): void;
  /** dlogits [R,V] = dloss[r] · (softmax − onehot(target)); rows with ignoreIndex get 0. */
  crossEntropyBackward(logits: F32, targets: I32, lse: F32, dloss: F32, dlogits: F32, R: number, V: number, ignoreIndex: number): void;
  /** out [M,D] = src[idx[m], :] for src [N,D]; throws on an index outside [0,N). */
  gatherRows(src: F32, idx: I32, out: F32, M: number, N: number, D: number): void;
  /** dst [N,D][idx[m], :] += w[m] · src [M,D][m, :], w [M] (absent or null: 1); embedding backward, MoE combine. */
  scatterAddRows(src: F32, idx: I32, dst: F32, M: number, N: number, D: number, w?: F32 | null): void;
  /** dst [N,D][idx[m], :] = src [M,D][m, :] (writes into the paged KV cache); throws on an index outside [0,N). */
  scatterRows(src: F32, idx: I32, dst: F32, M: number, N: number, D: number): void;
  /**
   * Backward of the weighted scatter-add: dsrc [M,D][m, :] = w[m] · dy [N,D][idx[m], :] and
   * dw [M][m] = ⟨dy[idx[m], :], src[m, :]⟩; either output may be null.
   */
  scatterAddRowsBackward(dy: F32, idx: I32, src: F32, w: F32, dsrc: F32 | null, dw: F32 | null, M: number, N: number, D: number): void;
  /** out [R,K] = x [R,N][r, idx[r,k]] (take along the last axis). */
  gatherLast(x: F32, idx: I32, out: F32, R: number, N: number, K: number): void;
  /** dx [R,N][r, idx[r,k]] += dy [R,K][r,k] */
  scatterAddLast(dy: F32, idx: I32, dx: F32, R: number, N: number, K: number): void;
  /** Per row of x [R,N]: indices [R,K] of the K largest values, descending, ties to the lower index. */
  topk(x: F32, idx: I32, R: number, N: number, K: number): void;
  /** Per row of x [R,N]: a stable sort permutation [R,N] (ascending or descending). */
  argsort(x: F32, idx: I32, R: number, N: number, descending: boolean): void;
  /**
   * RoPE on interleaved pairs (spec §3.1): x [B,T,H,P+D], cos/sin [Bc,T,D/2] (Bc ∈ {1,B}) → out [B,T,H,P+D]: the
   * first P (`pass`, default 0) values of each head vector are copied, the last D rotated. inverse rotates by −θ
   * (the backward).
   */
  rope(x: F32, cos: F32, sin: F32, out: F32, B: number, T: number, H: number, D: number, Bc: number, inverse: boolean, pass?: number): void;
  attention(p: AttentionParams, out: F32, lse: F32): void;
  /** Gradients of attention; dq, dk, dv are overwritten (every row of their layouts). */
  attentionBackward(p: AttentionParams, out: F32, lse: F32, dout: F32, dq: F32, dk: F32, dv: F32): void;
  /** Paged decode attention (inference only, no backward); throws on a block id or context length out of range. */
  pagedAttention(p: PagedAttentionParams, out: F32): void;
  /** Absorbed MLA decode attention (MlaDecodeParams); out [N, H·dv]. Same checks as pagedAttention. */
  mlaDecode(p: MlaDecodeParams, out: F32): void;
  /** One decoupled-weight-decay Adam step, in place on param, m, v. */
  adamw(p: AdamWParams): void;
  /** Σ x[i]² over n elements, accumulated in double (global gradient norm). */
  sumsq(x: F32, n: number): number;
  /** adamw on every item: one call for all of a model's tensors (an optimizer step). */
  adamwMany(ps: readonly AdamWParams[]): void;
  /** Σ over all the xs of Σ x[i]² (their first ns[i] elements), in double: the global gradient norm in one call. */
  sumsqMany(xs: readonly F32[], ns: readonly number[]): number;

  // ---- threads (backends that run kernels on several threads) ----------------------------------------------
  /** Threads the kernels use. */
  threads?(): number;
  /** Set the thread count (DSV2_THREADS sets the start value; default: all cores). */
  setThreads?(n: number): void;

  // ---- instruction sets (backends with kernels for several) ---------------------------------------------------
  /** The instruction set the kernels run with now (native: 'avx2' or 'avx512'). */
  isa?(): string;
  /** The instruction sets this CPU runs, the best last. */
  isas?(): string[];
  /**
   * Run the kernels with another of isas() (DSV2_ISA sets the start value; default: the best). Results do not change.
   * Native: one setting for the whole process, every worker thread's backend included.
   */
  setIsa?(name: string): void;
}
