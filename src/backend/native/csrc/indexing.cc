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

// Gathered per destination row: a counting sort lists each destination's source rows (in increasing order, so the
// sums are added in the same order as a plain loop over m), then threads take destination rows, each row read and
// written once while its sources stream by (was: threads split the columns and every source row read-modify-wrote
// its destination: the MoE combine adds K = 4–6 rows into each token's row). w (per source row) may be null.
void scatter_add_rows(const float* src, const int32_t* idx, float* dst, i64 M, i64 N, i64 D, const float* w) {
  check_all(idx, M, N, "scatter-add rows");
  std::vector<i64> start(N + 1, 0);
  for (i64 m = 0; m < M; m++) start[idx[m] + 1]++;
  for (i64 n = 0; n < N; n++) start[n + 1] += start[n];
  std::vector<i64> order(M), next(start.begin(), start.end() - 1);
  for (i64 m = 0; m < M; m++) order[next[idx[m]]++] = m;
  parallel_chunks(N, 64, (double)M * D * 2, [&](i64 n0, i64 n1) {
    for (i64 n = n0; n < n1; n++) {
      const i64 p0 = start[n], p1 = start[n + 1];
      if (p0 == p1) continue;
      float* d = dst + n * D;
      for (i64 c = 0; c < D; c += 32) {  // 32 columns in four registers, the destination touched once
        const i64 l = std::min<i64>(32, D - c);
        __m256 a[4];
        for (int q = 0; q < 4; q++) a[q] = q * 8 < l ? ld(d, c + q * 8, std::min<i64>(8, l - q * 8)) : _mm256_setzero_ps();
        for (i64 p = p0; p < p1; p++) {
          const i64 m = order[p];
          const float* s = src + m * D + c;
          if (w) {
            const __m256 wm = _mm256_set1_ps(w[m]);
            for (int q = 0; q < 4 && q * 8 < l; q++) a[q] = _mm256_fmadd_ps(wm, ld(s, q * 8, std::min<i64>(8, l - q * 8)), a[q]);
          } else {
            for (int q = 0; q < 4 && q * 8 < l; q++) a[q] = _mm256_add_ps(a[q], ld(s, q * 8, std::min<i64>(8, l - q * 8)));
          }
        }
        for (int q = 0; q < 4 && q * 8 < l; q++) st(d, c + q * 8, std::min<i64>(8, l - q * 8), a[q]);
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
