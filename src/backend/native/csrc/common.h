// Shared helpers of the native kernels: AVX2 vector math, thread settings, aligned scratch buffers.
#pragma once
#include <immintrin.h>
#include <omp.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

using i64 = int64_t;

namespace dsv2 {

/** Threads used by the parallel kernels (DSV2_THREADS, default: all cores). */
int threads();
void set_threads(int n);

/** The instruction set of the kernels: 1 = AVX-512 (F), 0 = AVX2/FMA. Starts at the best the CPU
 * has; set_isa (DSV2_ISA) may lower it, to run or test the AVX2 kernels on an AVX-512 machine. */
extern std::atomic<int> g_isa;  // one for the process: every thread's and worker's kernels follow it
inline bool use_avx512() { return g_isa.load(std::memory_order_relaxed) == 1; }
/** Whether this CPU (and the OS, which must save the zmm registers) runs the AVX-512 kernels (AVX-512F). */
bool cpu_has_avx512();

/** Below this many floating-point operations a kernel runs on one thread (a fork/join costs a few µs). */
constexpr double kParallelFlops = 1 << 17;

inline int threads_for(double work) { return work < kParallelFlops ? 1 : threads(); }

/** A 64-byte-aligned buffer owned by the calling thread, grown on demand, never shrunk. */
float* scratch(int slot, size_t floats);

/** Horizontal sum of 8 lanes. */
inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehdup_ps(lo);
  lo = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, lo);
  lo = _mm_add_ss(lo, sh);
  return _mm_cvtss_f32(lo);
}

inline float hmax(__m256 v) {
  __m128 lo = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

/**
 * e^x for 8 lanes (Cephes expf: range reduction by ln 2, degree-5 polynomial; ≤ 2 ulp on [−87, 88]).
 * Underflows to 0 below −87.33, overflows to +inf above 88.72, passes NaN through.
 */
inline __m256 exp256(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f);
  const __m256 lo = _mm256_set1_ps(-87.3365447504f);
  __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  __m256 fx = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  xc = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), xc);
  xc = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), xc);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, xc, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, xc, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, xc, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, xc, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, xc, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(xc, xc), _mm256_add_ps(xc, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
  y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, _mm256_set1_ps(88.72283935546875f), _CMP_GT_OQ));
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

/** The same polynomial on one lane, so that vector bodies and scalar tails agree. */
inline float exp1(float x) {
  alignas(32) float t[8] = {x};
  _mm256_store_ps(t, exp256(_mm256_load_ps(t)));
  return t[0];
}

inline __m256 sigmoid256(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

/** A mask of the first n (0…8) lanes, for loads and stores of row tails. */
inline __m256i tail_mask(i64 n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/** Load / store lanes [i, i+len) of p, len ≤ 8 (masked for a row tail). */
inline __m256 ld(const float* p, i64 i, i64 len) {
  return len == 8 ? _mm256_loadu_ps(p + i) : _mm256_maskload_ps(p + i, tail_mask(len));
}
inline void st(float* p, i64 i, i64 len, __m256 v) {
  if (len == 8) _mm256_storeu_ps(p + i, v);
  else _mm256_maskstore_ps(p + i, tail_mask(len), v);
}

/** Σ a[i]·b[i] over n floats: two accumulators over 16-float steps, a masked tail (RMSNorm, softmax backward, paged
 * attention's scores). */
inline float row_dot(const float* a, const float* b, i64 n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  i64 i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i < n; i += 8) {
    const i64 l = std::min<i64>(8, n - i);
    s0 = _mm256_fmadd_ps(ld(a, i, l), ld(b, i, l), s0);
  }
  return hsum(_mm256_add_ps(s0, s1));
}

/** Split `rows` over the team (each thread one contiguous range); one thread when the work is small or !allow. */
template <class F>
void parallel_rows(i64 rows, double work, bool allow, F body) {
  const int nt = allow ? threads_for(work) : 1;
  if (nt == 1 || rows < 2) return body(0, rows);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    const i64 r0 = rows * t / n, r1 = rows * (t + 1) / n;
    if (r0 < r1) body(r0, r1);
  }
}

/**
 * Like parallel_rows, but threads take `chunk`-row pieces of [0, rows) as they finish (a dynamic schedule), for
 * pieces whose cost differs or threads that run at different speeds (a static split leaves one thread waiting).
 */
template <class F>
void parallel_chunks(i64 rows, i64 chunk, double work, F body) {
  const int nt = threads_for(work);
  const i64 pieces = (rows + chunk - 1) / chunk;
  if (nt == 1 || pieces < 2) return body(0, rows);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (i64 c = 0; c < pieces; c++) body(c * chunk, std::min(rows, (c + 1) * chunk));
}

/** Errors raised by kernels (bad indices, bad arguments) become JavaScript exceptions in the glue. */
struct KernelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace dsv2
