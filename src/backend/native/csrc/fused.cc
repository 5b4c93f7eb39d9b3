// Fused row kernels: RMSNorm, softmax / log-softmax, SwiGLU, cross-entropy, RoPE, AdamW, sum of squares.
// Rows are split over threads; within a row, 8-lane AVX2 loops with masked tails. Row statistics (sums of squares,
// softmax denominators) accumulate in float vectors and are finished in double.
#include <vector>

#include "kernels.h"

namespace dsv2 {
namespace {

inline float row_max(const float* x, i64 n) {
  __m256 m = _mm256_set1_ps(-INFINITY);
  i64 i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  float r = hmax(m);
  for (; i < n; i++) r = x[i] > r ? x[i] : r;
  return r;
}

/** y[i] = exp(x[i] − shift) for the row; returns Σ y. y may be null (sum only). */
inline double row_exp(const float* x, float* y, i64 n, float shift) {
  const __m256 sh = _mm256_set1_ps(shift);
  __m256 s = _mm256_setzero_ps();
  for (i64 i = 0; i < n; i += 8) {
    const i64 l = std::min<i64>(8, n - i);
    __m256 e = exp256(_mm256_sub_ps(ld(x, i, l), sh));
    if (l < 8) e = _mm256_and_ps(e, _mm256_castsi256_ps(tail_mask(l)));
    if (y) st(y, i, l, e);
    s = _mm256_add_ps(s, e);
  }
  return hsum(s);
}

}  // namespace

void rmsnorm(const float* x, const float* w, float* y, float* rstd, i64 R, i64 D, float eps) {
  parallel_rows(R, (double)R * D * 3, true, [&](i64 r0, i64 r1) {
    for (i64 r = r0; r < r1; r++) {
      const float* xr = x + r * D;
      float* yr = y + r * D;
      const float s = (float)(1.0 / std::sqrt((double)row_dot(xr, xr, D) / D + eps));
      rstd[r] = s;
      const __m256 sv = _mm256_set1_ps(s);
      for (i64 i = 0; i < D; i += 8) {
        const i64 l = std::min<i64>(8, D - i);
        st(yr, i, l, _mm256_mul_ps(_mm256_mul_ps(ld(xr, i, l), sv), ld(w, i, l)));
      }
    }
  });
}

// dw_i += Σ_r dy_i·x_i·s;  dx_i = s·dy_i·w_i − (s³/D)·x_i·Σ_j dy_j·w_j·x_j. Each thread sums dw privately.
void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw, i64 R, i64 D) {
  const int nt = threads_for((double)R * D * 6);
  std::vector<float> part((size_t)nt * D, 0.f);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    float* dwt = part.data() + (size_t)t * D;
    for (i64 r = R * t / n; r < R * (t + 1) / n; r++) {
      const float* xr = x + r * D;
      const float* gr = dy + r * D;
      float* dr = dx + r * D;
      const float s = rstd[r];
      __m256 dot = _mm256_setzero_ps();
      const __m256 sv = _mm256_set1_ps(s);
      for (i64 i = 0; i < D; i += 8) {
        const i64 l = std::min<i64>(8, D - i);
        const __m256 xv = ld(xr, i, l), gv = ld(gr, i, l);
        dot = _mm256_fmadd_ps(_mm256_mul_ps(gv, ld(w, i, l)), xv, dot);
        st(dwt, i, l, _mm256_fmadd_ps(_mm256_mul_ps(gv, xv), sv, ld(dwt, i, l)));
      }
      const float k = (float)((double)s * s * s * hsum(dot) / D);
      const __m256 kv = _mm256_set1_ps(k);
      for (i64 i = 0; i < D; i += 8) {
        const i64 l = std::min<i64>(8, D - i);
        st(dr, i, l, _mm256_fnmadd_ps(kv, ld(xr, i, l), _mm256_mul_ps(sv, _mm256_mul_ps(ld(gr, i, l), ld(w, i, l)))));
      }
    }
  }
  for (int t = 0; t < nt; t++)
    for (i64 i = 0; i < D; i++) dw[i] += part[(size_t)t * D + i];
}

void softmax(const float* x, float* y, i64 R, i64 N, bool log) {
  parallel_rows(R, (double)R * N * 6, true, [&](i64 r0, i64 r1) {
    for (i64 r = r0; r < r1; r++) {
      const float* xr = x + r * N;
      float* yr = y + r * N;
      float mx = row_max(xr, N);
      if (mx == -INFINITY) mx = 0.f;  // a fully masked row: exps of −inf are all zero, no NaN
      if (log) {
        // (x − max) − log Σ: rounding a large lse to float first would cost its low bits
        const float ls = (float)std::log(row_exp(xr, nullptr, N, mx));
        for (i64 i = 0; i < N; i++) yr[i] = (xr[i] - mx) - ls;
      } else {
        const float inv = (float)(1.0 / row_exp(xr, yr, N, mx));
        for (i64 i = 0; i < N; i++) yr[i] *= inv;
      }
    }
  });
}

void softmax_backward(const float* y, const float* dy, float* dx, i64 R, i64 N, bool log) {
  parallel_rows(R, (double)R * N * 4, true, [&](i64 r0, i64 r1) {
    for (i64 r = r0; r < r1; r++) {
      const float* yr = y + r * N;
      const float* gr = dy + r * N;
      float* dr = dx + r * N;
      if (log) {
        double s = 0;
        for (i64 i = 0; i < N; i++) s += gr[i];
        const __m256 sv = _mm256_set1_ps((float)s);
        for (i64 i = 0; i < N; i += 8) {
          const i64 l = std::min<i64>(8, N - i);
          st(dr, i, l, _mm256_fnmadd_ps(exp256(ld(yr, i, l)), sv, ld(gr, i, l)));
        }
      } else {
        const __m256 sv = _mm256_set1_ps(row_dot(gr, yr, N));
        for (i64 i = 0; i < N; i += 8) {
          const i64 l = std::min<i64>(8, N - i);
          st(dr, i, l, _mm256_mul_ps(ld(yr, i, l), _mm256_sub_ps(ld(gr, i, l), sv)));
        }
      }
    }
  });
}

void swiglu(const float* a, const float* b, float* out, i64 n) {
  const i64 blocks = (n + 7) / 8;
  parallel_rows(blocks, (double)n * 6, true, [&](i64 b0, i64 b1) {
    for (i64 q = b0; q < b1; q++) {
      const i64 i = q * 8, l = std::min<i64>(8, n - i);
      const __m256 av = ld(a, i, l);
      st(out, i, l, _mm256_mul_ps(_mm256_mul_ps(av, sigmoid256(av)), ld(b, i, l)));
    }
  });
}

void swiglu_backward(const float* a, const float* b, const float* dy, float* da, float* db, i64 n) {
  const i64 blocks = (n + 7) / 8;
  parallel_rows(blocks, (double)n * 8, true, [&](i64 b0, i64 b1) {
    const __m256 one = _mm256_set1_ps(1.f);
    for (i64 q = b0; q < b1; q++) {
      const i64 i = q * 8, l = std::min<i64>(8, n - i);
      const __m256 av = ld(a, i, l), s = sigmoid256(av), g = ld(dy, i, l);
      st(db, i, l, _mm256_mul_ps(_mm256_mul_ps(g, av), s));
      const __m256 d = _mm256_mul_ps(s, _mm256_fmadd_ps(av, _mm256_sub_ps(one, s), one));
      st(da, i, l, _mm256_mul_ps(_mm256_mul_ps(g, ld(b, i, l)), d));
    }
  });
}

static void check_targets(const int32_t* targets, i64 R, i64 V, int32_t ignore) {
  for (i64 r = 0; r < R; r++) {
    const int32_t t = targets[r];
    if (t != ignore && (t < 0 || t >= V))
      throw KernelError("cross-entropy target " + std::to_string(t) + " at row " + std::to_string(r) + " is outside the vocabulary [0, " +
                        std::to_string(V) + ")");
  }
}

void cross_entropy(const float* logits, const int32_t* targets, float* loss, float* lse, i64 R, i64 V, int32_t ignore) {
  check_targets(targets, R, V, ignore);
  parallel_rows(R, (double)R * V * 5, true, [&](i64 r0, i64 r1) {
    for (i64 r = r0; r < r1; r++) {
      const float* xr = logits + r * V;
      const float mx = row_max(xr, V);
      const double l = mx + std::log(row_exp(xr, nullptr, V, mx));
      lse[r] = (float)l;
      loss[r] = targets[r] == ignore ? 0.f : (float)(l - xr[targets[r]]);
    }
  });
}

void cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse, const float* dloss, float* dlogits, i64 R, i64 V,
                            int32_t ignore) {
  check_targets(targets, R, V, ignore);
  parallel_rows(R, (double)R * V * 5, true, [&](i64 r0, i64 r1) {
    for (i64 r = r0; r < r1; r++) {
      float* dr = dlogits + r * V;
      const int32_t t = targets[r];
      if (t == ignore) {
        std::memset(dr, 0, sizeof(float) * V);
        continue;
      }
      const float* xr = logits + r * V;
      const __m256 g = _mm256_set1_ps(dloss[r]), l = _mm256_set1_ps(lse[r]);
      for (i64 i = 0; i < V; i += 8) {
        const i64 n = std::min<i64>(8, V - i);
        st(dr, i, n, _mm256_mul_ps(g, exp256(_mm256_sub_ps(ld(xr, i, n), l))));
      }
      dr[t] -= dloss[r];
    }
  });
}

void rope(const float* x, const float* cs, const float* sn, float* out, i64 B, i64 T, i64 H, i64 D, i64 Bc, bool inverse, i64 pass) {
  const i64 half = D / 2, W = pass + D;  // each head vector: `pass` values copied, then D rotated
  const float sgn = inverse ? -1.f : 1.f;
  parallel_rows(B * T, (double)B * T * H * W * 2, true, [&](i64 r0, i64 r1) {
    for (i64 bt = r0; bt < r1; bt++) {
      const i64 b = bt / T, t = bt % T;
      const i64 tab = ((Bc == 1 ? 0 : b) * T + t) * half;
      for (i64 h = 0; h < H; h++) {
        const i64 row = (bt * H + h) * W, o = row + pass;
        if (pass) std::memcpy(out + row, x + row, sizeof(float) * pass);
        for (i64 k = 0; k < half; k++) {
          const float c = cs[tab + k], s = sgn * sn[tab + k];
          const float x0 = x[o + 2 * k], x1 = x[o + 2 * k + 1];
          out[o + 2 * k] = x0 * c - x1 * s;
          out[o + 2 * k + 1] = x0 * s + x1 * c;
        }
      }
    }
  });
}

namespace {

// Elements [i0, i1) of one AdamW update (i0 a multiple of 8).
void adamw_range(const AdamWArgs& p, i64 i0, i64 i1) {
  const double bc1 = 1 - std::pow(p.beta1, p.step), bc2 = 1 - std::pow(p.beta2, p.step);
  const __m256 b1 = _mm256_set1_ps((float)p.beta1), c1 = _mm256_set1_ps((float)(1 - p.beta1));
  const __m256 b2 = _mm256_set1_ps((float)p.beta2), c2 = _mm256_set1_ps((float)(1 - p.beta2));
  const __m256 decay = _mm256_set1_ps((float)(1 - p.lr * p.weightDecay)), step = _mm256_set1_ps((float)(p.lr / bc1));
  const __m256 vbc = _mm256_set1_ps((float)bc2), eps = _mm256_set1_ps((float)p.eps), gs = _mm256_set1_ps((float)p.gradScale);
  for (i64 i = i0; i < i1; i += 8) {
    const i64 l = std::min<i64>(8, i1 - i);
    const __m256 g = _mm256_mul_ps(ld(p.grad, i, l), gs);
    const __m256 m = _mm256_fmadd_ps(b1, ld(p.m, i, l), _mm256_mul_ps(c1, g));
    const __m256 v = _mm256_fmadd_ps(b2, ld(p.v, i, l), _mm256_mul_ps(c2, _mm256_mul_ps(g, g)));
    st(p.m, i, l, m);
    st(p.v, i, l, v);
    const __m256 den = _mm256_add_ps(_mm256_sqrt_ps(_mm256_div_ps(v, vbc)), eps);
    st(p.param, i, l, _mm256_sub_ps(_mm256_mul_ps(ld(p.param, i, l), decay), _mm256_div_ps(_mm256_mul_ps(step, m), den)));
  }
}

/** Pieces of `chunk` elements over a list of tensors of sizes n(0…count−1): (tensor, first element). */
template <class Size>
std::vector<std::pair<i64, i64>> pieces(i64 count, i64 chunk, Size n) {
  std::vector<std::pair<i64, i64>> out;
  for (i64 i = 0; i < count; i++)
    for (i64 s = 0; s < n(i); s += chunk) out.emplace_back(i, s);
  return out;
}

}  // namespace

void adamw(const AdamWArgs& p) {
  parallel_rows((p.n + 7) / 8, (double)p.n * 4, true, [&](i64 q0, i64 q1) { adamw_range(p, q0 * 8, std::min(p.n, q1 * 8)); });
}

// Every parameter's update in one parallel region (a model has hundreds of tensors, most of them small: one
// fork/join each cost more than their update), in 16 Ki-element pieces taken as threads finish.
void adamw_many(const AdamWArgs* items, i64 count) {
  constexpr i64 CH = 1 << 14;
  const auto ps = pieces(count, CH, [&](i64 i) { return items[i].n; });
  double total = 0;
  for (i64 i = 0; i < count; i++) total += (double)items[i].n * 4;
  const int nt = threads_for(total);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(dynamic, 2)
  for (size_t c = 0; c < ps.size(); c++) {
    const AdamWArgs& p = items[ps[c].first];
    adamw_range(p, ps[c].second, std::min(p.n, ps[c].second + CH));
  }
}

namespace {
inline double sumsq_piece(const float* x, i64 i0, i64 i1) {
  __m256 s = _mm256_setzero_ps();
  for (i64 i = i0; i < i1; i += 8) {
    const __m256 v = ld(x, i, std::min<i64>(8, i1 - i));
    s = _mm256_fmadd_ps(v, v, s);
  }
  return hsum(s);
}
}  // namespace

double sumsq(const float* x, i64 n) {
  const int nt = threads_for((double)n);
  double total = 0;
#pragma omp parallel for num_threads(nt) if (nt > 1) reduction(+ : total) schedule(static)
  for (i64 c = 0; c < (n + 4095) / 4096; c++) total += sumsq_piece(x, c * 4096, std::min<i64>(n, c * 4096 + 4096));
  return total;
}

// Σ over several tensors in one parallel region, in 4 Ki-element pieces (float partial sums, finished in double).
double sumsq_many(const float* const* xs, const i64* ns, i64 count) {
  const auto ps = pieces(count, 4096, [&](i64 i) { return ns[i]; });
  double work = 0;
  for (i64 i = 0; i < count; i++) work += (double)ns[i];
  const int nt = threads_for(work);
  double total = 0;
#pragma omp parallel for num_threads(nt) if (nt > 1) reduction(+ : total) schedule(static)
  for (size_t c = 0; c < ps.size(); c++) {
    const i64 i = ps[c].first, s = ps[c].second;
    total += sumsq_piece(xs[i], s, std::min<i64>(ns[i], s + 4096));
  }
  return total;
}

}  // namespace dsv2
