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

/** Checks block ids and context lengths; returns Σ context lengths (the work). */
i64 paged_checks(const PagedAttentionArgs& p) {
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
  return work;
}

/**
 * Split each KV head's query heads into slices: enough that every thread has work, up to two tasks a thread (for
 * the dynamic schedule's balance) as long as a slice keeps four heads, which the scores take four at a time
 * (dot4x2; fewer go one head at a time, at about half the speed). MLA at batch 1 (one KV head, 8 query heads, 2
 * threads) took 4 slices of 2 heads: now 2 of 4. With the vector row maximum below, `small`'s mlaDecode (8 heads,
 * dc 64) went 1.5–1.7× faster at 128–900 cached rows (three alternated runs: 900 rows 58–87 → 34–59 µs a layer).
 */
i64 head_slices(const PagedAttentionArgs& p, int nt) {
  const i64 G = p.H / p.Hkv;
  i64 need = 1, want = 1;
  while (need < G && p.N * p.Hkv * need < nt) need++;
  while (want < G && p.N * p.Hkv * want < 2 * nt) want++;
  return std::max(need, std::min(want, std::max<i64>(1, G / 4)));
}

/** Dot products of 4 queries (rows q, q + qs, …) with 2 keys: out[2·h + r] = q_h · k_r. Eight FMA chains; each load
 * of a query feeds both keys. */
inline void dot4x2(const float* q, i64 qs, const float* k0, const float* k1, i64 D, float* out) {
  __m256 a[4], b[4];
  for (int h = 0; h < 4; h++) a[h] = b[h] = _mm256_setzero_ps();
  for (i64 d = 0; d < D; d += 8) {
    const i64 l = std::min<i64>(8, D - d);
    const __m256 x0 = ld(k0, d, l), x1 = ld(k1, d, l);
    for (int h = 0; h < 4; h++) {
      const __m256 qv = ld(q + h * qs, d, l);
      a[h] = _mm256_fmadd_ps(qv, x0, a[h]);
      b[h] = _mm256_fmadd_ps(qv, x1, b[h]);
    }
  }
  // four horizontal sums at once: lanes [Σa0, Σa1, Σa2, Σa3]
  auto sum4 = [](const __m256* v) {
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
  };
  alignas(16) float sa[4], sb[4];
  _mm_store_ps(sa, sum4(a));
  _mm_store_ps(sb, sum4(b));
  for (int h = 0; h < 4; h++) out[2 * h] = sa[h], out[2 * h + 1] = sb[h];
}

/** One task: token n, KV head g, query heads [h0, h1) of it. */
void attend(const PagedAttentionArgs& p, i64 n, i64 g, i64 h0, i64 h1, float* out) {
  const i64 nh = h1 - h0;
  if (nh == 0) return;
  const i64 len = p.contextLens[n];
  const int32_t* table = p.blockTables + n * p.maxBlocks;
  float* sc = scratch(0, nh * len);  // scores, then probabilities, [nh, len]
  float* acc = scratch(1, nh * p.Dv);
  // the sequence's rows, walked once through its block table (no division per row afterwards)
  const float** rows = reinterpret_cast<const float**>(scratch(2, 2 * len));
  for (i64 j = 0, b = 0; j < len; b++) {
    const float* base = p.cache + (i64)table[b] * p.blockSize * p.W;
    for (i64 r = 0; r < p.blockSize && j < len; r++, j++) rows[j] = base + r * p.W;
  }
  const float* q = p.q + (n * p.H + h0) * p.Dk;
  const i64 ko = p.kOffset + g * p.kHeadStride, vo = p.vOffset + g * p.vHeadStride;
  // scores: four heads × two keys at a time, the rest one product at a time
  i64 h = 0;
  for (; h + 4 <= nh; h += 4) {
    i64 j = 0;
    float d8[8];
    for (; j + 2 <= len; j += 2) {
      dot4x2(q + h * p.Dk, p.Dk, rows[j] + ko, rows[j + 1] + ko, p.Dk, d8);
      for (int t = 0; t < 4; t++) sc[(h + t) * len + j] = d8[2 * t] * p.scale, sc[(h + t) * len + j + 1] = d8[2 * t + 1] * p.scale;
    }
    for (; j < len; j++)
      for (int t = 0; t < 4; t++) sc[(h + t) * len + j] = row_dot(q + (h + t) * p.Dk, rows[j] + ko, p.Dk) * p.scale;
  }
  for (; h < nh; h++)
    for (i64 j = 0; j < len; j++) sc[h * len + j] = row_dot(q + h * p.Dk, rows[j] + ko, p.Dk) * p.scale;
  for (i64 h = 0; h < nh; h++) {
    float* s = sc + h * len;
    // the row maximum 8 lanes at a time (a scalar max is one 4-cycle dependency chain: ~10 µs of 8 heads × 900
    // rows); max_ps(x, m) keeps m where x is NaN, as the scalar std::max(m, x) did
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    for (i64 j = 0; j < len; j += 8) {
      const i64 l = std::min<i64>(8, len - j);
      const __m256 x = l == 8 ? _mm256_loadu_ps(s + j) : _mm256_blendv_ps(m8, ld(s, j, l), _mm256_castsi256_ps(tail_mask(l)));
      m8 = _mm256_max_ps(x, m8);
    }
    const float mx = hmax(m8);
    const __m256 mv = _mm256_set1_ps(mx);
    __m256 sum = _mm256_setzero_ps();
    for (i64 j = 0; j < len; j += 8) {
      const i64 l = std::min<i64>(8, len - j);
      const __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(ld(s, j, l), mv)), _mm256_castsi256_ps(tail_mask(l)));
      st(s, j, l, e);
      sum = _mm256_add_ps(sum, e);
    }
    const __m256 inv = _mm256_set1_ps(1.f / hsum(sum));
    for (i64 j = 0; j < len; j += 8) {
      const i64 l = std::min<i64>(8, len - j);
      st(s, j, l, _mm256_mul_ps(ld(s, j, l), inv));
    }
  }
  // values: four rows at a time, so each accumulator load and store carries four FMAs
  std::memset(acc, 0, sizeof(float) * nh * p.Dv);
  i64 j = 0;
  for (; j + 4 <= len; j += 4) {
    const float *v0 = rows[j] + vo, *v1 = rows[j + 1] + vo, *v2 = rows[j + 2] + vo, *v3 = rows[j + 3] + vo;
    for (i64 h = 0; h < nh; h++) {
      const float* ph = sc + h * len + j;
      const __m256 p0 = _mm256_set1_ps(ph[0]), p1 = _mm256_set1_ps(ph[1]), p2 = _mm256_set1_ps(ph[2]), p3 = _mm256_set1_ps(ph[3]);
      float* a = acc + h * p.Dv;
      for (i64 d = 0; d < p.Dv; d += 8) {
        const i64 l = std::min<i64>(8, p.Dv - d);
        __m256 x = ld(a, d, l);
        x = _mm256_fmadd_ps(p0, ld(v0, d, l), x);
        x = _mm256_fmadd_ps(p1, ld(v1, d, l), x);
        x = _mm256_fmadd_ps(p2, ld(v2, d, l), x);
        x = _mm256_fmadd_ps(p3, ld(v3, d, l), x);
        st(a, d, l, x);
      }
    }
  }
  for (; j < len; j++)
    for (i64 h = 0; h < nh; h++) axpy(acc + h * p.Dv, sc[h * len + j], rows[j] + vo, p.Dv);
  std::memcpy(out + (n * p.H + h0) * p.Dv, acc, sizeof(float) * nh * p.Dv);
}

/** Task t of n_tasks = N · Hkv · slices. */
inline void attend_task(const PagedAttentionArgs& p, i64 slices, i64 task, float* out) {
  const i64 G = p.H / p.Hkv;
  const i64 n = task / (p.Hkv * slices), g = task / slices % p.Hkv, sl = task % slices;
  attend(p, n, g, g * G + G * sl / slices, g * G + G * (sl + 1) / slices, out);
}

// Up to this many tokens share each load of a W^UK / W^UV row in the absorbed products (4 × two 8-lane vectors:
// eight independent FMA chains).
constexpr i64 TOK = 4;

/** q̃[n, h] = [q_nope · W^UK_h | q_pe] for tokens [n0, n0 + NT) and one head (W^UK_h read once for all of them).
 * NT is a template argument so that the accumulators stay in registers (a run-time count spilled them). */
template <int NT>
void absorb_query(const MlaDecodeArgs& a, i64 h, i64 n0, float* qabs) {
  constexpr i64 nt = NT;
  const i64 dq = a.dn + a.dr, W = a.dc + a.dr;
  const float* wk = a.kvB + h * (a.dn + a.dv) * a.dc;
  for (i64 c0 = 0; c0 < a.dc; c0 += 16) {
    const i64 l0 = std::min<i64>(8, a.dc - c0), l1 = std::max<i64>(0, std::min<i64>(8, a.dc - c0 - 8));
    __m256 s0[NT], s1[NT];
    for (i64 t = 0; t < nt; t++) s0[t] = s1[t] = _mm256_setzero_ps();
    for (i64 i = 0; i < a.dn; i++) {
      const __m256 w0 = ld(wk + i * a.dc, c0, l0), w1 = ld(wk + i * a.dc, c0 + 8, l1);
      for (i64 t = 0; t < nt; t++) {
        const __m256 qv = _mm256_set1_ps(a.q[((n0 + t) * a.H + h) * dq + i]);
        s0[t] = _mm256_fmadd_ps(qv, w0, s0[t]);
        s1[t] = _mm256_fmadd_ps(qv, w1, s1[t]);
      }
    }
    for (i64 t = 0; t < nt; t++) {
      float* dst = qabs + ((n0 + t) * a.H + h) * W;
      st(dst, c0, l0, s0[t]);
      st(dst, c0 + 8, l1, s1[t]);
    }
  }
  for (i64 t = 0; t < nt; t++)
    std::memcpy(qabs + ((n0 + t) * a.H + h) * W + a.dc, a.q + ((n0 + t) * a.H + h) * dq + a.dn, sizeof(float) * a.dr);
}

/** out[n, h·dv + v] = W^UV_h[v] · lat[n, h] for tokens [n0, n0 + NT) and one head. */
template <int NT>
void project_value(const MlaDecodeArgs& a, i64 h, i64 n0, const float* lat, float* out) {
  constexpr i64 nt = NT;
  const float* wv = a.kvB + (h * (a.dn + a.dv) + a.dn) * a.dc;
  for (i64 v = 0; v < a.dv; v++) {
    const float* w = wv + v * a.dc;
    __m256 s0[NT], s1[NT];
    for (i64 t = 0; t < nt; t++) s0[t] = s1[t] = _mm256_setzero_ps();
    for (i64 c = 0; c < a.dc; c += 16) {
      const i64 l0 = std::min<i64>(8, a.dc - c), l1 = std::max<i64>(0, std::min<i64>(8, a.dc - c - 8));
      const __m256 w0 = ld(w, c, l0), w1 = ld(w, c + 8, l1);
      for (i64 t = 0; t < nt; t++) {
        const float* x = lat + ((n0 + t) * a.H + h) * a.dc;
        s0[t] = _mm256_fmadd_ps(ld(x, c, l0), w0, s0[t]);
        s1[t] = _mm256_fmadd_ps(ld(x, c + 8, l1), w1, s1[t]);
      }
    }
    for (i64 t = 0; t < nt; t++) out[(n0 + t) * a.H * a.dv + h * a.dv + v] = hsum(_mm256_add_ps(s0[t], s1[t]));
  }
}

}  // namespace

void paged_attention(const PagedAttentionArgs& p, float* out) {
  const i64 work = paged_checks(p);
  const int nt = threads_for((double)work * p.H * (p.Dk + p.Dv) * 2);
  const i64 slices = head_slices(p, nt);
  const i64 tasks = p.N * p.Hkv * slices;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
  for (i64 task = 0; task < tasks; task++) attend_task(p, slices, task, out);
}

/** Token group [n0, n0 + nt), nt ≤ TOK, of one head: phase 1 (value = false) or phase 3. */
void absorb_group(const MlaDecodeArgs& a, bool value, i64 h, i64 n0, i64 nt, float* qabs, const float* lat, float* out) {
  switch (nt) {
    case 1: return value ? project_value<1>(a, h, n0, lat, out) : absorb_query<1>(a, h, n0, qabs);
    case 2: return value ? project_value<2>(a, h, n0, lat, out) : absorb_query<2>(a, h, n0, qabs);
    case 3: return value ? project_value<3>(a, h, n0, lat, out) : absorb_query<3>(a, h, n0, qabs);
    default: return value ? project_value<4>(a, h, n0, lat, out) : absorb_query<4>(a, h, n0, qabs);
  }
}

// The three phases in one parallel region: the queries into the latent space (per head and group of tokens, so a
// W^UK_h row is loaded once for the group), the attention itself (paged_attention's tasks), the latent results
// out through W^UV_h. Each phase's barrier is the end of its `omp for`.
void mla_decode(const MlaDecodeArgs& a, float* out) {
  const i64 W = a.dc + a.dr;
  std::vector<float> qabs((size_t)(a.N * a.H * W)), lat((size_t)(a.N * a.H * a.dc));
  const PagedAttentionArgs p{a.N,         a.H, 1, W, a.dc, a.scale, qabs.data(), a.cache, W, 0, 0, 0, 0, a.blockSize, a.numBlocks,
                             a.blockTables, a.maxBlocks, a.contextLens};
  const i64 work = paged_checks(p);
  const double flops = (double)work * a.H * (W + a.dc) * 2 + 2.0 * a.N * a.H * a.dc * (a.dn + a.dv);
  const int nt = threads_for(flops);
  const i64 slices = head_slices(p, nt);
  const i64 tasks = a.N * slices, groups = (a.N + TOK - 1) / TOK;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
#pragma omp for schedule(static)
    for (i64 t = 0; t < a.H * groups; t++) absorb_group(a, false, t % a.H, t / a.H * TOK, std::min<i64>(TOK, a.N - t / a.H * TOK), qabs.data(), nullptr, nullptr);
#pragma omp for schedule(dynamic, 1)
    for (i64 task = 0; task < tasks; task++) attend_task(p, slices, task, lat.data());
#pragma omp for schedule(static)
    for (i64 t = 0; t < a.H * groups; t++) absorb_group(a, true, t % a.H, t / a.H * TOK, std::min<i64>(TOK, a.N - t / a.H * TOK), nullptr, lat.data(), out);
  }
}

void scatter_rows(const float* src, const int32_t* idx, float* dst, i64 M, i64 N, i64 D) {
  for (i64 m = 0; m < M; m++)
    if (!(idx[m] >= 0 && idx[m] < N))
      throw KernelError("scatter rows: index " + std::to_string(idx[m]) + " is outside [0, " + std::to_string(N) + ")");
  for (i64 m = 0; m < M; m++) std::memcpy(dst + (i64)idx[m] * D, src + m * D, sizeof(float) * D);
}

}  // namespace dsv2
