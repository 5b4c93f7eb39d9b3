// AVX-512 forms of the hot kernels, compiled for AVX-512 in this file alone (a target pragma, not a build flag) and
// called only when isa() says the CPU has it, so one build runs on CPUs with and without AVX-512.
//
// The GEMM micro-kernel: 6 rows × 32 columns, i.e. two adjacent 16-column B panels of the AVX2 packing (nothing
// is packed differently), 12 zmm accumulators. Per k: two B loads, six broadcasts, twelve 16-lane FMAs: FMA-bound
// on two 512-bit FMA ports (the AVX2 6×16 does 12 8-lane FMAs a k, half the work per instruction). Each C element
// is the same FMA chain over k as in the AVX2 kernel, so results are bit-identical across the two paths.
//
// Nothing from a header is defined inside the target region (an inline function compiled here for AVX-512 could be
// picked by the linker for the AVX2 callers); everything in it is local to this file or has a name of its own.
#include "kernels.h"

#pragma GCC push_options
#pragma GCC target("avx512f,fma")

namespace dsv2 {
namespace {

constexpr int MR = GEMM_MR;
constexpr int NR = GEMM_NR;

inline __mmask16 first_lanes(int n) { return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1); }

/** C[0..nr) of one row = beta·C + v0|v1 (nr ≤ 32), beta 0 and 1 special-cased as in store_row. */
inline void store_row32(float* c, __m512 v0, __m512 v1, int nr, float beta) {
  const __mmask16 m0 = first_lanes(nr), m1 = first_lanes(nr - 16);
  if (beta == 0.f) {
    _mm512_mask_storeu_ps(c, m0, v0);
    _mm512_mask_storeu_ps(c + 16, m1, v1);
  } else if (beta == 1.f) {
    _mm512_mask_storeu_ps(c, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, c), v0));
    _mm512_mask_storeu_ps(c + 16, m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, c + 16), v1));
  } else {
    const __m512 bb = _mm512_set1_ps(beta);
    _mm512_mask_storeu_ps(c, m0, _mm512_fmadd_ps(bb, _mm512_maskz_loadu_ps(m0, c), v0));
    _mm512_mask_storeu_ps(c + 16, m1, _mm512_fmadd_ps(bb, _mm512_maskz_loadu_ps(m1, c + 16), v1));
  }
}

/**
 * The 6×32 tile over kc: A(r, k) at a[r] + k·ka (packed: a[r] = A + r, ka = MR; in place: row pointers and the
 * column stride), B(k, j) at B0[k·NR + j] for j < 16 and B1[k·NR + j − 16] above.
 */
template <int KA>
inline void tile_6x32(i64 kc, const float* const* a, i64 ka, const float* __restrict B0, const float* __restrict B1, float* C, i64 ldc, int mr,
                      int nr, float beta) {
  __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps(), c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
  __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps(), c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps();
  __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps(), c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
  const i64 ks = KA > 0 ? KA : ka;
  const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
#define DSV2_STEP(k)                                        \
  {                                                         \
    const __m512 b0 = _mm512_loadu_ps(B0 + (k) * NR);       \
    const __m512 b1 = _mm512_loadu_ps(B1 + (k) * NR);       \
    const i64 o = (k) * ks;                                 \
    __m512 x = _mm512_set1_ps(a0[o]);                       \
    c00 = _mm512_fmadd_ps(x, b0, c00);                      \
    c01 = _mm512_fmadd_ps(x, b1, c01);                      \
    x = _mm512_set1_ps(a1[o]);                              \
    c10 = _mm512_fmadd_ps(x, b0, c10);                      \
    c11 = _mm512_fmadd_ps(x, b1, c11);                      \
    x = _mm512_set1_ps(a2[o]);                              \
    c20 = _mm512_fmadd_ps(x, b0, c20);                      \
    c21 = _mm512_fmadd_ps(x, b1, c21);                      \
    x = _mm512_set1_ps(a3[o]);                              \
    c30 = _mm512_fmadd_ps(x, b0, c30);                      \
    c31 = _mm512_fmadd_ps(x, b1, c31);                      \
    x = _mm512_set1_ps(a4[o]);                              \
    c40 = _mm512_fmadd_ps(x, b0, c40);                      \
    c41 = _mm512_fmadd_ps(x, b1, c41);                      \
    x = _mm512_set1_ps(a5[o]);                              \
    c50 = _mm512_fmadd_ps(x, b0, c50);                      \
    c51 = _mm512_fmadd_ps(x, b1, c51);                      \
  }
  i64 k = 0;
  for (; k + 4 <= kc; k += 4) {
    _mm_prefetch((const char*)(B0 + (k + 8) * NR), _MM_HINT_T0);
    _mm_prefetch((const char*)(B1 + (k + 8) * NR), _MM_HINT_T0);
    DSV2_STEP(k) DSV2_STEP(k + 1) DSV2_STEP(k + 2) DSV2_STEP(k + 3)
  }
  for (; k < kc; k++) DSV2_STEP(k)
#undef DSV2_STEP
  const __m512 c[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
  for (int r = 0; r < mr; r++) store_row32(C + r * ldc, c[2 * r], c[2 * r + 1], nr, beta);
}

}  // namespace

void micro_6x32(i64 kc, const float* __restrict A, const float* __restrict B0, const float* __restrict B1, float* C, i64 ldc, int mr, int nr,
                float beta) {
  const float* a[MR] = {A, A + 1, A + 2, A + 3, A + 4, A + 5};
  tile_6x32<MR>(kc, a, MR, B0, B1, C, ldc, mr, nr, beta);
}

void micro_6x32_direct(i64 kc, const float* A, i64 ars, i64 acs, const float* __restrict B0, const float* __restrict B1, float* C, i64 ldc,
                       int mr, int nr, float beta) {
  const float* a[MR];
  for (int r = 0; r < MR; r++) a[r] = A + (r < mr ? r : 0) * ars;  // rows ≥ mr read row 0 again (discarded)
  if (acs == 1) tile_6x32<1>(kc, a, 1, B0, B1, C, ldc, mr, nr, beta);
  else tile_6x32<0>(kc, a, acs, B0, B1, C, ldc, mr, nr, beta);
}

}  // namespace dsv2

#pragma GCC pop_options
