// Packed, cache-blocked SGEMM in the BLIS/GotoBLAS manner, plus a GEMV path for decode (M ≤ GEMV_ROWS).
//
// Loop nest (BLIS): jc over NC columns → pc over KC of the K axis (pack B: KC×NC, lives in L3) → ic over MC rows
// (pack A: MC×KC, lives in L2) → jr over NR-wide B micro-panels (one stays in L1) → ir over MR-high A micro-panels
// → a 6×16 register-blocked micro-kernel (12 accumulators + 2 B vectors + 1 broadcast A = 15 of 16 ymm registers).
// Packing reads any row/column stride, so transposed operands cost nothing extra. Threads split the (jr, ir)
// micro-tile grid and pack the shared panels together.
#include <algorithm>
#include <vector>

#include "kernels.h"

namespace dsv2 {
namespace {

constexpr int MR = GEMM_MR;
constexpr int NR = GEMM_NR;


// C[mr×nr] = beta·C + Ap·Bp over kc (Ap: kc×MR, Bp: kc×NR, both packed).
}  // namespace

void micro_6x16(i64 kc, const float* __restrict A, const float* __restrict B, float* C, i64 ldc, int mr, int nr, float beta) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
#define DSV2_STEP(k)                                           \
  {                                                            \
    const __m256 b0 = _mm256_load_ps(B + (k) * NR);            \
    const __m256 b1 = _mm256_load_ps(B + (k) * NR + 8);        \
    __m256 a = _mm256_broadcast_ss(A + (k) * MR + 0);          \
    c00 = _mm256_fmadd_ps(a, b0, c00);                         \
    c01 = _mm256_fmadd_ps(a, b1, c01);                         \
    a = _mm256_broadcast_ss(A + (k) * MR + 1);                 \
    c10 = _mm256_fmadd_ps(a, b0, c10);                         \
    c11 = _mm256_fmadd_ps(a, b1, c11);                         \
    a = _mm256_broadcast_ss(A + (k) * MR + 2);                 \
    c20 = _mm256_fmadd_ps(a, b0, c20);                         \
    c21 = _mm256_fmadd_ps(a, b1, c21);                         \
    a = _mm256_broadcast_ss(A + (k) * MR + 3);                 \
    c30 = _mm256_fmadd_ps(a, b0, c30);                         \
    c31 = _mm256_fmadd_ps(a, b1, c31);                         \
    a = _mm256_broadcast_ss(A + (k) * MR + 4);                 \
    c40 = _mm256_fmadd_ps(a, b0, c40);                         \
    c41 = _mm256_fmadd_ps(a, b1, c41);                         \
    a = _mm256_broadcast_ss(A + (k) * MR + 5);                 \
    c50 = _mm256_fmadd_ps(a, b0, c50);                         \
    c51 = _mm256_fmadd_ps(a, b1, c51);                         \
  }
  i64 k = 0;
  for (; k + 4 <= kc; k += 4) {
    _mm_prefetch((const char*)(B + (k + 8) * NR), _MM_HINT_T0);
    DSV2_STEP(0) DSV2_STEP(1) DSV2_STEP(2) DSV2_STEP(3)
    A += 4 * MR;
    B += 4 * NR;
  }
  for (; k < kc; k++) {
    DSV2_STEP(0)
    A += MR;
    B += NR;
  }
#undef DSV2_STEP
  store_tile(C, ldc, mr, nr, beta, {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51});
}

namespace {

constexpr i64 KC = 256;  // B micro-panel KC·NR·4 = 16 KiB: half of L1d
constexpr i64 MC = 144;  // packed A block MC·KC·4 = 144 KiB: under a third of L2
constexpr i64 NC = 4096; // packed B block KC·NC·4 = 4 MiB: an eighth of L3 (a 4,096-wide vocabulary in one block)

struct Gemm {
  i64 M, N, K;
  const float* a;
  i64 ars, acs;
  const float* b;
  i64 brs, bcs;
  float* c;
  i64 ldc;
  float alpha, beta;
};

/**
 * A micro-kernel A panel from `rows` (≤ GEMM_MR) rows of X (row stride ld) over kc columns, times scale:
 * dst[k·MR + r] = scale·X[r·ld + k], rows beyond `rows` zero. Eight columns at a time go through an 8×8 register
 * transpose; each k's 8-lane store spills two lanes into the next k's slot, which that k then overwrites.
 */
void pack_rows_kmajor(const float* X, i64 ld, int rows, i64 kc, float scale, float* dst) {
  const __m256 sv = _mm256_set1_ps(scale);
  i64 k = 0;
  for (; k + 8 <= kc; k += 8) {
    __m256 t[8];
    for (int r = 0; r < 8; r++) t[r] = r < rows ? _mm256_mul_ps(sv, _mm256_loadu_ps(X + r * ld + k)) : _mm256_setzero_ps();
    transpose8(t);
    for (int j = 0; j < 8; j++) {
      if (k + j + 1 < kc) _mm256_storeu_ps(dst + (k + j) * MR, t[j]);
      else _mm256_maskstore_ps(dst + (k + j) * MR, tail_mask(MR), t[j]);
    }
  }
  for (; k < kc; k++)
    for (int r = 0; r < MR; r++) dst[k * MR + r] = r < rows ? scale * X[r * ld + k] : 0.f;
}

// A block rows [i0, i0+mc) × cols [p0, p0+kc) → MR-row panels, k-major inside a panel, scaled by alpha,
// zero-padded to whole panels. Whole panels move as vectors: rows contiguous in k (x of x·Wᵀ) through 8×8
// register transposes, columns contiguous in i (a transposed A) as one 6-wide load per k. A vector writes 8 floats
// where a panel step holds 6; the 2 extra land in the next step's slot, which is written after, and the last step
// of the panel uses a masked store so nothing spills past it.
void pack_a_panel(const Gemm& g, i64 i0, i64 mc, i64 p0, i64 kc, i64 panel, float* dst) {
  float* d = dst + panel * MR * kc;
  const i64 r0 = panel * MR;
  const int rows = (int)std::min<i64>(MR, mc - r0);
  if (g.acs == 1) return pack_rows_kmajor(g.a + (i0 + r0) * g.ars + p0, g.ars, rows, kc, g.alpha, d);
  if (g.ars == 1) {  // a transposed A: for each k the panel's rows are contiguous
    const __m256 av = _mm256_set1_ps(g.alpha);
    const __m256i m = tail_mask(rows);
    for (i64 k = 0; k < kc; k++) {
      const __m256 v = _mm256_mul_ps(av, _mm256_maskload_ps(g.a + (p0 + k) * g.acs + i0 + r0, m));
      if (k + 1 < kc) _mm256_storeu_ps(d + k * MR, v);  // two lanes spill into the next k's slot, rewritten next
      else _mm256_maskstore_ps(d + k * MR, tail_mask(MR), v);
    }
    return;
  }
  for (i64 k = 0; k < kc; k++) {
    const float* s = g.a + (p0 + k) * g.acs + (i0 + r0) * g.ars;
    int r = 0;
    for (; r < rows; r++) d[k * MR + r] = g.alpha * s[r * g.ars];
    for (; r < MR; r++) d[k * MR + r] = 0.f;
  }
}

// The whole A block [i0, i0+mc) × [p0, p0+kc) as MR-row panels. A transposed A (columns contiguous in i) is read
// k-outer: each k's mc values are one contiguous run (a few cache lines the prefetcher follows), where panel by
// panel every k would be a fresh cache line on another page (dlogitsᵀ's rows lie 16 KiB apart): a gather that
// ran at ~6 GB/s and took a fifth of the LM head's dW.
void pack_a_block(const Gemm& g, i64 i0, i64 mc, i64 p0, i64 kc, float* dst) {
  const i64 nap = (mc + MR - 1) / MR;
  if (g.ars != 1 || g.acs == 1) {
    for (i64 ip = 0; ip < nap; ip++) pack_a_panel(g, i0, mc, p0, kc, ip, dst);
    return;
  }
  const __m256 av = _mm256_set1_ps(g.alpha);
  const i64 whole = mc / MR;  // panels of MR real rows
  const int rest = (int)(mc - whole * MR);
  // plain 8-wide loads while they stay inside the matrix (the 2 extra lanes are dropped below)
  const i64 plain = std::min<i64>(whole, std::max<i64>(0, (g.M - i0 - 8) / MR + 1));
  for (i64 k = 0; k < kc; k++) {
    const float* s = g.a + (p0 + k) * g.acs + i0;
    float* d = dst + k * MR;
    const bool last = k + 1 == kc;  // storeu spills 2 lanes into slot k+1 of the same panel, written next
    for (i64 ip = 0; ip < nap; ip++) {
      const __m256 v = _mm256_mul_ps(av, ip < plain ? _mm256_loadu_ps(s + ip * MR) : _mm256_maskload_ps(s + ip * MR, tail_mask(ip < whole ? MR : rest)));
      if (last) _mm256_maskstore_ps(d + ip * MR * kc, tail_mask(MR), v);
      else _mm256_storeu_ps(d + ip * MR * kc, v);
    }
  }
}

// B block rows [p0, p0+kc) × cols [j0, j0+nc) → NR-column panels, k-major inside a panel, zero-padded.
void pack_b_panel(const Gemm& g, i64 j0, i64 nc, i64 p0, i64 kc, i64 panel, float* dst) {
  float* d = dst + panel * NR * kc;
  const i64 c0 = j0 + panel * NR;
  const int cols = (int)std::min<i64>(NR, nc - panel * NR);
  if (g.bcs == 1) {
    if (cols == NR) {
      for (i64 k = 0; k < kc; k++) {
        const float* s = g.b + (p0 + k) * g.brs + c0;
        _mm_prefetch((const char*)(s + 2 * NR), _MM_HINT_T0);  // the same rows of the panel after next
        _mm256_store_ps(d + k * NR, _mm256_loadu_ps(s));
        _mm256_store_ps(d + k * NR + 8, _mm256_loadu_ps(s + 8));
      }
    } else {
      for (i64 k = 0; k < kc; k++) {
        const float* s = g.b + (p0 + k) * g.brs + c0;
        int j = 0;
        for (; j < cols; j++) d[k * NR + j] = s[j];
        for (; j < NR; j++) d[k * NR + j] = 0.f;
      }
    }
  } else if (g.brs == 1) {
    // B is a transposed row-major matrix (x·Wᵀ): each column is contiguous in k, so 8×8 tiles move through an
    // in-register transpose and both the reads and the writes are whole vectors.
    pack_rows_transposed(g.b + c0 * g.bcs + p0, g.bcs, cols, kc, d);
  } else {
    for (int j = 0; j < NR; j++) {
      if (j < cols) {
        const float* s = g.b + (c0 + j) * g.bcs + p0 * g.brs;
        for (i64 k = 0; k < kc; k++) d[k * NR + j] = s[k * g.brs];
      } else {
        for (i64 k = 0; k < kc; k++) d[k * NR + j] = 0.f;
      }
    }
  }
}

void scale_c(const Gemm& g) {
  for (i64 i = 0; i < g.M; i++) {
    float* cr = g.c + i * g.ldc;
    if (g.beta == 0.f) std::memset(cr, 0, sizeof(float) * g.N);
    else if (g.beta != 1.f) for (i64 j = 0; j < g.N; j++) cr[j] *= g.beta;
  }
}

/** Rows of A per block: at most MC, shrunk so that the blocks divide evenly among nt threads (whole MR panels). */
inline i64 mc_block(i64 M, int nt) {
  const i64 per_thread = (M + (i64)nt * MC - 1) / ((i64)nt * MC);
  return ((M + per_thread * nt - 1) / (per_thread * nt) + MR - 1) / MR * MR;
}

/**
 * Every micro-tile of a packed A block (nap MR-row panels, m rows) against packed B panels [0, nbp) (n columns, each
 * panel kc×NR, consecutive) into C (the block's top-left corner): pairs of B panels through the AVX-512 6×32 kernel
 * where the CPU has it, the AVX2 6×16 otherwise and for an odd last panel.
 */
void sweep_panels(i64 kc, const float* Ap, i64 nap, i64 m, const float* Bp, i64 nbp, i64 n, float* C, i64 ldc, float beta) {
  const bool wide = use_avx512();
  for (i64 jp = 0; jp < nbp; jp++) {
    const float* B0 = Bp + jp * NR * kc;
    const bool pair = wide && jp + 1 < nbp;
    const int nr = (int)std::min<i64>(pair ? 2 * NR : NR, n - jp * NR);
    for (i64 ip = 0; ip < nap; ip++) {
      const int mr = (int)std::min<i64>(MR, m - ip * MR);
      float* c = C + ip * MR * ldc + jp * NR;
      if (pair) micro_6x32(kc, Ap + ip * MR * kc, B0, B0 + NR * kc, c, ldc, mr, nr, beta);
      else micro_6x16(kc, Ap + ip * MR * kc, B0, c, ldc, mr, nr, beta);
    }
    if (pair) jp++;
  }
}

void gemm_blocked(const Gemm& g, int nt) {
  const i64 nc_max = std::min<i64>(NC, (g.N + NR - 1) / NR * NR);
  const i64 kc_max = std::min<i64>(KC, g.K);
  // Threads take whole MC-row blocks of A (BLIS's ic loop in parallel): each packs its own A block and sweeps
  // the shared packed B, so the only barriers are around packing B.
  const i64 mc_blk = mc_block(g.M, nt);
  float* Bp = scratch(0, (size_t)nc_max * kc_max);  // shared by the team: the calling thread's slot 0
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    float* Ap = scratch(1, (size_t)mc_blk * kc_max);  // each thread's own
    for (i64 jc = 0; jc < g.N; jc += NC) {
      const i64 nc = std::min<i64>(NC, g.N - jc);
      const i64 nbp = (nc + NR - 1) / NR;
      for (i64 pc = 0; pc < g.K; pc += KC) {
        const i64 kc = std::min<i64>(KC, g.K - pc);
        const float beta = pc == 0 ? g.beta : 1.f;
#pragma omp for schedule(static)
        for (i64 jp = 0; jp < nbp; jp++) pack_b_panel(g, jc, nc, pc, kc, jp, Bp);
#pragma omp for schedule(static)
        for (i64 ic = 0; ic < g.M; ic += mc_blk) {
          const i64 mc = std::min<i64>(mc_blk, g.M - ic);
          const i64 nap = (mc + MR - 1) / MR;
          pack_a_block(g, ic, mc, pc, kc, Ap);
          sweep_panels(kc, Ap, nap, mc, Bp, nbp, nc, g.c + ic * g.ldc + jc, g.ldc, beta);
        }
      }
    }
  }
}

// Long K, narrow N (dX = dY·W and dW = dYᵀ·X of the projections, the LM head's K = 4,096): the whole of B is
// packed once, by the team, behind one barrier; then each thread takes its MC-row blocks of A and runs the k-blocks
// innermost, so its block of C (mc×N, ≤ 256 KiB) stays in L2 across them. The blocked path instead packs one k-block
// of B at a time with two barriers per k-block (16 pairs for K = 4,096) and streams C through L3 at every k-block.
void gemm_whole_b(const Gemm& g, int nt) {
  const i64 nbp = (g.N + NR - 1) / NR, nkb = (g.K + KC - 1) / KC;
  const i64 mc_blk = mc_block(g.M, nt);
  float* Bp = scratch(0, (size_t)nbp * NR * g.K);  // k-block pc's panels start at pc·nbp·NR (kc×NR each)
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    float* Ap = scratch(1, (size_t)mc_blk * std::min<i64>(KC, g.K));
#pragma omp for schedule(static) collapse(2)
    for (i64 kb = 0; kb < nkb; kb++)
      for (i64 jp = 0; jp < nbp; jp++) {
        const i64 pc = kb * KC, kc = std::min<i64>(KC, g.K - pc);
        pack_b_panel(g, 0, g.N, pc, kc, jp, Bp + pc * nbp * NR);
      }
#pragma omp for schedule(static)
    for (i64 ic = 0; ic < g.M; ic += mc_blk) {
      const i64 mc = std::min<i64>(mc_blk, g.M - ic);
      const i64 nap = (mc + MR - 1) / MR;
      for (i64 pc = 0; pc < g.K; pc += KC) {
        const i64 kc = std::min<i64>(KC, g.K - pc);
        const float beta = pc == 0 ? g.beta : 1.f;
        const float* Bk = Bp + pc * nbp * NR;
        pack_a_block(g, ic, mc, pc, kc, Ap);
        sweep_panels(kc, Ap, nap, mc, Bk, nbp, g.N, g.c + ic * g.ldc, g.ldc, beta);
      }
    }
  }
}

// M ≤ MC: all of A is packed first, by the team, behind one barrier; then for each k-block each thread walks its
// share of the NR-wide column panels, packing each B micro-panel into its own L1-sized buffer just before the
// MR-high panels of A sweep it. Nothing of B is written beyond L1, which matters when B is the big operand
// (64×1024 · 1024×4096). The static split gives a thread the same panels at every k-block, so its C panels
// need no barrier between k-blocks (dW of the narrow projections has 8 k-blocks: 80×256×2048).
void gemm_small_m(const Gemm& g, int nt) {
  const i64 nap = (g.M + MR - 1) / MR, nkb = (g.K + KC - 1) / KC;
  float* Ap = scratch(1, (size_t)nap * MR * g.K);  // k-block pc's panels start at pc·nap·MR (kc×MR each)
  const i64 nbp = (g.N + NR - 1) / NR;
  const i64 group = use_avx512() ? 2 : 1;  // B panels a thread packs and sweeps together (the 6×32 kernel takes two)
  const i64 ngroups = (nbp + group - 1) / group;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    float* Bp = scratch(2, (size_t)group * NR * std::min<i64>(KC, g.K));
#pragma omp for schedule(static) collapse(2)
    for (i64 kb = 0; kb < nkb; kb++)
      for (i64 ip = 0; ip < nap; ip++) {
        const i64 pc = kb * KC;
        pack_a_panel(g, 0, g.M, pc, std::min<i64>(KC, g.K - pc), ip, Ap + pc * nap * MR);
      }
    for (i64 pc = 0; pc < g.K; pc += KC) {
      const i64 kc = std::min<i64>(KC, g.K - pc);
      const float beta = pc == 0 ? g.beta : 1.f;
      const float* Ak = Ap + pc * nap * MR;
#pragma omp for schedule(static) nowait
      for (i64 q = 0; q < ngroups; q++) {
        const i64 j0 = q * group * NR, nc = std::min<i64>(group * NR, g.N - j0), np = (nc + NR - 1) / NR;
        for (i64 jp = 0; jp < np; jp++) pack_b_panel(g, j0, nc, pc, kc, jp, Bp);
        sweep_panels(kc, Ak, nap, g.M, Bp, np, nc, g.c + j0, g.ldc, beta);
      }
    }
  }
}

// Decode GEMV, B read as columns (B(k, n) = b[n·bcs + k·brs] with brs == 1: x·Wᵀ for W [N,K] row-major):
// every output is a dot product over contiguous memory. Four columns run interleaved, each with two accumulators,
// so eight independent FMA chains hide the FMA latency and one load of x feeds four columns (one dot product at a
// time was latency-bound: 1×256×64 at 7 GFLOP/s on one thread).
/** Columns [4·bi, 4·bi + 4) of a dot-product GEMV (see gemv_dot); `last` is the block count, for the prefetch. */
inline void gemv_dot_block(const Gemm& g, i64 bi) {
  const i64 n0 = bi * 4;
  const int cols = (int)std::min<i64>(4, g.N - n0);
  const float* w0 = g.b + n0 * g.bcs;
  const float* w1 = g.b + (n0 + (cols > 1 ? 1 : 0)) * g.bcs;
  const float* w2 = g.b + (n0 + (cols > 2 ? 2 : 0)) * g.bcs;
  const float* w3 = g.b + (n0 + (cols > 3 ? 3 : 0)) * g.bcs;
  // the weights come from DRAM at decode: prefetch the rows PF blocks ahead, a cache line of each per k step, so
  // many lines are in flight (the hardware prefetcher alone left a cold 64×256 expert product latency-bound)
  constexpr i64 PF = 4;
  const bool prefetch = n0 + 4 * PF + 3 < g.N;
  const float* pf = g.b + (prefetch ? n0 + 4 * PF : 0) * g.bcs;
  for (i64 i = 0; i < g.M; i++) {
    const float* x = g.a + i * g.ars;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps(), t2 = _mm256_setzero_ps(), t3 = _mm256_setzero_ps();
    i64 k = 0;
    for (; k + 16 <= g.K; k += 16) {
      if (i == 0 && prefetch)
        for (int q = 0; q < 4; q++) _mm_prefetch(reinterpret_cast<const char*>(pf + q * g.bcs + k), _MM_HINT_T0);
      const __m256 xa = _mm256_loadu_ps(x + k), xb = _mm256_loadu_ps(x + k + 8);
      s0 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w0 + k), s0), t0 = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w0 + k + 8), t0);
      s1 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w1 + k), s1), t1 = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w1 + k + 8), t1);
      s2 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w2 + k), s2), t2 = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w2 + k + 8), t2);
      s3 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w3 + k), s3), t3 = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w3 + k + 8), t3);
    }
    for (; k < g.K; k += 8) {
      const i64 l = std::min<i64>(8, g.K - k);
      const __m256 xa = ld(x, k, l);
      s0 = _mm256_fmadd_ps(xa, ld(w0, k, l), s0), s1 = _mm256_fmadd_ps(xa, ld(w1, k, l), s1);
      s2 = _mm256_fmadd_ps(xa, ld(w2, k, l), s2), s3 = _mm256_fmadd_ps(xa, ld(w3, k, l), s3);
    }
    const float out[4] = {hsum(_mm256_add_ps(s0, t0)), hsum(_mm256_add_ps(s1, t1)), hsum(_mm256_add_ps(s2, t2)), hsum(_mm256_add_ps(s3, t3))};
    float* cr = g.c + i * g.ldc + n0;
    for (int q = 0; q < cols; q++) cr[q] = g.beta == 0.f ? g.alpha * out[q] : g.beta * cr[q] + g.alpha * out[q];
  }
}

// Up to this many rows of x go through the dot-product GEMV: it reads each weight row once, in place, while four of
// them sit in L1 for all rows of x (a batch of decode tokens, an expert's few routed tokens); above it the packed
// micro-kernel's arithmetic pays for packing the weight. Measured on an Ice Lake Xeon (2 threads, x·Wᵀ, the dot
// path against the packed one at the same M): 6 and 8 rows 1.2–2.2× faster at N×K = 4096×256, 1024×1024, 256×256
// and 64×256, with AVX2 and with AVX-512 kernels alike; 16 rows even with AVX2 and slower with AVX-512; 32 and 64
// rows slower (0.5–0.9×). An earlier machine (Zen 4) had measured 8 rows no better than 4, within its noise.
constexpr i64 GEMV_ROWS = 8;
/** Up to this many rows a product on several threads takes gemm_small_m's per-thread B panels (see gemm_one). */
constexpr i64 SHORT_ROWS = 128;

void gemv_dot(const Gemm& g, int nt) {
  const i64 blocks = (g.N + 3) / 4;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (i64 bi = 0; bi < blocks; bi++) gemv_dot_block(g, bi);
}

// Decode GEMV, B read as rows (bcs == 1): C[i, :] += A[i, k] · B[k, :], threads split the columns.
void gemv_axpy(const Gemm& g, int nt) {
  scale_c(g);
  const i64 chunk = std::max<i64>(64, ((g.N + nt - 1) / nt + 7) / 8 * 8);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (i64 n0 = 0; n0 < g.N; n0 += chunk) {
    const i64 n1 = std::min<i64>(g.N, n0 + chunk);
    for (i64 i = 0; i < g.M; i++) {
      float* cr = g.c + i * g.ldc;
      for (i64 k = 0; k < g.K; k++) {
        const float aik = g.alpha * g.a[i * g.ars + k * g.acs];
        const __m256 av = _mm256_set1_ps(aik);
        const float* br = g.b + k * g.brs;
        i64 n = n0;
        for (; n + 8 <= n1; n += 8) _mm256_storeu_ps(cr + n, _mm256_fmadd_ps(av, _mm256_loadu_ps(br + n), _mm256_loadu_ps(cr + n)));
        for (; n < n1; n++) cr[n] += aik * br[n];
      }
    }
  }
}

// A read in place by micro_6x16_direct, only B packed: for a row-major A (every x·Wᵀ and dY·W of the model), and a
// transposed A that is narrow in both M and N (an expert's dW of its down projection). Packing A cost up to a
// quarter of a product whose N is small (each A element feeds only 2·N flops) and a tenth even at N = 4,096;
// read in place, a six-row strip of A (6 × kc) sits in L1 while it sweeps the k-block's B panels. Measured on
// this machine's Zen 4 against the packed paths, bit-identical results: 2048×256×384 178 → 208 GFLOP/s, the LM
// head's 2048×4096×256 159 → 209, an expert's 256×64×256 155 → 190 (one thread).
// B is packed a column block at a time (all of K, ≤ 16 MiB), by the team, behind one barrier; then each thread
// takes whole strips and, k-block by k-block, always the same strips (a static split), so its rows of C need no
// barrier between k-blocks.
void gemm_direct_a(const Gemm& g, int nt) {
  const i64 strips = (g.M + MR - 1) / MR, nkb = (g.K + KC - 1) / KC;
  const i64 ncb = std::min<i64>((g.N + NR - 1) / NR * NR, std::max<i64>(NR, (i64)(4 << 20) / g.K / NR * NR));
  float* Bp = scratch(nt > 1 ? 0 : 2, (size_t)ncb * g.K);  // k-block pc's panels start at pc·ncb (kc×NR each)
#pragma omp parallel num_threads(nt) if (nt > 1)
  for (i64 jc = 0; jc < g.N; jc += ncb) {
    const i64 nc = std::min<i64>(ncb, g.N - jc), nbp = (nc + NR - 1) / NR;
    if (jc > 0) {
#pragma omp barrier
    }
#pragma omp for schedule(static) collapse(2)
    for (i64 kb = 0; kb < nkb; kb++)
      for (i64 jp = 0; jp < nbp; jp++) {
        const i64 pc = kb * KC;
        pack_b_panel(g, jc, nc, pc, std::min<i64>(KC, g.K - pc), jp, Bp + pc * ncb);
      }
    for (i64 pc = 0; pc < g.K; pc += KC) {
      const i64 kc = std::min<i64>(KC, g.K - pc);
      const float beta = pc == 0 ? g.beta : 1.f;
      const float* Bk = Bp + pc * ncb;
#pragma omp for schedule(static) nowait
      for (i64 s = 0; s < strips; s++) {
        const i64 i0 = s * MR;
        const int mr = (int)std::min<i64>(MR, g.M - i0);
        const float* a = g.a + i0 * g.ars + pc * g.acs;
        float* c = g.c + i0 * g.ldc + jc;
        if (g.acs == 1) direct_panels<true>(kc, a, g.ars, 1, Bk, NR * kc, nc, c, g.ldc, mr, beta);
        else direct_panels<false>(kc, a, g.ars, g.acs, Bk, NR * kc, nc, c, g.ldc, mr, beta);
      }
    }
  }
}

void gemm_one(const Gemm& g, int nt) {
  if (g.M == 0 || g.N == 0) return;
  if (g.K == 0 || g.alpha == 0.f) {
    scale_c(g);
    return;
  }
  if (g.M <= GEMV_ROWS && g.brs == 1 && g.acs == 1) return gemv_dot(g, nt);
  if (g.M <= 4 && g.bcs == 1) return gemv_axpy(g, nt);
  // A short x·Wᵀ-like product (row-major A, 9–128 rows: a decode batch of sequences, a short prefill chunk) on
  // several threads: each thread packs its own B panels into L1 and sweeps all of A over them, where the in-place
  // path below packs all of B (up to 16 MiB) through L3 and splits a few six-row strips unevenly. Measured on an
  // Ice Lake Xeon, 2 threads, against the in-place path: 12–128 × 4096×256 1.1–1.9×, × 1024×1024 1.0–1.9×,
  // × 256×256 1.1–1.7×, with AVX2 and with AVX-512 kernels. On one thread (or nested in a parallel region, where
  // one thread runs it) the in-place path is faster (an expert's 157×64×256: 1.8×), so it keeps those; and that
  // path splits columns only, so it needs at least two column pieces per thread.
  const i64 pieces = (g.N + NR - 1) / NR / (use_avx512() ? 2 : 1);
  if (nt > 1 && g.M > GEMV_ROWS && g.M <= SHORT_ROWS && g.acs == 1 && pieces >= 2 * nt && !omp_in_parallel())
    return gemm_small_m(g, nt);
  // transposed A in place only when short and narrow: a long one is a gather across pages (4096×256×2048: −25%)
  if (g.alpha == 1.f && (g.acs == 1 || (g.ars == 1 && g.M <= 512 && g.N <= 128))) return gemm_direct_a(g, nt);
  if (g.M <= MC) return gemm_small_m(g, nt);
  if (g.K > KC && g.N <= 512 && (double)g.K * g.N * 4 <= 8e6) return gemm_whole_b(g, nt);
  gemm_blocked(g, nt);
}

}  // namespace

namespace {
Gemm batch_item(const GemmArgs& p, i64 q) {
  return Gemm{p.M, p.N, p.K, p.a + p.aOff + q * p.aBS, p.aRS, p.aCS, p.b + p.bOff + q * p.bBS, p.bRS, p.bCS,
              p.c + p.cOff + q * p.cBS, p.N, p.alpha, p.beta};
}
}  // namespace

void gemm(const GemmArgs& p) {
  const double flops = 2.0 * p.M * p.N * p.K;
  auto item = [&](i64 q) { return batch_item(p, q); };
  // A decode product (M ≤ GEMV_ROWS) reads its weights from DRAM, latency-bound: a second thread keeps twice the cache
  // lines in flight, which pays once the weights pass 64 KiB even when the flops alone would not split
  const bool gemv = p.M <= GEMV_ROWS && (double)p.N * p.K * p.batch >= 16384;
  const int nt = gemv ? threads() : threads_for(flops * p.batch);
  // Many small products: one per thread, each single-threaded. Not when every item adds into the same C.
  if (p.batch >= nt && nt > 1 && p.cBS != 0 && flops < 4e7) {
#pragma omp parallel for num_threads(nt) schedule(dynamic)
    for (i64 q = 0; q < p.batch; q++) gemm_one(item(q), 1);
    return;
  }
  for (i64 q = 0; q < p.batch; q++) {
    gemm_one(item(q), gemv ? nt : threads_for(flops));  // with cBS == 0 and beta 1 the items sum into one C
  }
}

void gemm_many(const GemmArgs* items, i64 count) {
  // Decode's routed experts: several GEMVs (M ≤ GEMV_ROWS, x·Wᵀ) whose weights come from DRAM. Their column blocks
  // form one pool split evenly over the threads, so both threads stream weights the whole time (one product per
  // thread left a thread idle when the count was odd, and each product's rows latency-bound on one core).
  {
    bool all_gemv = count > 1;
    i64 blocks = 0;
    double bytes = 0;
    for (i64 i = 0; i < count && all_gemv; i++) {
      const GemmArgs& p = items[i];
      all_gemv = p.batch == 1 && p.M <= GEMV_ROWS && p.bRS == 1 && p.aCS == 1 && p.K > 0 && p.alpha != 0.f;
      blocks += (p.N + 3) / 4;
      bytes += 4.0 * p.N * p.K;
    }
    if (all_gemv && bytes >= 65536) {
      std::vector<i64> first(count + 1, 0);  // first block of each item in the pool
      for (i64 i = 0; i < count; i++) first[i + 1] = first[i] + (items[i].N + 3) / 4;
      const int nt = threads();
#pragma omp parallel num_threads(nt) if (nt > 1)
      {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        const i64 b0 = blocks * t / n, b1 = blocks * (t + 1) / n;
        i64 item = std::upper_bound(first.begin(), first.end(), b0) - first.begin() - 1;
        for (i64 bi = b0; bi < b1; bi++) {
          while (bi >= first[item + 1]) item++;
          gemv_dot_block(batch_item(items[item], 0), bi - first[item]);
        }
      }
      return;
    }
  }
  double total = 0, biggest = 0;
  std::vector<std::pair<double, i64>> order;  // largest first, so the dynamic schedule ends balanced
  for (i64 i = 0; i < count; i++) {
    const double f = 2.0 * items[i].batch * items[i].M * items[i].N * items[i].K;
    total += f;
    biggest = std::max(biggest, f);
    order.emplace_back(f, i);
  }
  const int nt = threads_for(total);
  std::sort(order.begin(), order.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
  // Would whole products, largest first to the least-loaded thread, keep the threads within 10% of each other?
  // (a linear's dX and dW: equal flops, one each)
  std::vector<double> load(std::max(nt, 1), 0.0);
  for (const auto& o : order) *std::min_element(load.begin(), load.end()) += o.first;
  const bool balanced = *std::max_element(load.begin(), load.end()) <= 1.1 * total / std::max(nt, 1);
  // Splitting one product across threads costs a fork/join and barriers per block; below ~4·10⁷ flops that is
  // dearer than giving each thread whole products, and so is any split when whole products balance.
  if (nt > 1 && count >= nt && (biggest < 4e7 || balanced)) {
#pragma omp parallel for num_threads(nt) schedule(dynamic)
    for (i64 j = 0; j < count; j++) {
      const GemmArgs& p = items[order[j].second];
      for (i64 q = 0; q < p.batch; q++) gemm_one(batch_item(p, q), 1);
    }
    return;
  }
  for (i64 i = 0; i < count; i++) gemm(items[i]);
}

}  // namespace dsv2
