// Attention forward and backward (flash-attention style: only the row log-sum-exp is saved; the backward
// recomputes the probabilities from it; see src/backend/ts/attention.ts for the equations). Blocks of query rows
// go through the GEMM micro-kernel (gemm.cc) against keys and values packed once per (b, kv head), so every
// loaded key or value vector feeds six rows' FMAs instead of one. The other operand of each product (query rows,
// dO rows, probability and dS rows or columns) is read in place (micro_6x16_direct), never packed.
#include <algorithm>

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

inline i64 visible(const AttentionArgs& p, i64 t) { return p.causal ? std::min(p.S, p.S - p.T + t + 1) : p.S; }

const float* row_mask(const AttentionArgs& p, i64 b, i64 t) { return p.mask ? p.mask + ((p.maskBatch == 1 ? 0 : b) * p.T + t) * p.S : nullptr; }


constexpr int MR = GEMM_MR;
constexpr int NR = GEMM_NR;

inline i64 panels(i64 n) { return (n + NR - 1) / NR; }
inline i64 up16(i64 n) { return (n + 15) / 16 * 16; }

/** B = Xᵀ for X [rows, D] with row stride `stride` (B(k=d, n=j) = X[j, d]): NR-key panels of D×NR each, zero-padded. */
void pack_xt(const float* X, i64 stride, i64 rows, i64 D, float* dst) {
  for (i64 jp = 0; jp < panels(rows); jp++) pack_rows_transposed(X + jp * NR * stride, stride, (int)std::min<i64>(NR, rows - jp * NR), D, dst + jp * D * NR);
}

/** B = X for X [rows, D] with row stride ld (B(k=j, n=d) = X[j, d]): NR-column panels of rows×NR each, zero-padded. */
void pack_x(const float* X, i64 ld, i64 rows, i64 D, float* dst) {
  for (i64 dp = 0; dp < panels(D); dp++) {
    float* d = dst + dp * rows * NR;
    const int cols = (int)std::min<i64>(NR, D - dp * NR);
    for (i64 k = 0; k < rows; k++) {
      const float* s = X + k * ld + dp * NR;
      if (cols == NR) {
        _mm256_store_ps(d + k * NR, _mm256_loadu_ps(s));
        _mm256_store_ps(d + k * NR + 8, _mm256_loadu_ps(s + 8));
      } else {
        int j = 0;
        for (; j < cols; j++) d[k * NR + j] = s[j];
        for (; j < NR; j++) d[k * NR + j] = 0.f;
      }
    }
  }
}

/** Carves 64-byte-aligned pieces out of one per-thread scratch block. */
struct Carve {
  float* p;
  float* take(i64 n) {
    float* r = p;
    p += up16(n);
    return r;
  }
};

}  // namespace

// Forward, blocks of MR query rows against all their visible keys, every product on the GEMM micro-kernel:
// S = (scale·Q_blk)·Kᵀ, softmax per row in place (fp32), O_blk = P·V / Σ. Keys and values of the current
// (b, kv head) are packed once into micro-panels. Threads take one (b, h) at a time as they finish. Rows are found
// through each operand's (batch, head, row) strides, so token-major [B,T,H,D] operands need no permute copy.
void attention(const AttentionArgs& p, float* out, float* lse) {
  const i64 TB = (p.T + MR - 1) / MR, items = p.B * p.H * TB;
  const i64 ldS = panels(p.S) * NR, ldO = panels(p.Dv) * NR;
  const double work = (double)p.B * p.H * p.T * p.S * (p.Dk + p.Dv) * (p.causal ? 1 : 2);
  parallel_chunks(items, TB, work, [&](i64 i0, i64 i1) {  // one (b, h) at a time: its K and V packed once
    const i64 need = up16(ldS * p.Dk) + up16(ldO * p.S) + up16(MR * ldS) + up16(MR * ldO);
    Carve cv{scratch(0, (size_t)need)};
    float *Kp = cv.take(ldS * p.Dk), *Vp = cv.take(ldO * p.S), *Sb = cv.take(MR * ldS), *Ob = cv.take(MR * ldO);
    i64 have = -1;
    for (i64 it = i0; it < i1; it++) {
      const i64 tb = it % TB, bh = it / TB, h = bh % p.H, b = bh / p.H;
      const i64 g = b * p.Hkv + h / (p.H / p.Hkv);
      if (g != have) {
        const i64 kvh = g % p.Hkv;
        pack_xt(p.k + row_at(p.ks, b, kvh, 0), p.ks[2], p.S, p.Dk, Kp);
        pack_x(p.v + row_at(p.vs, b, kvh, 0), p.vs[2], p.S, p.Dv, Vp);
        have = g;
      }
      const i64 t0 = tb * MR;
      const int rows = (int)std::min<i64>(MR, p.T - t0);
      const i64 n = visible(p, t0 + rows - 1);  // keys the last (widest) row of the block sees
      const i64 r0 = bh * p.T + t0;  // lse is dense [B, H, T]
      // S = Q_blk·Kᵀ with Q read in place (the scale is applied in the softmax pass)
      const float* qb = p.q + row_at(p.qs, b, h, t0);
      direct_panels<true>(p.Dk, qb, p.qs[2], 1, Kp, p.Dk * NR, panels(n) * NR, Sb, ldS, rows, 0.f);
      float inv[MR] = {0, 0, 0, 0, 0, 0};
      for (int r = 0; r < MR; r++) {
        float* row = Sb + r * ldS;
        const i64 nr = r < rows ? visible(p, t0 + r) : 0;
        const float* mask = r < rows ? row_mask(p, b, t0 + r) : nullptr;
        float sc = p.scale;  // scores are scale·(q·k) (+ mask)
        if (mask) {
          for (i64 j = 0; j < nr; j++) row[j] = row[j] * p.scale + mask[j];
          sc = 1.f;
        }
        const __m256 scv = _mm256_set1_ps(sc);
        __m256 mv = _mm256_set1_ps(-INFINITY);
        for (i64 j = 0; j < nr; j += 8) {  // NaN scores are skipped, as a scalar `s > mx ? s : mx` would
          const i64 l = std::min<i64>(8, nr - j);
          const __m256 v = _mm256_mul_ps(ld(row, j, l), scv);
          mv = _mm256_max_ps(l == 8 ? v : _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), v, _mm256_castsi256_ps(tail_mask(l))), mv);
        }
        const float mx = hmax(mv);
        if (mx == -INFINITY) {  // no visible key (or a padding row of the block): output 0, lse −inf
          std::memset(row, 0, sizeof(float) * n);
          if (r < rows) lse[r0 + r] = -INFINITY;
          continue;
        }
        __m256 acc = _mm256_setzero_ps();  // eight partial sums of terms in [0, 1], finished in double
        for (i64 j = 0; j < nr; j += 8) {
          const i64 l = std::min<i64>(8, nr - j);
          __m256 e = exp256(_mm256_fmsub_ps(ld(row, j, l), scv, _mm256_set1_ps(mx)));
          if (l < 8) e = _mm256_and_ps(e, _mm256_castsi256_ps(tail_mask(l)));
          st(row, j, l, e);
          acc = _mm256_add_ps(acc, e);
        }
        alignas(32) float part[8];
        _mm256_store_ps(part, acc);
        double sum = 0;
        for (float v : part) sum += v;
        for (i64 j = nr; j < n; j++) row[j] = 0.f;
        inv[r] = (float)(1.0 / sum);
        lse[r0 + r] = (float)(mx + std::log(sum));
      }
      direct_panels<true>(n, Sb, ldS, 1, Vp, p.S * NR, panels(p.Dv) * NR, Ob, ldO, MR, 0.f);
      for (int r = 0; r < rows; r++) {
        float* o = out + row_at(p.os, b, h, t0 + r);
        for (i64 d = 0; d < p.Dv; d++) o[d] = Ob[r * ldO + d] * inv[r];
      }
    }
  });
}

// Backward per (b, kv head) group, so each thread owns the dK/dV rows it accumulates. For each head of the group,
// chunks of query rows: P = exp(S − lse) and dS = P ⊙ (dO·Vᵀ − rowsum(dO ⊙ O)) · scale are built block by block
// (dQ_blk = dS_blk·K right away), then the chunk adds dK += dSᵀ·Q and dV += Pᵀ·dO, skipping the causal zeros a
// block of keys cannot see. All products run on the GEMM micro-kernel.
void attention_backward(const AttentionArgs& p, const float* out, const float* lse, const float* dout, float* dq, float* dk, float* dv) {
  const i64 groups = p.B * p.Hkv, per = p.H / p.Hkv;
  const i64 TQ = 16 * MR;  // query rows per chunk
  const i64 ldS = panels(p.S) * NR, nDk = panels(p.Dk), nDv = panels(p.Dv);
  const double work = (double)p.B * p.H * p.T * p.S * (p.Dk + p.Dv) * (p.causal ? 2 : 4);
  parallel_chunks(groups, 1, work, [&](i64 g0, i64 g1) {
    const i64 need = up16(ldS * p.Dk) + up16(ldS * p.Dv) + up16(nDk * NR * p.S) + up16(nDk * NR * p.T) + up16(nDv * NR * p.T) +
                     2 * up16(TQ * ldS);
    Carve cv{scratch(0, (size_t)need)};
    float *Kt = cv.take(ldS * p.Dk), *Vt = cv.take(ldS * p.Dv), *Kn = cv.take(nDk * NR * p.S), *Qp = cv.take(nDk * NR * p.T);
    float *dOp = cv.take(nDv * NR * p.T), *Pb = cv.take(TQ * ldS), *dSb = cv.take(TQ * ldS);
    for (i64 g = g0; g < g1; g++) {
      const i64 b = g / p.Hkv, kvh = g % p.Hkv;
      const float* k = p.k + row_at(p.ks, b, kvh, 0);
      const float* v = p.v + row_at(p.vs, b, kvh, 0);
      const i64 ldk = p.ks[2], ldv = p.vs[2], lddk = p.dks[2], lddv = p.dvs[2];
      pack_xt(k, ldk, p.S, p.Dk, Kt);  // S = Q·Kᵀ
      pack_xt(v, ldv, p.S, p.Dv, Vt);  // dP = dO·Vᵀ
      pack_x(k, ldk, p.S, p.Dk, Kn);   // dQ = dS·K
      float* dkg = dk + row_at(p.dks, b, kvh, 0);
      float* dvg = dv + row_at(p.dvs, b, kvh, 0);
      for (i64 j = 0; j < p.S; j++) {  // this group's dK and dV rows are this thread's alone
        std::memset(dkg + j * lddk, 0, sizeof(float) * p.Dk);
        std::memset(dvg + j * lddv, 0, sizeof(float) * p.Dv);
      }
      for (i64 h = kvh * per; h < (kvh + 1) * per; h++) {
        const i64 base = (b * p.H + h) * p.T;  // lse is dense [B, H, T]
        const float* qh = p.q + row_at(p.qs, b, h, 0);
        const float* oh = out + row_at(p.os, b, h, 0);
        const float* doh = dout + row_at(p.dos, b, h, 0);
        float* dqh = dq + row_at(p.dqs, b, h, 0);
        const i64 ldq = p.qs[2], ldo = p.os[2], lddo = p.dos[2], lddq = p.dqs[2];
        pack_x(qh, ldq, p.T, p.Dk, Qp);      // dK += dSᵀ·Q
        pack_x(doh, lddo, p.T, p.Dv, dOp);  // dV += Pᵀ·dO
        for (i64 c0 = 0; c0 < p.T; c0 += TQ) {
          const i64 c1 = std::min(p.T, c0 + TQ), nc = visible(p, c1 - 1);
          for (i64 t0 = c0; t0 < c1; t0 += MR) {
            const int rows = (int)std::min<i64>(MR, c1 - t0);
            const i64 n = visible(p, t0 + rows - 1);
            float* P = Pb + (t0 - c0) * ldS;
            float* dS = dSb + (t0 - c0) * ldS;
            // q·k (scaled in the exp pass) and dP = dO·Vᵀ, the query-side rows read in place
            direct_panels<true>(p.Dk, qh + t0 * ldq, ldq, 1, Kt, p.Dk * NR, panels(n) * NR, P, ldS, rows, 0.f);
            direct_panels<true>(p.Dv, doh + t0 * lddo, lddo, 1, Vt, p.Dv * NR, panels(n) * NR, dS, ldS, rows, 0.f);
            for (int r = 0; r < rows; r++) {
              const i64 t = t0 + r, lo = base + t;
              float* pr = P + r * ldS;
              float* dr = dS + r * ldS;
              const float l = lse[lo];
              const i64 nr = l == -INFINITY ? 0 : visible(p, t);
              const float* mask = row_mask(p, b, t);
              const __m256 lv = _mm256_set1_ps(l), dod = _mm256_set1_ps(dot(doh + t * lddo, oh + t * ldo, p.Dv)), sc = _mm256_set1_ps(p.scale);
              for (i64 j = 0; j < nr; j += 8) {  // p_j = exp(s_j − lse); ds_j = p_j·(dp_j − do·o)·scale
                const i64 w = std::min<i64>(8, nr - j);
                __m256 s = _mm256_mul_ps(ld(pr, j, w), sc);
                if (mask) s = _mm256_add_ps(s, ld(mask, j, w));
                const __m256 pj = exp256(_mm256_sub_ps(s, lv));
                st(pr, j, w, pj);
                st(dr, j, w, _mm256_mul_ps(_mm256_mul_ps(pj, _mm256_sub_ps(ld(dr, j, w), dod)), sc));
              }
              for (i64 j = nr; j < nc; j++) pr[j] = dr[j] = 0.f;  // invisible keys contribute nothing
            }
            direct_panels<true>(n, dS, ldS, 1, Kn, p.S * NR, p.Dk, dqh + t0 * lddq, lddq, rows, 0.f);
          }
          // this chunk's share of dK and dV, MR keys at a time, from the first query row that sees them
          for (i64 j0 = 0; j0 < nc; j0 += MR) {
            const int cols = (int)std::min<i64>(MR, nc - j0);
            const i64 ts = p.causal ? std::max(c0, j0 - (p.S - p.T)) : c0;
            if (ts >= c1) continue;
            // dSᵀ and Pᵀ read in place: for each query row the block's keys are adjacent
            const float* dSt = dSb + (ts - c0) * ldS + j0;
            const float* Pt = Pb + (ts - c0) * ldS + j0;
            direct_panels<false>(c1 - ts, dSt, 1, ldS, Qp + ts * NR, p.T * NR, p.Dk, dkg + j0 * lddk, lddk, cols, 1.f);
            direct_panels<false>(c1 - ts, Pt, 1, ldS, dOp + ts * NR, p.T * NR, p.Dv, dvg + j0 * lddv, lddv, cols, 1.f);
          }
        }
      }
    }
  });
}

}  // namespace dsv2
