// Paged decode attention (PagedAttentionParams in backend.ts): one query token per sequence attends over the rows
// of the paged cache its block table names, read in place. A task is (token, KV head, slice of its query heads):
// the heads of one KV head share every key and value row, so each row is read once per task, and a decode batch
// of one sequence still splits over the threads by heads.
#include <vector>

#include "kernels.h"

namespace dsv2 {
namespace {

/** y[0..n) += a·x */
inline void axpy(float* y, float a, const float* x, i64 n) {
  const __m256 av = _mm256_set1_ps(a);
  for (i64 d = 0; d < n; d += 8) {
    const i64 l = std::min<i64>(8, n - d);
    st(y, d, l, _mm256_fmadd_ps(av, ld(x, d, l), ld(y, d, l)));
  }
}

}  // namespace

void paged_attention(const PagedAttentionArgs& p, float* out) {
  if (p.Hkv < 1 || p.H % p.Hkv != 0) throw KernelError("paged attention: heads do not split into the KV heads");
  i64 work = 0;
  for (i64 n = 0; n < p.N; n++) {
    const i64 len = p.contextLens[n];
    if (!(len >= 1 && len <= p.maxBlocks * p.blockSize))
      throw KernelError("paged attention: context length " + std::to_string(len) + " of token " + std::to_string(n) + " is outside [1, " +
                        std::to_string(p.maxBlocks * p.blockSize) + "]");
    for (i64 b = 0; b < (len + p.blockSize - 1) / p.blockSize; b++) {
      const i64 id = p.blockTables[n * p.maxBlocks + b];
      if (!(id >= 0 && id < p.numBlocks))
        throw KernelError("paged attention: block id " + std::to_string(id) + " of token " + std::to_string(n) + " is outside [0, " +
                          std::to_string(p.numBlocks) + ")");
    }
    work += len;
  }
  const i64 G = p.H / p.Hkv;
  const int nt = threads_for((double)work * p.H * (p.Dk + p.Dv) * 2);
  // split each KV head's query heads into enough slices that every thread has work
  i64 slices = 1;
  while (slices < G && p.N * p.Hkv * slices < 2 * nt) slices++;
  const i64 tasks = p.N * p.Hkv * slices;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
  for (i64 task = 0; task < tasks; task++) {
    const i64 n = task / (p.Hkv * slices), g = task / slices % p.Hkv, sl = task % slices;
    const i64 h0 = g * G + G * sl / slices, h1 = g * G + G * (sl + 1) / slices, nh = h1 - h0;
    if (nh == 0) continue;
    const i64 len = p.contextLens[n];
    const int32_t* table = p.blockTables + n * p.maxBlocks;
    float* sc = scratch(0, nh * len);  // scores, then probabilities, [nh, len]
    float* acc = scratch(1, nh * p.Dv);
    const float* q = p.q + (n * p.H + h0) * p.Dk;
    auto row = [&](i64 j) { return p.cache + ((i64)table[j / p.blockSize] * p.blockSize + j % p.blockSize) * p.W; };
    for (i64 j = 0; j < len; j++) {
      const float* k = row(j) + p.kOffset + g * p.kHeadStride;
      for (i64 h = 0; h < nh; h++) sc[h * len + j] = row_dot(q + h * p.Dk, k, p.Dk) * p.scale;
    }
    for (i64 h = 0; h < nh; h++) {
      float* s = sc + h * len;
      float mx = -INFINITY;
      for (i64 j = 0; j < len; j++) mx = std::max(mx, s[j]);
      const __m256 mv = _mm256_set1_ps(mx);
      __m256 sum = _mm256_setzero_ps();
      for (i64 j = 0; j < len; j += 8) {
        const i64 l = std::min<i64>(8, len - j);
        const __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(ld(s, j, l), mv)), _mm256_castsi256_ps(tail_mask(l)));
        st(s, j, l, e);
        sum = _mm256_add_ps(sum, e);
      }
      const float inv = 1.f / hsum(sum);
      for (i64 j = 0; j < len; j++) s[j] *= inv;
    }
    std::memset(acc, 0, sizeof(float) * nh * p.Dv);
    for (i64 j = 0; j < len; j++) {
      const float* v = row(j) + p.vOffset + g * p.vHeadStride;
      for (i64 h = 0; h < nh; h++) axpy(acc + h * p.Dv, sc[h * len + j], v, p.Dv);
    }
    std::memcpy(out + (n * p.H + h0) * p.Dv, acc, sizeof(float) * nh * p.Dv);
  }
}

void scatter_rows(const float* src, const int32_t* idx, float* dst, i64 M, i64 N, i64 D) {
  for (i64 m = 0; m < M; m++)
    if (!(idx[m] >= 0 && idx[m] < N))
      throw KernelError("scatter rows: index " + std::to_string(idx[m]) + " is outside [0, " + std::to_string(N) + ")");
  for (i64 m = 0; m < M; m++) std::memcpy(dst + (i64)idx[m] * D, src + m * D, sizeof(float) * D);
}

}  // namespace dsv2
