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

/**
 * out[0:D] += Σ_{j<n} w[j]·X[j, 0:D] (rows of X D apart), 32 columns at a time held in registers. Even and odd j go
 * to separate accumulators: eight independent FMA chains keep both FMA pipes busy (four would wait on latency).
 */
void weighted_rows(const float* w, const float* X, i64 n, i64 D, float* out) {
  for (i64 c = 0; c < D; c += 32) {
    const i64 cols = std::min<i64>(32, D - c);
    if (cols == 32) {
      __m256 a0 = _mm256_loadu_ps(out + c), a1 = _mm256_loadu_ps(out + c + 8), a2 = _mm256_loadu_ps(out + c + 16), a3 = _mm256_loadu_ps(out + c + 24);
      __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
      i64 j = 0;
      for (; j + 2 <= n; j += 2) {
        const float* x = X + j * D + c;
        const float* y = x + D;
        const __m256 w0 = _mm256_set1_ps(w[j]), w1 = _mm256_set1_ps(w[j + 1]);
        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x), a0);
        a1 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + 8), a1);
        a2 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + 16), a2);
        a3 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + 24), a3);
        b0 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(y), b0);
        b1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(y + 8), b1);
        b2 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(y + 16), b2);
        b3 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(y + 24), b3);
      }
      if (j < n) {
        const float* x = X + j * D + c;
        const __m256 w0 = _mm256_set1_ps(w[j]);
        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x), a0);
        a1 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + 8), a1);
        a2 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + 16), a2);
        a3 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + 24), a3);
      }
      _mm256_storeu_ps(out + c, _mm256_add_ps(a0, b0)), _mm256_storeu_ps(out + c + 8, _mm256_add_ps(a1, b1));
      _mm256_storeu_ps(out + c + 16, _mm256_add_ps(a2, b2)), _mm256_storeu_ps(out + c + 24, _mm256_add_ps(a3, b3));
    } else {
      for (i64 j = 0; j < n; j++) axpy(w[j], X + j * D + c, out + c, cols);
    }
  }
}

inline i64 visible(const AttentionArgs& p, i64 t) { return p.causal ? std::min(p.S, p.S - p.T + t + 1) : p.S; }

/** Xt [D][S] = X [S][D]ᵀ for one KV head, so that scores against 8 keys at a time are broadcast-FMAs (no hsum). */
void transpose_into(const float* x, i64 S, i64 D, float* xt) {
  for (i64 j = 0; j < S; j++)
    for (i64 d = 0; d < D; d++) xt[d * S + j] = x[j * D + d];
}

/**
 * out[j] = scale·Σ_d q[d]·Xt[d][j] (+ mask[j]) for j < n. 32 keys at a time with even and odd d in separate
 * accumulators (eight independent FMA chains), then 8 at a time for the rest.
 */
void row_scores(const float* q, const float* xt, i64 S, i64 D, i64 n, float scale, const float* mask, float* out) {
  const __m256 sc = _mm256_set1_ps(scale);
  i64 j = 0;
  for (; j + 32 <= n; j += 32) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    i64 d = 0;
    for (; d + 2 <= D; d += 2) {
      const float* r0 = xt + d * S + j;
      const float* r1 = r0 + S;
      const __m256 q0 = _mm256_set1_ps(q[d]), q1 = _mm256_set1_ps(q[d + 1]);
      a0 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(r0), a0);
      a1 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(r0 + 8), a1);
      a2 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(r0 + 16), a2);
      a3 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(r0 + 24), a3);
      b0 = _mm256_fmadd_ps(q1, _mm256_loadu_ps(r1), b0);
      b1 = _mm256_fmadd_ps(q1, _mm256_loadu_ps(r1 + 8), b1);
      b2 = _mm256_fmadd_ps(q1, _mm256_loadu_ps(r1 + 16), b2);
      b3 = _mm256_fmadd_ps(q1, _mm256_loadu_ps(r1 + 24), b3);
    }
    if (d < D) {
      const float* r0 = xt + d * S + j;
      const __m256 q0 = _mm256_set1_ps(q[d]);
      a0 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(r0), a0);
      a1 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(r0 + 8), a1);
      a2 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(r0 + 16), a2);
      a3 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(r0 + 24), a3);
    }
    __m256 r[4] = {_mm256_add_ps(a0, b0), _mm256_add_ps(a1, b1), _mm256_add_ps(a2, b2), _mm256_add_ps(a3, b3)};
    for (int u = 0; u < 4; u++) {
      __m256 v = _mm256_mul_ps(r[u], sc);
      if (mask) v = _mm256_add_ps(v, _mm256_loadu_ps(mask + j + 8 * u));
      _mm256_storeu_ps(out + j + 8 * u, v);
    }
  }
  for (; j < n; j += 8) {
    const i64 l = std::min<i64>(8, n - j);
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    i64 d = 0;
    for (; d + 2 <= D; d += 2) {
      a0 = _mm256_fmadd_ps(_mm256_set1_ps(q[d]), ld(xt + d * S, j, l), a0);
      a1 = _mm256_fmadd_ps(_mm256_set1_ps(q[d + 1]), ld(xt + (d + 1) * S, j, l), a1);
    }
    if (d < D) a0 = _mm256_fmadd_ps(_mm256_set1_ps(q[d]), ld(xt + d * S, j, l), a0);
    __m256 v = _mm256_mul_ps(_mm256_add_ps(a0, a1), sc);
    if (mask) v = _mm256_add_ps(v, ld(mask, j, l));
    st(out, j, l, v);
  }
}

const float* row_mask(const AttentionArgs& p, i64 b, i64 t) { return p.mask ? p.mask + ((p.maskBatch == 1 ? 0 : b) * p.T + t) * p.S : nullptr; }

}  // namespace

void attention(const AttentionArgs& p, float* out, float* lse) {
  const i64 rows = p.B * p.H * p.T;
  parallel_rows(rows, (double)rows * p.S * (p.Dk + p.Dv), true, [&](i64 r0, i64 r1) {
    std::vector<float> row((size_t)p.S + 8), kt((size_t)p.S * p.Dk);
    i64 have = -1;  // the (b, kv head) whose keys kt holds
    for (i64 r = r0; r < r1; r++) {
      const i64 t = r % p.T, bh = r / p.T, h = bh % p.H, b = bh / p.H;
      const i64 g = b * p.Hkv + h / (p.H / p.Hkv);
      if (g != have) {
        transpose_into(p.k + g * p.S * p.Dk, p.S, p.Dk, kt.data());
        have = g;
      }
      const i64 n = visible(p, t);
      row_scores(p.q + r * p.Dk, kt.data(), p.S, p.Dk, n, p.scale, row_mask(p, b, t), row.data());
      float* o = out + r * p.Dv;
      std::memset(o, 0, sizeof(float) * p.Dv);
      float mx = -INFINITY;
      for (i64 j = 0; j < n; j++) mx = row[j] > mx ? row[j] : mx;
      if (mx == -INFINITY) {  // no visible key: output 0, lse −inf
        lse[r] = -INFINITY;
        continue;
      }
      const float* v = p.v + g * p.S * p.Dv;
      double sum = 0;
      for (i64 j = 0; j < n; j += 8) {
        const i64 l = std::min<i64>(8, n - j);
        __m256 e = exp256(_mm256_sub_ps(ld(row.data(), j, l), _mm256_set1_ps(mx)));
        if (l < 8) e = _mm256_and_ps(e, _mm256_castsi256_ps(tail_mask(l)));
        st(row.data(), j, l, e);
        sum += hsum(e);
      }
      weighted_rows(row.data(), v, n, p.Dv, o);
      const float inv = (float)(1.0 / sum);
      for (i64 d = 0; d < p.Dv; d++) o[d] *= inv;
      lse[r] = (float)(mx + std::log(sum));
    }
  });
}

// Backward, four query rows at a time: their probability and dS rows are built first, then every key row of dK
// and dV is loaded and stored once per block (not once per query row): dK_j += Σ_r dS_rj·q_r, dV_j += Σ_r P_rj·dO_r.
void attention_backward(const AttentionArgs& p, const float* out, const float* lse, const float* dout, float* dq, float* dk, float* dv) {
  constexpr int RB = 4;
  std::memset(dq, 0, sizeof(float) * p.B * p.H * p.T * p.Dk);
  std::memset(dk, 0, sizeof(float) * p.B * p.Hkv * p.S * p.Dk);
  std::memset(dv, 0, sizeof(float) * p.B * p.Hkv * p.S * p.Dv);
  const i64 groups = p.B * p.Hkv, per = p.H / p.Hkv;
  parallel_rows(groups, (double)p.B * p.H * p.T * p.S * (p.Dk + p.Dv) * 2, true, [&](i64 g0, i64 g1) {
    const size_t rowLen = (size_t)p.S + 8;
    std::vector<float> prow(RB * rowLen), dsrow(RB * rowLen), kt((size_t)p.S * p.Dk), vt((size_t)p.S * p.Dv);
    for (i64 g = g0; g < g1; g++) {
      const i64 b = g / p.Hkv, kvh = g % p.Hkv;
      const float* k = p.k + g * p.S * p.Dk;
      const float* v = p.v + g * p.S * p.Dv;
      transpose_into(k, p.S, p.Dk, kt.data());
      transpose_into(v, p.S, p.Dv, vt.data());
      float* dkg = dk + g * p.S * p.Dk;
      float* dvg = dv + g * p.S * p.Dv;
      for (i64 h = kvh * per; h < (kvh + 1) * per; h++) {
        for (i64 t0 = 0; t0 < p.T; t0 += RB) {
          const int rows = (int)std::min<i64>(RB, p.T - t0);
          i64 nmax = 0;
          const float* qr[RB];
          const float* gor[RB];
          for (int r = 0; r < rows; r++) {
            const i64 t = t0 + r, lo = (b * p.H + h) * p.T + t;
            float* pr = prow.data() + r * rowLen;
            float* dr = dsrow.data() + r * rowLen;
            const float l = lse[lo];
            const i64 n = l == -INFINITY ? 0 : visible(p, t);
            qr[r] = p.q + lo * p.Dk;
            gor[r] = dout + lo * p.Dv;
            if (n > 0) {
              row_scores(qr[r], kt.data(), p.S, p.Dk, n, p.scale, row_mask(p, b, t), pr);
              row_scores(gor[r], vt.data(), p.S, p.Dv, n, 1.f, nullptr, dr);  // dp_j = do·v_j
              const __m256 lv = _mm256_set1_ps(l), dod = _mm256_set1_ps(dot(gor[r], out + lo * p.Dv, p.Dv)), sc = _mm256_set1_ps(p.scale);
              for (i64 j = 0; j < n; j += 8) {  // p_j = exp(s_j − lse); ds_j = p_j·(dp_j − do·o)·scale
                const i64 w = std::min<i64>(8, n - j);
                const __m256 pj = exp256(_mm256_sub_ps(ld(pr, j, w), lv));
                st(pr, j, w, pj);
                st(dr, j, w, _mm256_mul_ps(_mm256_mul_ps(pj, _mm256_sub_ps(ld(dr, j, w), dod)), sc));
              }
              weighted_rows(dr, k, n, p.Dk, dq + lo * p.Dk);  // dq = Σ_j ds_j·k_j
            }
            for (i64 j = n; j < p.S; j++) pr[j] = dr[j] = 0.f;  // invisible keys contribute nothing
            nmax = std::max(nmax, n);
          }
          for (int r = rows; r < RB; r++) qr[r] = qr[0], gor[r] = gor[0];
          for (i64 j = 0; j < nmax; j++) {
            float wds[RB] = {0, 0, 0, 0}, wp[RB] = {0, 0, 0, 0};
            for (int r = 0; r < rows; r++) wds[r] = dsrow[r * rowLen + j], wp[r] = prow[r * rowLen + j];
            const __m256 d0 = _mm256_set1_ps(wds[0]), d1 = _mm256_set1_ps(wds[1]), d2 = _mm256_set1_ps(wds[2]), d3 = _mm256_set1_ps(wds[3]);
            const __m256 p0 = _mm256_set1_ps(wp[0]), p1 = _mm256_set1_ps(wp[1]), p2 = _mm256_set1_ps(wp[2]), p3 = _mm256_set1_ps(wp[3]);
            float* dkj = dkg + j * p.Dk;
            for (i64 c = 0; c < p.Dk; c += 8) {
              const i64 w = std::min<i64>(8, p.Dk - c);
              __m256 a = ld(dkj, c, w);
              a = _mm256_fmadd_ps(d0, ld(qr[0], c, w), a);
              a = _mm256_fmadd_ps(d1, ld(qr[1], c, w), a);
              a = _mm256_fmadd_ps(d2, ld(qr[2], c, w), a);
              a = _mm256_fmadd_ps(d3, ld(qr[3], c, w), a);
              st(dkj, c, w, a);
            }
            float* dvj = dvg + j * p.Dv;
            for (i64 c = 0; c < p.Dv; c += 8) {
              const i64 w = std::min<i64>(8, p.Dv - c);
              __m256 a = ld(dvj, c, w);
              a = _mm256_fmadd_ps(p0, ld(gor[0], c, w), a);
              a = _mm256_fmadd_ps(p1, ld(gor[1], c, w), a);
              a = _mm256_fmadd_ps(p2, ld(gor[2], c, w), a);
              a = _mm256_fmadd_ps(p3, ld(gor[3], c, w), a);
              st(dvj, c, w, a);
            }
          }
        }
      }
    }
  });
}

}  // namespace dsv2
