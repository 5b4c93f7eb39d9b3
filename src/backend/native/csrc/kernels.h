// The native kernel set: one C++ function per kernel of the backend interface (src/backend/backend.ts), with the
// same semantics as the `ts` reference. Pointers are the typed arrays' own memory; nothing is copied.
#pragma once
#include "common.h"

namespace dsv2 {

struct GemmArgs {
  i64 batch, M, N, K;
  const float* a;
  i64 aOff, aBS, aRS, aCS;
  const float* b;
  i64 bOff, bBS, bRS, bCS;
  float* c;
  i64 cOff, cBS;
  float alpha, beta;
};
void gemm(const GemmArgs& p);

// The GEMM micro-kernel, shared with the attention kernels: C[mr×nr] = beta·C + A·B over kc, where A is packed
// k-major in GEMM_MR-row panels (A[k·MR + r]) and B k-major in GEMM_NR-column panels (B[k·NR + c], 32-byte aligned).
constexpr int GEMM_MR = 6;
constexpr int GEMM_NR = 16;
void micro_6x16(i64 kc, const float* __restrict A, const float* __restrict B, float* C, i64 ldc, int mr, int nr, float beta);
// AVX-512 (avx512.cc; only where use_avx512()): the same over two adjacent B panels B0, B1 (a 6×32 tile, nr ≤ 32),
// packed or, in the direct form, with A read in place as micro_6x16_direct does. Bit-identical to two 6×16 calls.
void micro_6x32(i64 kc, const float* __restrict A, const float* __restrict B0, const float* __restrict B1, float* C, i64 ldc, int mr, int nr,
                float beta);
void micro_6x32_direct(i64 kc, const float* A, i64 ars, i64 acs, const float* __restrict B0, const float* __restrict B1, float* C, i64 ldc,
                       int mr, int nr, float beta);

/** C[0..16) = beta·C + v0|v1, with beta 0 and 1 special-cased. */
inline void store_row(float* c, __m256 v0, __m256 v1, float beta) {
  if (beta == 0.f) {
    _mm256_storeu_ps(c, v0);
    _mm256_storeu_ps(c + 8, v1);
  } else if (beta == 1.f) {
    _mm256_storeu_ps(c, _mm256_add_ps(_mm256_loadu_ps(c), v0));
    _mm256_storeu_ps(c + 8, _mm256_add_ps(_mm256_loadu_ps(c + 8), v1));
  } else {
    const __m256 bb = _mm256_set1_ps(beta);
    _mm256_storeu_ps(c, _mm256_fmadd_ps(bb, _mm256_loadu_ps(c), v0));
    _mm256_storeu_ps(c + 8, _mm256_fmadd_ps(bb, _mm256_loadu_ps(c + 8), v1));
  }
}

/** The 6×16 accumulator tile (two registers per row) into C[mr×nr] with beta; partial tiles through a buffer. */
inline void store_tile(float* C, i64 ldc, int mr, int nr, float beta, const __m256 (&c)[12]) {
  constexpr int MR = GEMM_MR, NR = GEMM_NR;
  if (nr == NR) {
    for (int r = 0; r < mr; r++) store_row(C + r * ldc, c[2 * r], c[2 * r + 1], beta);
    return;
  }
  alignas(32) float t[MR][NR];
  for (int r = 0; r < MR; r++) _mm256_store_ps(t[r], c[2 * r]), _mm256_store_ps(t[r] + 8, c[2 * r + 1]);
  for (int r = 0; r < mr; r++) {
    float* cr = C + r * ldc;
    for (int j = 0; j < nr; j++) cr[j] = beta == 0.f ? t[r][j] : std::fma(beta, cr[j], t[r][j]);  // one rounding, as store_row
  }
}

// The same micro-kernel reading A in place (no packing): A(r, k) = A[r·ars + k·acs] with ROW (acs = 1, row-major A)
// or with ars = 1 (a transposed A: the six values of one k are adjacent). Rows ≥ mr read row 0 again (discarded).
template <bool ROW>
inline void micro_6x16_direct(i64 kc, const float* A, i64 ars, i64 acs, const float* __restrict B, float* C, i64 ldc, int mr, int nr, float beta) {
  constexpr int MR = GEMM_MR, NR = GEMM_NR;
  const float* a[MR];
  for (int r = 0; r < MR; r++) a[r] = A + (r < mr ? r : 0) * ars;
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (i64 k = 0; k < kc; k++) {
    const i64 o = ROW ? k : k * acs;
    const __m256 b0 = _mm256_load_ps(B + k * NR), b1 = _mm256_load_ps(B + k * NR + 8);
    __m256 x = _mm256_broadcast_ss(a[0] + o);
    c00 = _mm256_fmadd_ps(x, b0, c00), c01 = _mm256_fmadd_ps(x, b1, c01);
    x = _mm256_broadcast_ss(a[1] + o);
    c10 = _mm256_fmadd_ps(x, b0, c10), c11 = _mm256_fmadd_ps(x, b1, c11);
    x = _mm256_broadcast_ss(a[2] + o);
    c20 = _mm256_fmadd_ps(x, b0, c20), c21 = _mm256_fmadd_ps(x, b1, c21);
    x = _mm256_broadcast_ss(a[3] + o);
    c30 = _mm256_fmadd_ps(x, b0, c30), c31 = _mm256_fmadd_ps(x, b1, c31);
    x = _mm256_broadcast_ss(a[4] + o);
    c40 = _mm256_fmadd_ps(x, b0, c40), c41 = _mm256_fmadd_ps(x, b1, c41);
    x = _mm256_broadcast_ss(a[5] + o);
    c50 = _mm256_fmadd_ps(x, b0, c50), c51 = _mm256_fmadd_ps(x, b1, c51);
  }
  store_tile(C, ldc, mr, nr, beta, {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51});
}

/**
 * C[rows × cols] = beta·C + A·B with A read in place (micro_6x16_direct's A) and B the NR-column panels at
 * B + jp·pstride (jp < ⌈cols/NR⌉, each kc×NR): two panels a call through AVX-512's 6×32 where the CPU has it.
 */
template <bool ROW>
inline void direct_panels(i64 kc, const float* A, i64 ars, i64 acs, const float* B, i64 pstride, i64 cols, float* C, i64 ldc, int rows,
                          float beta) {
  constexpr int NR = GEMM_NR;
  const i64 np = (cols + NR - 1) / NR;
  const bool wide = use_avx512();
  for (i64 jp = 0; jp < np; jp++) {
    const int nr = (int)std::min<i64>(NR, cols - jp * NR);
    if (wide && jp + 1 < np) {
      micro_6x32_direct(kc, A, ars, acs, B + jp * pstride, B + (jp + 1) * pstride, C + jp * NR, ldc, rows, (int)std::min<i64>(2 * NR, cols - jp * NR),
                        beta);
      jp++;
    } else {
      micro_6x16_direct<ROW>(kc, A, ars, acs, B + jp * pstride, C + jp * NR, ldc, rows, nr, beta);
    }
  }
}

/** 8×8 transpose in registers: r[i][j] → r[j][i]. */
inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]), t2 = _mm256_unpacklo_ps(r[2], r[3]),
               t3 = _mm256_unpackhi_ps(r[2], r[3]), t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]),
               t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE), u2 = _mm256_shuffle_ps(t1, t3, 0x44),
               u3 = _mm256_shuffle_ps(t1, t3, 0xEE), u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
               u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20), r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20), r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31), r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31), r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/**
 * A micro-kernel B panel (GEMM_NR columns, k-major) from `cols` (≤ GEMM_NR) rows of X (row stride `stride`) over kc
 * columns, transposed: dst[k·NR + j] = X[j·stride + k], columns beyond `cols` zero (x·Wᵀ's W, attention's K). Eight
 * rows × eight k at a time through an 8×8 register transpose. dst must be 32-byte aligned.
 */
inline void pack_rows_transposed(const float* X, i64 stride, int cols, i64 kc, float* dst) {
  constexpr int NR = GEMM_NR;
  for (int jb = 0; jb < NR; jb += 8) {
    const int n = std::clamp(cols - jb, 0, 8);
    for (i64 k = 0; k < kc; k += 8) {
      const i64 w = std::min<i64>(8, kc - k);
      __m256 t[8];
      for (int r = 0; r < 8; r++) t[r] = r < n ? ld(X + (jb + r) * stride, k, w) : _mm256_setzero_ps();
      transpose8(t);
      for (i64 kk = 0; kk < w; kk++) _mm256_store_ps(dst + (k + kk) * NR + jb, t[kk]);
    }
  }
}

/** Independent products with disjoint outputs; small ones run one per thread. */
void gemm_many(const GemmArgs* items, i64 count);

// ---- layout and elementwise (elementwise.cc) ----
/** dst = src (accumulate: dst += src) over `shape`; strides and offsets in elements. */
void copy_strided(const float* src, i64 srcOff, const i64* srcStrides, float* dst, i64 dstOff, const i64* dstStrides, const i64* shape, int nd,
                  bool accumulate);
enum BinaryOp { ADD = 0, SUB = 1, MUL = 2, DIV = 3 };
void binary(int op, const float* a, i64 aOff, const i64* aStrides, const float* b, i64 bOff, const i64* bStrides, float* out, const i64* shape, int nd);
enum UnaryOp { NEG = 0, EXP, LOG, SQRT, RSQRT, SILU, SCALE, SQUARE, ABS };
void unary(int op, const float* x, float* out, i64 n, float alpha);
void unary_backward(int op, const float* x, const float* y, const float* dy, float* dx, i64 n, float alpha);
void reduce(bool max, const float* x, float* out, int32_t* arg, i64 O, i64 N, i64 I);
void reduce_max_backward(const float* dy, const int32_t* arg, float* dx, i64 O, i64 N, i64 I);

// ---- fused (fused.cc) ----
void rmsnorm(const float* x, const float* w, float* y, float* rstd, i64 R, i64 D, float eps);
void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw, i64 R, i64 D);
void softmax(const float* x, float* y, i64 R, i64 N, bool log);
void softmax_backward(const float* y, const float* dy, float* dx, i64 R, i64 N, bool log);
void swiglu(const float* a, const float* b, float* out, i64 n);
void swiglu_backward(const float* a, const float* b, const float* dy, float* da, float* db, i64 n);
void cross_entropy(const float* logits, const int32_t* targets, float* loss, float* lse, i64 R, i64 V, int32_t ignore);
void cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse, const float* dloss, float* dlogits, i64 R, i64 V,
                            int32_t ignore);
void rope(const float* x, const float* cos, const float* sin, float* out, i64 B, i64 T, i64 H, i64 D, i64 Bc, bool inverse, i64 pass);
struct AdamWArgs {
  i64 n;
  float *param, *grad, *m, *v;
  double lr, beta1, beta2, eps, weightDecay, step, gradScale;
};
void adamw(const AdamWArgs& p);
void adamw_many(const AdamWArgs* items, i64 count);
double sumsq(const float* x, i64 n);
double sumsq_many(const float* const* xs, const i64* ns, i64 count);

// ---- indexing (indexing.cc) ----
void gather_rows(const float* src, const int32_t* idx, float* out, i64 M, i64 N, i64 D);
void scatter_add_rows(const float* src, const int32_t* idx, float* dst, i64 M, i64 N, i64 D, const float* w);
void scatter_add_rows_backward(const float* dy, const int32_t* idx, const float* src, const float* w, float* dsrc, float* dw, i64 M, i64 N, i64 D);
void gather_last(const float* x, const int32_t* idx, float* out, i64 R, i64 N, i64 K);
void scatter_add_last(const float* dy, const int32_t* idx, float* dx, i64 R, i64 N, i64 K);
void topk(const float* x, int32_t* idx, i64 R, i64 N, i64 K);
void argsort(const float* x, int32_t* idx, i64 R, i64 N, bool descending);

// ---- attention (attention.cc) ----
struct AttentionArgs {
  i64 B, H, Hkv, T, S, Dk, Dv;
  float scale;
  bool causal;
  const float *q, *k, *v, *mask;
  i64 maskBatch;
  // Element strides (batch, head, row) of each operand's rows (see AttentionLayout in backend.ts).
  i64 qs[3], ks[3], vs[3], os[3], dos[3], dqs[3], dks[3], dvs[3];
};
/** Offset of row (b, h, t) in an operand with row strides s. */
inline i64 row_at(const i64* s, i64 b, i64 h, i64 t) { return b * s[0] + h * s[1] + t * s[2]; }
void attention(const AttentionArgs& p, float* out, float* lse);
void attention_backward(const AttentionArgs& p, const float* out, const float* lse, const float* dout, float* dq, float* dk, float* dv);

// ---- paged decode attention (paged.cc) ----
struct PagedAttentionArgs {
  i64 N, H, Hkv, Dk, Dv;
  float scale;
  const float* q;
  const float* cache;
  i64 W, kOffset, kHeadStride, vOffset, vHeadStride, blockSize, numBlocks;
  const int32_t* blockTables;
  i64 maxBlocks;
  const int32_t* contextLens;
};
void paged_attention(const PagedAttentionArgs& p, float* out);
/** Absorbed MLA decode attention (MlaDecodeParams in backend.ts). */
struct MlaDecodeArgs {
  i64 N, H, dn, dr, dc, dv;
  float scale;
  const float* q;    // [N, H, dn + dr]
  const float* kvB;  // [H·(dn + dv), dc]
  const float* cache;
  i64 blockSize, numBlocks;
  const int32_t* blockTables;
  i64 maxBlocks;
  const int32_t* contextLens;
};
void mla_decode(const MlaDecodeArgs& a, float* out);  // out [N, H·dv]
/** dst[idx[m], :] = src[m, :] */
void scatter_rows(const float* src, const int32_t* idx, float* dst, i64 M, i64 N, i64 D);

/** A product with a stored weight (QGemmParams in backend.ts); type is QUANT_CODE of src/quant/formats.ts. */
struct QGemmArgs {
  int type;
  i64 M, N, K;
  const float* x;
  const uint8_t* w;
  float* y;
  bool beta;
};
i64 quant_block_elems(int type);
/** Bytes of one block of `type`, 0 for an unknown type. */
i64 quant_block_bytes(int type);
void dequant_row(int type, const uint8_t* src, float* dst, i64 K);
void qgemm_many(const QGemmArgs* ps, i64 count);
void dequant_rows(int type, const uint8_t* w, const int32_t* idx, float* out, i64 M, i64 N, i64 K);
/** rows × K floats → rows in a writable 32-element type, bf16 or f16 (ggml's reference quantizers). */
void quantize_rows(int type, const float* x, uint8_t* out, i64 rows, i64 K);

}  // namespace dsv2
