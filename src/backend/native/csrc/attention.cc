// Attention forward and backward, one query row at a time: scores of the visible keys into a per-thread row,
// softmax in fp32, then the value mix; only the row log-sum-exp is saved. The backward recomputes the
// probabilities from it (flash-attention style; see src/backend/ts/attention.ts for the equations).
// Forward threads split the (b, h, t) rows; backward threads split the (b, kv-head) groups, so each thread owns
// the dk/dv rows it accumulates into.
#include <vector>

#include "kernels.h"

namespace dsv2 {
namespace {

inline float dot(const float* a, const float* b, i64 n) {
  __m256 s = _mm256_setzero_ps();
  for (i64 i = 0; i < n; i += 8) {
    const i64 l = std::min<i64>(8, n - i);
    s = _mm256_fmadd_ps(ld(a, i, l), ld(b, i, l), s);
  }
  return hsum(s);
}

/** y += a·x over n */
inline void axpy(float a, const float* x, float* y, i64 n) {
  const __m256 av = _mm256_set1_ps(a);
  for (i64 i = 0; i < n; i += 8) {
    const i64 l = std::min<i64>(8, n - i);
    st(y, i, l, _mm256_fmadd_ps(av, ld(x, i, l), ld(y, i, l)));
  }
}

inline i64 visible(const AttentionArgs& p, i64 t) { return p.causal ? std::min(p.S, p.S - p.T + t + 1) : p.S; }

/** Scores of query row (b, h, t) against its visible keys into row[]; returns how many. */
i64 scores(const AttentionArgs& p, i64 b, i64 h, i64 t, float* row) {
  const i64 kvh = h / (p.H / p.Hkv);
  const float* q = p.q + ((b * p.H + h) * p.T + t) * p.Dk;
  const float* k = p.k + (b * p.Hkv + kvh) * p.S * p.Dk;
  const float* m = p.mask ? p.mask + ((p.maskBatch == 1 ? 0 : b) * p.T + t) * p.S : nullptr;
  const i64 n = visible(p, t);
  for (i64 j = 0; j < n; j++) row[j] = dot(q, k + j * p.Dk, p.Dk) * p.scale + (m ? m[j] : 0.f);
  return n;
}

}  // namespace

void attention(const AttentionArgs& p, float* out, float* lse) {
  const i64 rows = p.B * p.H * p.T;
  parallel_rows(rows, (double)rows * p.S * (p.Dk + p.Dv), true, [&](i64 r0, i64 r1) {
    std::vector<float> row((size_t)p.S + 8);
    for (i64 r = r0; r < r1; r++) {
      const i64 t = r % p.T, bh = r / p.T, h = bh % p.H, b = bh / p.H;
      const i64 n = scores(p, b, h, t, row.data());
      float* o = out + r * p.Dv;
      std::memset(o, 0, sizeof(float) * p.Dv);
      float mx = -INFINITY;
      for (i64 j = 0; j < n; j++) mx = row[j] > mx ? row[j] : mx;
      if (mx == -INFINITY) {  // no visible key: output 0, lse −inf
        lse[r] = -INFINITY;
        continue;
      }
      const float* v = p.v + (b * p.Hkv + h / (p.H / p.Hkv)) * p.S * p.Dv;
      double sum = 0;
      for (i64 j = 0; j < n; j += 8) {
        const i64 l = std::min<i64>(8, n - j);
        __m256 e = exp256(_mm256_sub_ps(ld(row.data(), j, l), _mm256_set1_ps(mx)));
        if (l < 8) e = _mm256_and_ps(e, _mm256_castsi256_ps(tail_mask(l)));
        st(row.data(), j, l, e);
        sum += hsum(e);
      }
      for (i64 j = 0; j < n; j++) axpy(row[j], v + j * p.Dv, o, p.Dv);
      const float inv = (float)(1.0 / sum);
      for (i64 d = 0; d < p.Dv; d++) o[d] *= inv;
      lse[r] = (float)(mx + std::log(sum));
    }
  });
}

void attention_backward(const AttentionArgs& p, const float* out, const float* lse, const float* dout, float* dq, float* dk, float* dv) {
  std::memset(dq, 0, sizeof(float) * p.B * p.H * p.T * p.Dk);
  std::memset(dk, 0, sizeof(float) * p.B * p.Hkv * p.S * p.Dk);
  std::memset(dv, 0, sizeof(float) * p.B * p.Hkv * p.S * p.Dv);
  const i64 groups = p.B * p.Hkv, per = p.H / p.Hkv;
  parallel_rows(groups, (double)p.B * p.H * p.T * p.S * (p.Dk + p.Dv) * 2, true, [&](i64 g0, i64 g1) {
    std::vector<float> row((size_t)p.S + 8);
    for (i64 g = g0; g < g1; g++) {
      const i64 b = g / p.Hkv, kvh = g % p.Hkv;
      const float* k = p.k + g * p.S * p.Dk;
      const float* v = p.v + g * p.S * p.Dv;
      float* dkg = dk + g * p.S * p.Dk;
      float* dvg = dv + g * p.S * p.Dv;
      for (i64 h = kvh * per; h < (kvh + 1) * per; h++) {
        for (i64 t = 0; t < p.T; t++) {
          const i64 lo = (b * p.H + h) * p.T + t;
          const float l = lse[lo];
          if (l == -INFINITY) continue;
          const i64 n = scores(p, b, h, t, row.data());
          const float* go = dout + lo * p.Dv;
          const float* q = p.q + lo * p.Dk;
          float* gq = dq + lo * p.Dk;
          const float dOdotO = dot(go, out + lo * p.Dv, p.Dv);
          for (i64 j = 0; j < n; j += 8) {
            const i64 w = std::min<i64>(8, n - j);
            st(row.data(), j, w, exp256(_mm256_sub_ps(ld(row.data(), j, w), _mm256_set1_ps(l))));
          }
          for (i64 j = 0; j < n; j++) {
            const float pj = row[j];
            const float dp = dot(go, v + j * p.Dv, p.Dv);
            axpy(pj, go, dvg + j * p.Dv, p.Dv);
            const float ds = pj * (dp - dOdotO) * p.scale;
            axpy(ds, k + j * p.Dk, gq, p.Dk);
            axpy(ds, q, dkg + j * p.Dk, p.Dk);
          }
        }
      }
    }
  });
}

}  // namespace dsv2
