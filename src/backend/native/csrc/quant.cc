// Products with stored weights (bf16, f16 and llama.cpp's block-quantized types), computed straight from the
// stored bytes: no float32 copy of a weight ever exists. The semantics are src/backend/ts/quant.ts's:
//  - q8_0, q4_0, q4_1, q5_0, q5_1: each 32-value block of an activation row is quantized to int16
//    (d = max|x|/32767, round half to even) and every block's dot product is an exact integer sum (vpmaddwd),
//    scaled by d_w·d_x;
//  - bf16 and f16 are widened in registers and multiplied with float32 activations (FMA);
//  - a product of F32_ROWS rows or more (prefill) decodes 64 weight rows at a time and runs the float32 GEMM;
//  - the K-quants (q4_k, q5_k, q6_k) take the same int16 activation blocks, which line up with their 32-value
//    sub-blocks, and sum exact integer products under each sub-block's scale.
// Work splits over output rows; several products (the routed experts of a layer) share one parallel region.
#include <vector>

#include "kernels.h"

namespace dsv2 {

namespace {

inline float half_to_float(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

/** One 32-value activation block as int16: its scale, the values, their sum. */
struct ActBlock {
  float d;
  float dsum;  // d · Σ q, for the offset and min terms
  int16_t q[32];
};

void quantize_act_row(const float* x, i64 K, ActBlock* out) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  for (i64 b = 0; b < K / 32; b++) {
    const float* xb = x + b * 32;
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; i++) {
      v[i] = _mm256_loadu_ps(xb + 8 * i);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
    }
    const float d = hmax(amax) / 32767.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    const __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];
    for (int i = 0; i < 4; i++) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], vid));  // round half to even
    // int32 → int16: packs works per 128-bit lane, so the result is put back in order with a permute
    const __m256i lo = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[0], q[1]), 0xd8);
    const __m256i hi = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[2], q[3]), 0xd8);
    const __m256i lim = _mm256_set1_epi16(-32767);
    _mm256_storeu_si256((__m256i*)out[b].q, _mm256_max_epi16(lo, lim));
    _mm256_storeu_si256((__m256i*)(out[b].q + 16), _mm256_max_epi16(hi, lim));
    int32_t s = 0;
    for (int j = 0; j < 32; j++) s += out[b].q[j];
    out[b].d = d;
    out[b].dsum = d * (float)s;
  }
}

constexpr int MT = 4;  // activation rows per pass over a weight row

/** Bytes, offsets and what a block holds: its values are u − OFF (q8_0: signed bytes), plus a min for q4_1/q5_1. */
template <int T>
struct Block {
  static constexpr i64 BYTES = T == 3 ? 34 : T == 4 ? 18 : T == 5 ? 20 : T == 6 ? 22 : 24;
  static constexpr bool MIN = T == 5 || T == 7;
  static constexpr int OFF = T == 4 ? 8 : T == 6 ? 16 : 0;
};

/** The 5th bit of values 0–15 (lo) and 16–31 (hi) of a q5 block, as 0x10 or 0 in 16-bit lanes. */
inline void high_bits(const uint8_t* qh, __m256i& lo, __m256i& hi) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  const __m256i lane = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, (short)0x8000);
  const __m256i b0 = _mm256_and_si256(_mm256_set1_epi16((short)(bits & 0xffff)), lane);
  const __m256i b1 = _mm256_and_si256(_mm256_set1_epi16((short)(bits >> 16)), lane);
  const __m256i five = _mm256_set1_epi16(0x10);
  lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_cmpeq_epi16(b0, lane), five));
  hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_cmpeq_epi16(b1, lane), five));
}

/** A block's 32 stored values as int16: elements 0–15 in lo, 16–31 in hi (before the offset OFF is taken off). */
template <int T>
inline void block_words(const uint8_t* p, __m256i& lo, __m256i& hi) {
  if constexpr (T == 3) {
    lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(p + 2)));
    hi = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(p + 18)));
  } else {
    constexpr int QS = T == 4 ? 2 : T == 5 ? 4 : T == 6 ? 6 : 8;
    const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(p + QS)));  // byte j = lo nibble | hi nibble
    lo = _mm256_and_si256(w, _mm256_set1_epi16(0x0f));
    hi = _mm256_srli_epi16(w, 4);
    if constexpr (T >= 6) high_bits(p + (T == 6 ? 2 : 4), lo, hi);
  }
}

/** Σ u·x over a block as 8 int32 lanes (u the stored values, x the int16 activations). */
inline __m256i block_dot(__m256i lo, __m256i hi, const int16_t* x) {
  return _mm256_add_epi32(_mm256_madd_epi16(lo, _mm256_loadu_si256((const __m256i*)x)),
                          _mm256_madd_epi16(hi, _mm256_loadu_si256((const __m256i*)(x + 16))));
}

/** Bytes ahead of the current block that a row walk prefetches: measured here, a single-thread row walk reads DRAM at
 * ~10 GB/s with it against ~6 GB/s when four rows are walked side by side and ~9 GB/s with no prefetch. */
constexpr i64 PREFETCH = 1024;

/**
 * One stored row against one activation row (batch-1 decode): y (+)= the dot product. One sequential stream through
 * the row, two accumulator chains over alternating blocks.
 */
template <int T>
void int_row1(const uint8_t* w, const ActBlock* a, i64 nb, float* y, bool add) {
  using B = Block<T>;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float side0 = 0.f, side1 = 0.f;
  auto block = [&](i64 b, __m256& acc, float& side) {
    const uint8_t* p = w + b * B::BYTES;
    __m256i lo, hi;
    block_words<T>(p, lo, hi);
    const ActBlock& ab = a[b];
    const float dw = half_to_float(p);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * ab.d), _mm256_cvtepi32_ps(block_dot(lo, hi, ab.q)), acc);
    if (B::MIN) side += half_to_float(p + 2) * ab.dsum;
    if (B::OFF) side -= (dw * (float)B::OFF) * ab.dsum;
  };
  i64 b = 0;
  for (; b + 2 <= nb; b += 2) {
    _mm_prefetch((const char*)(w + b * B::BYTES + PREFETCH), _MM_HINT_T0);
    block(b, acc0, side0);
    block(b + 1, acc1, side1);
  }
  if (b < nb) block(b, acc0, side0);
  const float s = hsum(_mm256_add_ps(acc0, acc1)) + side0 + side1;
  *y = add ? *y + s : s;
}

/**
 * R stored rows (w, w + rb, …) against mt activation rows a[m]: y[m·ldy + r] (+)= Σ_b d_w·d_x·(Σ u·q_x − OFF·Σ q_x)
 * + m_w·d_x·Σ q_x. R = 4 with one activation row is the decode case (four accumulator chains, each activation block
 * loaded once for four rows); R = 1 with up to MT rows the batched one.
 */
template <int T, int R>
void int_rows(const uint8_t* w, i64 rb, const ActBlock* const* a, int mt, i64 nb, float* y, i64 ldy, bool add) {
  using B = Block<T>;
  constexpr int C = R * MT;
  __m256 acc[C];
  float side[C];
  for (int i = 0; i < C; i++) acc[i] = _mm256_setzero_ps(), side[i] = 0.f;
  for (i64 b = 0; b < nb; b++) {
    for (int r = 0; r < R; r++) {
      const uint8_t* p = w + r * rb + b * B::BYTES;
      __m256i lo, hi;
      block_words<T>(p, lo, hi);
      const float dw = half_to_float(p);
      const float mw = B::MIN ? half_to_float(p + 2) : 0.f;
      for (int m = 0; m < (R == 1 ? mt : 1); m++) {
        const ActBlock& ab = a[m][b];
        const float dd = dw * ab.d;
        acc[r * MT + m] = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(block_dot(lo, hi, ab.q)), acc[r * MT + m]);
        if (B::MIN) side[r * MT + m] += mw * ab.dsum;
        if (B::OFF) side[r * MT + m] -= (dw * (float)B::OFF) * ab.dsum;
      }
    }
  }
  for (int r = 0; r < R; r++)
    for (int m = 0; m < (R == 1 ? mt : 1); m++) {
      const float s = hsum(acc[r * MT + m]) + side[r * MT + m];
      float& out = y[m * ldy + r];
      out = add ? out + s : s;
    }
}

/** Eight bf16 or f16 values widened to float32. */
template <int T>
inline __m256 widen8(const uint8_t* p) {
  const __m128i h = _mm_loadu_si128((const __m128i*)p);
  if constexpr (T == 1) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}

/** bf16 / f16: y[m·ldy] (+)= w · x[m] over K (a multiple of 8 is not required: the tail is scalar). */
template <int T>
void half_row(const uint8_t* w, const float* const* x, int mt, i64 K, float* y, i64 ldy, bool add) {
  __m256 acc[MT];
  for (int m = 0; m < MT; m++) acc[m] = _mm256_setzero_ps();
  i64 k = 0;
  for (; k + 8 <= K; k += 8) {
    if ((k & 31) == 0) _mm_prefetch((const char*)(w + 2 * k + PREFETCH), _MM_HINT_T0);
    const __m256 wv = widen8<T>(w + 2 * k);
    for (int m = 0; m < mt; m++) acc[m] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[m] + k), acc[m]);
  }
  for (int m = 0; m < mt; m++) {
    float s = hsum(acc[m]);
    for (i64 j = k; j < K; j++) {
      uint16_t h;
      std::memcpy(&h, w + 2 * j, 2);
      float v;
      if (T == 1) {
        const uint32_t u = (uint32_t)h << 16;
        std::memcpy(&v, &u, 4);
      } else v = _cvtsh_ss(h);
      s += v * x[m][j];
    }
    y[m * ldy] = add ? y[m * ldy] + s : s;
  }
}

/** Q4_K / Q5_K: the 6-bit scale and min of sub-block j. */
inline void scale_min_k4(int j, const uint8_t* q, int& sc, int& mn) {
  if (j < 4) {
    sc = q[j] & 63, mn = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
    mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

/**
 * A K-quant row (q4_k, q5_k: 144/176-byte super-blocks of 256 values in eight 32-value sub-blocks with 6-bit scales
 * and mins; q6_k: 210 bytes, sixteen 16-value signed scales) against one int16 activation row, whose 32-value blocks
 * line up with the sub-blocks: y (+)= Σ_s d·sc_s·d_x·Σ q·q_x − dmin·m_s·d_x·Σ q_x (q6_k: d·d_x·Σ_h sc_h·Σ (q−32)·q_x).
 */
template <int T>
void kq_row1(const uint8_t* w, const ActBlock* a, i64 nsb, float* y, bool add) {
  __m256 acc = _mm256_setzero_ps();
  float side = 0.f;
  const __m256i m4 = _mm256_set1_epi16(0x0f);
  for (i64 sb = 0; sb < nsb; sb++) {
    const ActBlock* ab = a + sb * 8;
    if constexpr (T == 10) {
      const uint8_t* p = w + sb * 210;
      _mm_prefetch((const char*)(p + PREFETCH), _MM_HINT_T0);
      const float d = half_to_float(p + 208);
      const int8_t* sc = (const int8_t*)(p + 192);
      for (int n = 0; n < 2; n++) {
        const uint8_t* ql = p + 64 * n;
        const uint8_t* qh = p + 128 + 32 * n;
        const __m256i hA = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)qh));
        const __m256i hB = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(qh + 16)));
        for (int t = 0; t < 4; t++) {
          const uint8_t* q = ql + (t & 1) * 32;
          __m256i lA = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)q));
          __m256i lB = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(q + 16)));
          if (t >= 2) lA = _mm256_srli_epi16(lA, 4), lB = _mm256_srli_epi16(lB, 4);
          const __m128i shift = _mm_cvtsi32_si128(2 * t);
          const __m256i three = _mm256_set1_epi16(3), off = _mm256_set1_epi16(32);
          const __m256i qA = _mm256_sub_epi16(_mm256_or_si256(_mm256_and_si256(lA, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(hA, shift), three), 4)), off);
          const __m256i qB = _mm256_sub_epi16(_mm256_or_si256(_mm256_and_si256(lB, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(hB, shift), three), 4)), off);
          const ActBlock& x = ab[4 * n + t];
          // the two 16-value scales folded into the int16 weights (|q·sc| ≤ 4096, so the pair sums fit int32)
          const __m256i sA = _mm256_mullo_epi16(qA, _mm256_set1_epi16(sc[8 * n + 2 * t]));
          const __m256i sB = _mm256_mullo_epi16(qB, _mm256_set1_epi16(sc[8 * n + 2 * t + 1]));
          const __m256i isum = _mm256_add_epi32(_mm256_madd_epi16(sA, _mm256_loadu_si256((const __m256i*)x.q)),
                                                _mm256_madd_epi16(sB, _mm256_loadu_si256((const __m256i*)(x.q + 16))));
          acc = _mm256_fmadd_ps(_mm256_set1_ps(d * x.d), _mm256_cvtepi32_ps(isum), acc);
        }
      }
    } else {
      constexpr bool FIVE = T == 9;
      const uint8_t* p = w + sb * (FIVE ? 176 : 144);
      _mm_prefetch((const char*)(p + PREFETCH), _MM_HINT_T0);
      const float d = half_to_float(p), dmin = half_to_float(p + 2);
      const uint8_t* scales = p + 4;
      const uint8_t* qs = p + (FIVE ? 48 : 16);
      __m256i hA = _mm256_setzero_si256(), hB = _mm256_setzero_si256();
      if (FIVE) {
        hA = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(p + 16)));
        hB = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(p + 32)));
      }
      for (int j = 0; j < 4; j++) {
        const __m256i wA = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(qs + 32 * j)));
        const __m256i wB = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(qs + 32 * j + 16)));
        for (int half = 0; half < 2; half++) {
          const int sub = 2 * j + half;
          __m256i qA = half ? _mm256_srli_epi16(wA, 4) : _mm256_and_si256(wA, m4);
          __m256i qB = half ? _mm256_srli_epi16(wB, 4) : _mm256_and_si256(wB, m4);
          if (FIVE) {
            const __m128i shift = _mm_cvtsi32_si128(sub);
            const __m256i one = _mm256_set1_epi16(1);
            qA = _mm256_or_si256(qA, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(hA, shift), one), 4));
            qB = _mm256_or_si256(qB, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(hB, shift), one), 4));
          }
          int sc, mn;
          scale_min_k4(sub, scales, sc, mn);
          const ActBlock& x = ab[sub];
          acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)sc * x.d), _mm256_cvtepi32_ps(block_dot(qA, qB, x.q)), acc);
          side -= dmin * (float)mn * x.dsum;
        }
      }
    }
  }
  const float s = hsum(acc) + side;
  *y = add ? *y + s : s;
}

/** dequant_row for the 32-value types in registers, value for value the same (products and sums round alike). */
template <int T>
void dequant_row_simd(const uint8_t* w, float* dst, i64 K) {
  using B = Block<T>;
  for (i64 b = 0; b < K / 32; b++) {
    const uint8_t* p = w + b * B::BYTES;
    __m256i lo, hi;
    block_words<T>(p, lo, hi);
    if (B::OFF) lo = _mm256_sub_epi16(lo, _mm256_set1_epi16(B::OFF)), hi = _mm256_sub_epi16(hi, _mm256_set1_epi16(B::OFF));
    const __m256 d = _mm256_set1_ps(half_to_float(p));
    const __m256 m = _mm256_set1_ps(B::MIN ? half_to_float(p + 2) : 0.f);
    const __m256i parts[2] = {lo, hi};
    for (int h = 0; h < 2; h++)
      for (int q = 0; q < 2; q++) {
        const __m128i half = q ? _mm256_extracti128_si256(parts[h], 1) : _mm256_castsi256_si128(parts[h]);
        __m256 v = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(half)));
        if (B::MIN) v = _mm256_add_ps(v, m);
        _mm256_storeu_ps(dst + b * 32 + 16 * h + 8 * q, v);
      }
  }
}

}  // namespace

i64 quant_block_elems(int type) { return type <= 2 ? 1 : type <= 7 ? 32 : 256; }
i64 quant_block_bytes(int type) {
  static const i64 bytes[] = {0, 2, 2, 34, 18, 20, 22, 24, 144, 176, 210};
  return type >= 1 && type <= 10 ? bytes[type] : 0;
}

// no fused multiply-adds: every product and sum rounds as src/quant/formats.ts's dequantizeRow does
__attribute__((optimize("fp-contract=off"))) void dequant_row(int type, const uint8_t* src, float* dst, i64 K) {
  switch (type) {
    case 1:
      for (i64 i = 0; i < K; i++) {
        const uint32_t u = (uint32_t)(src[2 * i] | (src[2 * i + 1] << 8)) << 16;
        std::memcpy(dst + i, &u, 4);
      }
      return;
    case 2:
      for (i64 i = 0; i < K; i++) dst[i] = half_to_float(src + 2 * i);
      return;
    case 3:
    case 4:
    case 5:
    case 6:
    case 7: {
      const i64 bs = quant_block_bytes(type);
      for (i64 b = 0; b < K / 32; b++) {
        const uint8_t* p = src + b * bs;
        float* o = dst + b * 32;
        const float d = half_to_float(p);
        if (type == 3) {
          for (int j = 0; j < 32; j++) o[j] = d * (float)(int8_t)p[2 + j];
          continue;
        }
        const bool mn = type == 5 || type == 7;
        const float m = mn ? half_to_float(p + 2) : 0.f;
        uint32_t qh = 0;
        if (type >= 6) std::memcpy(&qh, p + (mn ? 4 : 2), 4);
        const uint8_t* qs = p + (type == 4 ? 2 : type == 5 ? 4 : type == 6 ? 6 : 8);
        const int off = type == 4 ? 8 : type == 6 ? 16 : 0;
        for (int j = 0; j < 16; j++) {
          int lo = qs[j] & 0xf, hi = qs[j] >> 4;
          if (type >= 6) lo |= ((qh >> j) & 1) << 4, hi |= ((qh >> (j + 16)) & 1) << 4;
          o[j] = mn ? d * (float)lo + m : d * (float)(lo - off);
          o[j + 16] = mn ? d * (float)hi + m : d * (float)(hi - off);
        }
      }
      return;
    }
    case 8:
    case 9: {
      const bool five = type == 9;
      const i64 bs = quant_block_bytes(type);
      for (i64 b = 0; b < K / 256; b++) {
        const uint8_t* p = src + b * bs;
        const float d = half_to_float(p), dmin = half_to_float(p + 2);
        const uint8_t* sc = p + 4;
        const uint8_t* qh = p + 16;
        const uint8_t* ql = p + (five ? 48 : 16);
        float* o = dst + b * 256;
        for (int j = 0; j < 4; j++, ql += 32, o += 64) {
          int s1, m1, s2, m2;
          scale_min_k4(2 * j, sc, s1, m1);
          scale_min_k4(2 * j + 1, sc, s2, m2);
          const float d1 = d * (float)s1, n1 = dmin * (float)m1, d2 = d * (float)s2, n2 = dmin * (float)m2;
          for (int l = 0; l < 32; l++) {
            const int h1 = five && (qh[l] & (1 << (2 * j))) ? 16 : 0;
            const int h2 = five && (qh[l] & (2 << (2 * j))) ? 16 : 0;
            o[l] = d1 * (float)((ql[l] & 0xf) + h1) - n1;
            o[l + 32] = d2 * (float)((ql[l] >> 4) + h2) - n2;
          }
        }
      }
      return;
    }
    case 10:
      for (i64 b = 0; b < K / 256; b++) {
        const uint8_t* p = src + b * 210;
        const float d = half_to_float(p + 208);
        for (int n = 0; n < 2; n++) {
          const uint8_t* ql = p + 64 * n;
          const uint8_t* qh = p + 128 + 32 * n;
          const int8_t* sc = (const int8_t*)(p + 192 + 8 * n);
          float* o = dst + b * 256 + 128 * n;
          for (int l = 0; l < 32; l++) {
            const int is = l >> 4;
            const int q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            o[l] = (d * (float)sc[is]) * (float)q1;
            o[l + 32] = (d * (float)sc[is + 2]) * (float)q2;
            o[l + 64] = (d * (float)sc[is + 4]) * (float)q3;
            o[l + 96] = (d * (float)sc[is + 6]) * (float)q4;
          }
        }
      }
      return;
  }
  throw KernelError("unknown weight type " + std::to_string(type));
}

namespace {

bool int_type(int t) { return t >= 3 && t <= 10; }  // every block type takes int16 activations

/** Rows [n0, n1) of product p, given its activation blocks (int8 types) for all M rows. */
/** Rows of a product from which the weights are decoded to float32 and multiplied by the float32 GEMM instead. */
constexpr i64 F32_ROWS = 32;

/** Rows [n0, n1) of a product with M ≥ F32_ROWS: weight rows decoded 64 at a time, then the packed float32 GEMM. */
void qgemm_rows_f32(const QGemmArgs& p, i64 n0, i64 n1) {
  const i64 rb = quant_block_bytes(p.type) * (p.K / quant_block_elems(p.type));
  constexpr i64 CH = 64;
  float* wf = scratch(4, (size_t)(CH * p.K));  // slots 4 and 5: the GEMM below packs into 0–2
  float* c = scratch(5, (size_t)(CH * p.M));
  for (i64 n = n0; n < n1; n += CH) {
    const i64 nc = std::min(CH, n1 - n);
    for (i64 r = 0; r < nc; r++) {
      const uint8_t* w = p.w + (n + r) * rb;
      float* o = wf + r * p.K;
      switch (p.type) {
        case 3: dequant_row_simd<3>(w, o, p.K); break;
        case 4: dequant_row_simd<4>(w, o, p.K); break;
        case 5: dequant_row_simd<5>(w, o, p.K); break;
        case 6: dequant_row_simd<6>(w, o, p.K); break;
        case 7: dequant_row_simd<7>(w, o, p.K); break;
        case 1:
        case 2:
          if (p.K % 8 == 0) {
            for (i64 k = 0; k < p.K; k += 8) _mm256_storeu_ps(o + k, p.type == 1 ? widen8<1>(w + 2 * k) : widen8<2>(w + 2 * k));
            break;
          }
          [[fallthrough]];
        default: dequant_row(p.type, w, o, p.K);
      }
    }
    // C [M, nc] = X [M, K] · Wcᵀ (B(k, j) = wf[j·K + k]), then into y's columns n … n + nc
    GemmArgs g{1, p.M, nc, p.K, p.x, 0, 0, p.K, 1, wf, 0, 0, 1, p.K, c, 0, 0, 1.f, 0.f};
    gemm(g);
    for (i64 m = 0; m < p.M; m++) {
      float* y = p.y + m * p.N + n;
      const float* cr = c + m * nc;
      if (p.beta) for (i64 j = 0; j < nc; j++) y[j] += cr[j];
      else std::memcpy(y, cr, (size_t)nc * sizeof(float));
    }
  }
}

void qgemm_rows(const QGemmArgs& p, const ActBlock* act, i64 n0, i64 n1) {
  if (p.M >= F32_ROWS) return qgemm_rows_f32(p, n0, n1);
  const i64 rb = quant_block_bytes(p.type) * (p.K / quant_block_elems(p.type));
  const i64 nb = p.K / 32;
  i64 n = n0;
  if (p.type >= 8) {
    // K-quants: one row walk per activation row (the row, ≤ 10 KB, stays in L1/L2 across them)
    for (; n < n1; n++) {
      const uint8_t* w = p.w + n * rb;
      for (i64 m = 0; m < p.M; m++) {
        float* y = p.y + m * p.N + n;
        const ActBlock* a = act + m * nb;
        if (p.type == 8) kq_row1<8>(w, a, p.K / 256, y, p.beta);
        else if (p.type == 9) kq_row1<9>(w, a, p.K / 256, y, p.beta);
        else kq_row1<10>(w, a, p.K / 256, y, p.beta);
      }
    }
    return;
  }
  if (p.M == 1 && int_type(p.type))
    for (; n < n1; n++) {
      const uint8_t* w = p.w + n * rb;
      switch (p.type) {
        case 3: int_row1<3>(w, act, nb, p.y + n, p.beta); break;
        case 4: int_row1<4>(w, act, nb, p.y + n, p.beta); break;
        case 5: int_row1<5>(w, act, nb, p.y + n, p.beta); break;
        case 6: int_row1<6>(w, act, nb, p.y + n, p.beta); break;
        default: int_row1<7>(w, act, nb, p.y + n, p.beta); break;
      }
    }
  for (; n < n1; n++) {
    const uint8_t* w = p.w + n * rb;
    for (i64 m0 = 0; m0 < p.M; m0 += MT) {
      const int mt = (int)std::min<i64>(MT, p.M - m0);
      float* y = p.y + m0 * p.N + n;
      if (int_type(p.type)) {
        const ActBlock* a[MT];
        for (int m = 0; m < mt; m++) a[m] = act + (m0 + m) * nb;
        switch (p.type) {
          case 3: int_rows<3, 1>(w, rb, a, mt, nb, y, p.N, p.beta); break;
          case 4: int_rows<4, 1>(w, rb, a, mt, nb, y, p.N, p.beta); break;
          case 5: int_rows<5, 1>(w, rb, a, mt, nb, y, p.N, p.beta); break;
          case 6: int_rows<6, 1>(w, rb, a, mt, nb, y, p.N, p.beta); break;
          default: int_rows<7, 1>(w, rb, a, mt, nb, y, p.N, p.beta); break;
        }
      } else {
        const float* x[MT];
        for (int m = 0; m < mt; m++) x[m] = p.x + (m0 + m) * p.K;
        if (p.type == 1) half_row<1>(w, x, mt, p.K, y, p.N, p.beta);
        else half_row<2>(w, x, mt, p.K, y, p.N, p.beta);
      }
    }
  }
}

}  // namespace

void qgemm_many(const QGemmArgs* ps, i64 count) {
  // activation blocks of every int8 product first (one pass, split over threads), then the weight rows
  std::vector<i64> actAt((size_t)count + 1, 0);
  double work = 0;
  auto quantized = [&](const QGemmArgs& p) { return int_type(p.type) && p.M < F32_ROWS; };
  for (i64 i = 0; i < count; i++) {
    actAt[i + 1] = actAt[i] + (quantized(ps[i]) ? ps[i].M * (ps[i].K / 32) : 0);
    work += 2.0 * (double)ps[i].M * (double)ps[i].N * (double)ps[i].K;
  }
  thread_local std::vector<ActBlock> act;
  if (act.size() < (size_t)actAt[count]) act.resize((size_t)actAt[count]);
  i64 rowsToQuantize = 0;
  for (i64 i = 0; i < count; i++) rowsToQuantize += quantized(ps[i]) ? ps[i].M : 0;
  if (rowsToQuantize) {
    std::vector<std::pair<i64, i64>> rows;  // (product, row)
    rows.reserve((size_t)rowsToQuantize);
    for (i64 i = 0; i < count; i++)
      if (quantized(ps[i]))
        for (i64 m = 0; m < ps[i].M; m++) rows.push_back({i, m});
    ActBlock* base = act.data();
    parallel_rows((i64)rows.size(), (double)rowsToQuantize * (double)ps[0].K * 8, true, [&](i64 r0, i64 r1) {
      for (i64 r = r0; r < r1; r++) {
        const QGemmArgs& p = ps[rows[r].first];
        quantize_act_row(p.x + rows[r].second * p.K, p.K, base + actAt[rows[r].first] + rows[r].second * (p.K / 32));
      }
    });
  }
  // tasks: pieces of ≥ 16 rows of every product, as many as keep the threads busy, taken dynamically
  const int nt = threads_for(work);
  struct Task {
    i64 item, n0, n1;
  };
  std::vector<Task> tasks;
  for (i64 i = 0; i < count; i++) {
    const QGemmArgs& p = ps[i];
    const double share = 2.0 * (double)p.M * (double)p.N * (double)p.K / std::max(work, 1.0);
    const i64 pieces = std::max<i64>(1, std::min<i64>((p.N + 15) / 16, (i64)std::ceil(share * nt * 4)));
    for (i64 c = 0; c < pieces; c++) tasks.push_back({i, p.N * c / pieces, p.N * (c + 1) / pieces});
  }
  const ActBlock* a0 = act.data();
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(dynamic, 1)
  for (i64 t = 0; t < (i64)tasks.size(); t++) {
    const Task& k = tasks[t];
    qgemm_rows(ps[k.item], a0 + actAt[k.item], k.n0, k.n1);
  }
}

namespace {

inline void put_half(uint8_t* p, float v) {
  const uint16_t h = _cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT);
  std::memcpy(p, &h, 2);
}

/** One row in `type` with ggml's reference quantizers (src/quant/formats.ts quantizeRow, byte for byte). */
__attribute__((optimize("fp-contract=off"))) void quantize_row(int type, const float* x, i64 K, uint8_t* dst) {
  if (type == 1 || type == 2) {
    for (i64 i = 0; i < K; i++) {
      uint16_t h;
      if (type == 2) h = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
      else {
        uint32_t u;
        std::memcpy(&u, x + i, 4);
        if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) h = (uint16_t)((u >> 16) | 0x0040);
        else h = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
      }
      std::memcpy(dst + 2 * i, &h, 2);
    }
    return;
  }
  const i64 bs = quant_block_bytes(type);
  for (i64 b = 0; b < K / 32; b++) {
    const float* v = x + b * 32;
    uint8_t* p = dst + b * bs;
    if (type == 3) {
      float amax = 0;
      for (int j = 0; j < 32; j++) amax = std::max(amax, std::fabs(v[j]));
      const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
      put_half(p, d);
      for (int j = 0; j < 32; j++) p[2 + j] = (uint8_t)(int8_t)std::roundf(v[j] * id);
    } else if (type == 4 || type == 6) {
      float amax = 0, mx = 0;
      for (int j = 0; j < 32; j++)
        if (std::fabs(v[j]) > amax) amax = std::fabs(v[j]), mx = v[j];
      const bool five = type == 6;
      const float d = mx / (five ? -16.f : -8.f), id = d != 0.f ? 1.f / d : 0.f;
      put_half(p, d);
      const int lim = five ? 31 : 15;
      const float bias = five ? 16.5f : 8.5f;
      uint8_t* qs = p + (five ? 6 : 2);
      uint32_t qh = 0;
      for (int j = 0; j < 16; j++) {
        const int a = std::min(lim, (int)std::trunc(v[j] * id + bias));
        const int c = std::min(lim, (int)std::trunc(v[j + 16] * id + bias));
        qs[j] = (uint8_t)((a & 0xf) | ((c & 0xf) << 4));
        qh |= (uint32_t)((a >> 4) & 1) << j;
        qh |= (uint32_t)((c >> 4) & 1) << (j + 16);
      }
      if (five) std::memcpy(p + 2, &qh, 4);
    } else {
      float mn = INFINITY, mx = -INFINITY;
      for (int j = 0; j < 32; j++) mn = std::min(mn, v[j]), mx = std::max(mx, v[j]);
      const bool five = type == 7;
      const float d = (mx - mn) / (five ? 31.f : 15.f), id = d != 0.f ? 1.f / d : 0.f;
      put_half(p, d);
      put_half(p + 2, mn);
      const int lim = five ? 31 : 15;
      uint8_t* qs = p + (five ? 8 : 4);
      uint32_t qh = 0;
      for (int j = 0; j < 16; j++) {
        const int a = std::min(lim, (int)std::trunc((v[j] - mn) * id + 0.5f));
        const int c = std::min(lim, (int)std::trunc((v[j + 16] - mn) * id + 0.5f));
        qs[j] = (uint8_t)((a & 0xf) | ((c & 0xf) << 4));
        qh |= (uint32_t)((a >> 4) & 1) << j;
        qh |= (uint32_t)((c >> 4) & 1) << (j + 16);
      }
      if (five) std::memcpy(p + 4, &qh, 4);
    }
  }
}

}  // namespace

void quantize_rows(int type, const float* x, uint8_t* out, i64 rows, i64 K) {
  const i64 rb = quant_block_bytes(type) * (K / quant_block_elems(type));
  parallel_rows(rows, (double)rows * (double)K * 8, true, [&](i64 r0, i64 r1) {
    for (i64 r = r0; r < r1; r++) quantize_row(type, x + r * K, K, out + r * rb);
  });
}

void dequant_rows(int type, const uint8_t* w, const int32_t* idx, float* out, i64 M, i64 N, i64 K) {
  const i64 rb = quant_block_bytes(type) * (K / quant_block_elems(type));
  for (i64 m = 0; m < M; m++)
    if (idx[m] < 0 || idx[m] >= N) throw KernelError("dequantRows: index " + std::to_string(idx[m]) + " outside [0, " + std::to_string(N) + ")");
  parallel_rows(M, (double)M * (double)K * 4, true, [&](i64 m0, i64 m1) {
    for (i64 m = m0; m < m1; m++) dequant_row(type, w + idx[m] * rb, out + m * K, K);
  });
}

}  // namespace dsv2
