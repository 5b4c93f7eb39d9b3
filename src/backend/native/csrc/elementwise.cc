// Layout copies, broadcasting elementwise ops, unary maps and axis reductions.
#include "kernels.h"

namespace dsv2 {
namespace {

/**
 * Rows [r0, r1) of an nd-dim iteration whose innermost dim is the row: calls visit(offA, offB, row) with each
 * operand's element offset of the row start. The odometer is set up once per range, then advanced.
 */
template <class F>
void for_rows(const i64* shape, int nd, const i64* sa, i64 oa, const i64* sb, i64 ob, i64 r0, i64 r1, F visit) {
  i64 idx[16];
  i64 rem = r0;
  for (int d = nd - 2; d >= 0; d--) {
    idx[d] = rem % shape[d];
    rem /= shape[d];
    oa += idx[d] * sa[d];
    ob += idx[d] * sb[d];
  }
  for (i64 r = r0; r < r1; r++) {
    visit(oa, ob, r);
    for (int d = nd - 2; d >= 0; d--) {
      oa += sa[d];
      ob += sb[d];
      if (++idx[d] < shape[d]) break;
      oa -= sa[d] * shape[d];
      ob -= sb[d] * shape[d];
      idx[d] = 0;
    }
  }
}

i64 count_rows(const i64* shape, int nd) {
  i64 rows = 1;
  for (int d = 0; d < nd - 1; d++) rows *= shape[d];
  return rows;
}

}  // namespace

void copy_strided(const float* src, i64 srcOff, const i64* ss, float* dst, i64 dstOff, const i64* ds, const i64* shape, int nd, bool acc) {
  if (nd > 16) throw KernelError("copy: more than 16 dimensions");
  for (int d = 0; d < nd; d++)
    if (shape[d] == 0) return;
  if (nd == 0) {
    dst[dstOff] = acc ? dst[dstOff] + src[srcOff] : src[srcOff];
    return;
  }
  if (nd == 1 && ss[0] == 1 && ds[0] == 1 && shape[0] > 65536) {  // one long row: split it into pieces
    const i64 piece = 16384, rows = shape[0] / piece, rest = shape[0] - rows * piece;
    const i64 sh[2] = {rows, piece}, s2[2] = {piece, 1}, d2[2] = {piece, 1}, tail[1] = {rest}, one[1] = {1};
    copy_strided(src, srcOff, s2, dst, dstOff, d2, sh, 2, acc);
    if (rest) copy_strided(src, srcOff + rows * piece, one, dst, dstOff + rows * piece, one, tail, 1, acc);
    return;
  }
  const i64 n = shape[nd - 1], sa = ss[nd - 1], sb = ds[nd - 1];
  // Threads may split rows only when no two rows write the same destination (no zero-stride broadcast dims).
  bool disjoint = true;
  for (int d = 0; d < nd - 1; d++)
    if (ds[d] == 0 && shape[d] > 1) disjoint = false;
  const i64 rows = count_rows(shape, nd);
  parallel_rows(rows, (double)rows * n / 4, disjoint, [&](i64 r0, i64 r1) {
    for_rows(shape, nd, ss, srcOff, ds, dstOff, r0, r1, [&](i64 ia, i64 ib, i64) {
      const float* a = src + ia;
      float* b = dst + ib;
      if (sa == 1 && sb == 1) {
        if (acc) {
          for (i64 i = 0; i < n; i++) b[i] += a[i];
        } else {
          std::memcpy(b, a, sizeof(float) * n);
        }
      } else if (sb == 0 && acc) {
        float s = 0.f;
        for (i64 i = 0; i < n; i++) s += a[i * sa];
        b[0] += s;
      } else if (acc) {
        for (i64 i = 0; i < n; i++) b[i * sb] += a[i * sa];
      } else {
        for (i64 i = 0; i < n; i++) b[i * sb] = a[i * sa];
      }
    });
  });
}

template <int OP>
static inline float bin(float x, float y) {
  if constexpr (OP == ADD) return x + y;
  else if constexpr (OP == SUB) return x - y;
  else if constexpr (OP == MUL) return x * y;
  else return x / y;
}

template <int OP>
static void binary_t(const float* a, i64 aOff, const i64* as, const float* b, i64 bOff, const i64* bs, float* out, const i64* shape, int nd) {
  const i64 n = nd ? shape[nd - 1] : 1, sa = nd ? as[nd - 1] : 0, sb = nd ? bs[nd - 1] : 0;
  const i64 rows = count_rows(shape, nd);
  parallel_rows(rows, (double)rows * n / 4, true, [&](i64 r0, i64 r1) {
    for_rows(shape, nd, as, aOff, bs, bOff, r0, r1, [&](i64 ia, i64 ib, i64 r) {
      const float* x = a + ia;
      const float* y = b + ib;
      float* o = out + r * n;
      if (sa == 1 && sb == 1) {
        for (i64 i = 0; i < n; i++) o[i] = bin<OP>(x[i], y[i]);
      } else if (sa == 1 && sb == 0) {
        const float yv = y[0];
        for (i64 i = 0; i < n; i++) o[i] = bin<OP>(x[i], yv);
      } else if (sa == 0 && sb == 1) {
        const float xv = x[0];
        for (i64 i = 0; i < n; i++) o[i] = bin<OP>(xv, y[i]);
      } else {
        for (i64 i = 0; i < n; i++) o[i] = bin<OP>(x[i * sa], y[i * sb]);
      }
    });
  });
}

void binary(int op, const float* a, i64 aOff, const i64* as, const float* b, i64 bOff, const i64* bs, float* out, const i64* shape, int nd) {
  if (nd > 16) throw KernelError("binary: more than 16 dimensions");
  for (int d = 0; d < nd; d++)
    if (shape[d] == 0) return;
  switch (op) {
    case ADD: return binary_t<ADD>(a, aOff, as, b, bOff, bs, out, shape, nd);
    case SUB: return binary_t<SUB>(a, aOff, as, b, bOff, bs, out, shape, nd);
    case MUL: return binary_t<MUL>(a, aOff, as, b, bOff, bs, out, shape, nd);
    case DIV: return binary_t<DIV>(a, aOff, as, b, bOff, bs, out, shape, nd);
    default: throw KernelError("binary: unknown op");
  }
}

namespace {
/** Apply an 8-lane map over n elements: full vectors, then a masked tail, split over threads when large. */
template <class F>
void map8(i64 n, double costPerElem, F f) {
  const i64 blocks = (n + 7) / 8;
  parallel_rows(blocks, blocks * 8 * costPerElem, true, [&](i64 b0, i64 b1) {
    for (i64 bI = b0; bI < b1; bI++) {
      const i64 i = bI * 8;
      f(i, std::min<i64>(8, n - i));
    }
  });
}

}  // namespace

void unary(int op, const float* x, float* out, i64 n, float alpha) {
  switch (op) {
    case NEG: map8(n, 0.25, [&](i64 i, i64 l) { st(out, i, l, _mm256_sub_ps(_mm256_setzero_ps(), ld(x, i, l))); }); return;
    case EXP: map8(n, 4, [&](i64 i, i64 l) { st(out, i, l, exp256(ld(x, i, l))); }); return;
    case LOG:
      for (i64 i = 0; i < n; i++) out[i] = std::log(x[i]);
      return;
    case SQRT: map8(n, 1, [&](i64 i, i64 l) { st(out, i, l, _mm256_sqrt_ps(ld(x, i, l))); }); return;
    case RSQRT:
      map8(n, 2, [&](i64 i, i64 l) { st(out, i, l, _mm256_div_ps(_mm256_set1_ps(1.f), _mm256_sqrt_ps(ld(x, i, l)))); });
      return;
    case SILU:
      map8(n, 5, [&](i64 i, i64 l) {
        const __m256 v = ld(x, i, l);
        st(out, i, l, _mm256_mul_ps(v, sigmoid256(v)));
      });
      return;
    case SCALE: map8(n, 0.25, [&](i64 i, i64 l) { st(out, i, l, _mm256_mul_ps(ld(x, i, l), _mm256_set1_ps(alpha))); }); return;
    case SQUARE:
      map8(n, 0.25, [&](i64 i, i64 l) {
        const __m256 v = ld(x, i, l);
        st(out, i, l, _mm256_mul_ps(v, v));
      });
      return;
    case ABS:
      for (i64 i = 0; i < n; i++) out[i] = std::fabs(x[i]);
      return;
    default: throw KernelError("unary: unknown op");
  }
}

void unary_backward(int op, const float* x, const float* y, const float* dy, float* dx, i64 n, float alpha) {
  switch (op) {
    case NEG:
      for (i64 i = 0; i < n; i++) dx[i] = -dy[i];
      return;
    case EXP:
      for (i64 i = 0; i < n; i++) dx[i] = dy[i] * y[i];
      return;
    case LOG:
      for (i64 i = 0; i < n; i++) dx[i] = dy[i] / x[i];
      return;
    case SQRT:
      for (i64 i = 0; i < n; i++) dx[i] = (0.5f * dy[i]) / y[i];
      return;
    case RSQRT:
      for (i64 i = 0; i < n; i++) dx[i] = -0.5f * dy[i] * y[i] * y[i] * y[i];
      return;
    case SILU:
      map8(n, 6, [&](i64 i, i64 l) {
        const __m256 v = ld(x, i, l), s = sigmoid256(v), one = _mm256_set1_ps(1.f);
        const __m256 d = _mm256_mul_ps(s, _mm256_fmadd_ps(v, _mm256_sub_ps(one, s), one));
        st(dx, i, l, _mm256_mul_ps(ld(dy, i, l), d));
      });
      return;
    case SCALE:
      for (i64 i = 0; i < n; i++) dx[i] = dy[i] * alpha;
      return;
    case SQUARE:
      for (i64 i = 0; i < n; i++) dx[i] = 2.f * dy[i] * x[i];
      return;
    case ABS:
      for (i64 i = 0; i < n; i++) dx[i] = x[i] > 0 ? dy[i] : x[i] < 0 ? -dy[i] : 0.f;
      return;
    default: throw KernelError("unary backward: unknown op");
  }
}

void reduce(bool isMax, const float* x, float* out, int32_t* arg, i64 O, i64 N, i64 I) {
  if (!isMax) {
    for (i64 o = 0; o < O; o++) {
      const float* xo = x + o * N * I;
      float* oo = out + o * I;
      if (I == 1) {
        __m256 s = _mm256_setzero_ps();
        i64 n = 0;
        for (; n + 8 <= N; n += 8) s = _mm256_add_ps(s, _mm256_loadu_ps(xo + n));
        float t = hsum(s);
        for (; n < N; n++) t += xo[n];
        oo[0] = t;
      } else {
        std::memset(oo, 0, sizeof(float) * I);
        for (i64 n = 0; n < N; n++)
          for (i64 i = 0; i < I; i++) oo[i] += xo[n * I + i];
      }
    }
    return;
  }
  for (i64 o = 0; o < O; o++) {
    for (i64 i = 0; i < I; i++) {
      float best = -INFINITY;
      int32_t at = 0;
      for (i64 n = 0; n < N; n++) {
        const float v = x[o * N * I + n * I + i];
        if (v > best || (n == 0 && std::isnan(v))) {
          best = v;
          at = (int32_t)n;
        }
      }
      out[o * I + i] = best;
      if (arg) arg[o * I + i] = at;
    }
  }
}

void reduce_max_backward(const float* dy, const int32_t* arg, float* dx, i64 O, i64 N, i64 I) {
  for (i64 o = 0; o < O; o++)
    for (i64 i = 0; i < I; i++) dx[o * N * I + (i64)arg[o * I + i] * I + i] += dy[o * I + i];
}

}  // namespace dsv2
