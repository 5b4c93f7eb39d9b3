// Gather / scatter-add (embedding, MoE dispatch and combine), top-k and stable argsort.
#include <algorithm>
#include <numeric>
#include <vector>

#include "kernels.h"

namespace dsv2 {
namespace {

void check_index(i64 i, i64 n, const char* what) {
  if (!(i >= 0 && i < n)) throw KernelError(std::string(what) + ": index " + std::to_string(i) + " is outside [0, " + std::to_string(n) + ")");
}

void check_all(const int32_t* idx, i64 count, i64 n, const char* what) {
  for (i64 m = 0; m < count; m++) check_index(idx[m], n, what);
}

/** Largest first; among equal values the lower index wins (spec §5.5); NaN sorts last. */
inline bool before(const float* x, i64 a, i64 b) {
  const float va = x[a], vb = x[b];
  if (va > vb) return true;
  if (va < vb) return false;
  if (va == vb) return a < b;
  const bool na = std::isnan(va), nb = std::isnan(vb);
  if (na && !nb) return false;
  if (!na && nb) return true;
  return a < b;
}

}  // namespace

void gather_rows(const float* src, const int32_t* idx, float* out, i64 M, i64 N, i64 D) {
  check_all(idx, M, N, "gather rows");
  parallel_rows(M, (double)M * D / 2, true, [&](i64 m0, i64 m1) {
    for (i64 m = m0; m < m1; m++) std::memcpy(out + m * D, src + (i64)idx[m] * D, sizeof(float) * D);
  });
}

// Threads split the columns, so two rows adding into the same destination row never race. w (per source row) may be null.
void scatter_add_rows(const float* src, const int32_t* idx, float* dst, i64 M, i64 N, i64 D, const float* w) {
  check_all(idx, M, N, "scatter-add rows");
  const i64 chunks = (D + 63) / 64;
  parallel_rows(chunks, (double)M * D / 2, true, [&](i64 c0, i64 c1) {
    const i64 d0 = c0 * 64, d1 = std::min<i64>(D, c1 * 64);
    for (i64 m = 0; m < M; m++) {
      const float* s = src + m * D;
      float* d = dst + (i64)idx[m] * D;
      if (w) {
        const float wm = w[m];
        for (i64 i = d0; i < d1; i++) d[i] += wm * s[i];
      } else {
        for (i64 i = d0; i < d1; i++) d[i] += s[i];
      }
    }
  });
}

// One pass over the source rows: dsrc[m] = w[m]·dy[idx[m]] and dw[m] = ⟨dy[idx[m]], src[m]⟩.
void scatter_add_rows_backward(const float* dy, const int32_t* idx, const float* src, const float* w, float* dsrc, float* dw, i64 M, i64 N, i64 D) {
  check_all(idx, M, N, "scatter-add rows backward");
  parallel_rows(M, (double)M * D, true, [&](i64 m0, i64 m1) {
    for (i64 m = m0; m < m1; m++) {
      const float* g = dy + (i64)idx[m] * D;
      const float* s = src + m * D;
      const __m256 wm = _mm256_set1_ps(w[m]);
      __m256 acc = _mm256_setzero_ps();
      for (i64 i = 0; i < D; i += 8) {
        const i64 l = std::min<i64>(8, D - i);
        const __m256 gv = ld(g, i, l);
        if (dsrc) st(dsrc + m * D, i, l, _mm256_mul_ps(wm, gv));
        if (dw) acc = _mm256_fmadd_ps(gv, ld(s, i, l), acc);
      }
      if (dw) dw[m] = hsum(acc);
    }
  });
}

void gather_last(const float* x, const int32_t* idx, float* out, i64 R, i64 N, i64 K) {
  check_all(idx, R * K, N, "gather");
  for (i64 r = 0; r < R; r++)
    for (i64 k = 0; k < K; k++) out[r * K + k] = x[r * N + idx[r * K + k]];
}

void scatter_add_last(const float* dy, const int32_t* idx, float* dx, i64 R, i64 N, i64 K) {
  check_all(idx, R * K, N, "scatter-add");
  for (i64 r = 0; r < R; r++)
    for (i64 k = 0; k < K; k++) dx[r * N + idx[r * K + k]] += dy[r * K + k];
}

void topk(const float* x, int32_t* idx, i64 R, i64 N, i64 K) {
  if (K > N) throw KernelError("top-k: k = " + std::to_string(K) + " is larger than the axis (" + std::to_string(N) + ")");
  parallel_rows(R, (double)R * N * 2, true, [&](i64 r0, i64 r1) {
    std::vector<i64> best((size_t)K);
    for (i64 r = r0; r < r1; r++) {
      const float* xr = x + r * N;
      i64 len = 0;
      for (i64 i = 0; i < N; i++) {  // insertion into a sorted list of the K best so far
        if (len == K && !before(xr, i, best[K - 1])) continue;
        i64 p = len < K ? len++ : K - 1;
        while (p > 0 && before(xr, i, best[p - 1])) {
          best[p] = best[p - 1];
          p--;
        }
        best[p] = i;
      }
      for (i64 k = 0; k < K; k++) idx[r * K + k] = (int32_t)best[k];
    }
  });
}

void argsort(const float* x, int32_t* idx, i64 R, i64 N, bool descending) {
  parallel_rows(R, (double)R * N * 8, true, [&](i64 r0, i64 r1) {
    for (i64 r = r0; r < r1; r++) {
      const float* xr = x + r * N;
      int32_t* o = idx + r * N;
      std::iota(o, o + N, 0);
      std::stable_sort(o, o + N, [&](int32_t a, int32_t b) {
        const float va = xr[a], vb = xr[b];
        const bool na = std::isnan(va), nb = std::isnan(vb);
        if (na || nb) return !na && nb;  // NaN last, either direction
        return descending ? va > vb : va < vb;
      });
    }
  });
}

}  // namespace dsv2
