// Reference products with stored (bf16, f16, quantized) weights: the semantics the native kernels reproduce.
// For the 32-element integer types (q8_0, q4_0, q4_1, q5_0, q5_1) the activations are quantized per 32-value block
// to int16 (d = max|x| / 32767, q = round-half-even(x / d)) and each block's dot product is an exact integer sum.
// llama.cpp quantizes activations to int8 instead; measured on the golden cases that alone moves q8_0 logits by up
// to 0.07 and changes greedy tokens, while int16 (relative error ≤ 1.5e-5 per value) keeps the product within float
// rounding of the decoded weights, and its integer dot (vpmaddwd) is still cheaper than widening to float32.
// K-quants take the same activation blocks (their 32-value sub-blocks line up with them); bf16 and f16 multiply
// float32 activations by the decoded weights. Products of F32_ROWS rows or more (prefill) decode the weights and
// multiply float32 activations, for every type.
import type { F32, I32, QGemmParams } from '../backend.js';
import {
  dequantizeRow,
  halfAt,
  QUANT_FORMATS,
  roundEven,
  rowBytes,
  scaleMinK4,
  usesIntActivations,
  type QuantType,
} from '../../quant/formats.js';

/** The scale of activation blocks: int16 values in [−32767, 32767]. */
export const ACT_MAX = 32767;

/** A row of K activations as int16 blocks: per block its scale d, its values q and their sum. */
export interface IntRow {
  d: Float32Array;
  sum: Int32Array;
  q: Int16Array;
}

export function quantizeActivations(x: F32, off: number, K: number): IntRow {
  const nb = K / 32;
  const r: IntRow = { d: new Float32Array(nb), sum: new Int32Array(nb), q: new Int16Array(K) };
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[off + b * 32 + j]!));
    const d = Math.fround(amax / ACT_MAX);
    const id = d ? Math.fround(1 / d) : 0;
    let s = 0;
    for (let j = 0; j < 32; j++) {
      const q = Math.max(-ACT_MAX, Math.min(ACT_MAX, roundEven(Math.fround(x[off + b * 32 + j]! * id))));
      r.q[b * 32 + j] = q;
      s += q;
    }
    r.d[b] = d;
    r.sum[b] = s;
  }
  return r;
}

/**
 * A K-quant row · an integer activation row: per 32-value sub-block s, d·sc_s·d_x·Σ q·q_x − dmin·m_s·d_x·Σ q_x
 * (q4_k, q5_k), or per super-block d·d_x·Σ_h sc_h·Σ (q − 32)·q_x over its 16-value halves (q6_k).
 */
function kquantDot(type: QuantType, w: Uint8Array, at: number, a: IntRow, K: number): number {
  const bs = QUANT_FORMATS[type].blockBytes;
  const q = a.q;
  let acc = 0;
  for (let sb = 0; sb < K / 256; sb++) {
    const p = at + sb * bs;
    const o = sb * 256;
    if (type === 'q6_k') {
      const d = halfAt(w, p + 208);
      for (let n = 0; n < 2; n++) {
        const ql = p + 64 * n;
        const qh = p + 128 + 32 * n;
        for (let t = 0; t < 4; t++) {
          let isum = 0;
          for (let l = 0; l < 32; l++) {
            const lo = t & 1 ? w[ql + 32 + l]! : w[ql + l]!;
            const nib = t >= 2 ? lo >> 4 : lo & 0xf;
            const v = (nib | (((w[qh + l]! >> (2 * t)) & 3) << 4)) - 32;
            const sc = (w[p + 192 + 8 * n + 2 * t + (l >> 4)]! << 24) >> 24;
            isum += sc * v * q[o + 128 * n + 32 * t + l]!;
          }
          acc += Math.fround(d * a.d[sb * 8 + 4 * n + t]!) * isum;
        }
      }
      continue;
    }
    const five = type === 'q5_k';
    const d = halfAt(w, p);
    const dmin = halfAt(w, p + 2);
    const qs = p + (five ? 48 : 16);
    for (let sub = 0; sub < 8; sub++) {
      const j = sub >> 1;
      const [sc, mn] = scaleMinK4(sub, w, p + 4);
      let isum = 0;
      for (let l = 0; l < 32; l++) {
        const byte = w[qs + 32 * j + l]!;
        let v = sub & 1 ? byte >> 4 : byte & 0xf;
        if (five && (w[p + 16 + l]! >> sub) & 1) v += 16;
        isum += v * q[o + 32 * sub + l]!;
      }
      const b = sb * 8 + sub;
      acc += Math.fround(Math.fround(d * sc) * a.d[b]!) * isum - Math.fround(dmin * mn) * Math.fround(a.d[b]! * a.sum[b]!);
    }
  }
  return acc;
}

/** Σ over the blocks of one stored row (at `at`) · one integer activation row. */
function intDot(type: QuantType, w: Uint8Array, at: number, a: IntRow, nb: number): number {
  if (type === 'q4_k' || type === 'q5_k' || type === 'q6_k') return kquantDot(type, w, at, a, nb * 32);
  const bs = QUANT_FORMATS[type].blockBytes;
  let acc = 0;
  for (let b = 0; b < nb; b++) {
    const p = at + b * bs;
    const q = a.q;
    const o = b * 32;
    const dw = halfAt(w, p);
    let isum = 0;
    let extra = 0; // the q4_1/q5_1 min term: m · d_x · Σ q_x
    if (type === 'q8_0') {
      for (let j = 0; j < 32; j++) isum += ((w[p + 2 + j]! << 24) >> 24) * q[o + j]!;
    } else if (type === 'q4_0' || type === 'q4_1') {
      const qs = p + (type === 'q4_1' ? 4 : 2);
      for (let j = 0; j < 16; j++) isum += (w[qs + j]! & 0xf) * q[o + j]! + (w[qs + j]! >> 4) * q[o + j + 16]!;
      if (type === 'q4_0') isum -= 8 * a.sum[b]!;
      else extra = Math.fround(Math.fround(halfAt(w, p + 2) * a.d[b]!) * a.sum[b]!);
    } else {
      const hp = p + (type === 'q5_1' ? 4 : 2);
      const qh = (w[hp]! | (w[hp + 1]! << 8) | (w[hp + 2]! << 16) | (w[hp + 3]! << 24)) >>> 0;
      const qs = hp + 4;
      for (let j = 0; j < 16; j++) {
        isum += ((w[qs + j]! & 0xf) | (((qh >>> j) & 1) << 4)) * q[o + j]!;
        isum += ((w[qs + j]! >> 4) | (((qh >>> (j + 16)) & 1) << 4)) * q[o + j + 16]!;
      }
      if (type === 'q5_0') isum -= 16 * a.sum[b]!;
      else extra = Math.fround(Math.fround(halfAt(w, p + 2) * a.d[b]!) * a.sum[b]!);
    }
    acc += Math.fround(dw * a.d[b]!) * isum + extra;
  }
  return acc;
}

/**
 * Rows of a product from which the weights are decoded to float32 and multiplied with float32 activations (a prefill
 * chunk, a large batch): there the decode costs little against the product, and the float32 GEMM is faster than the
 * integer kernels. Fewer rows (decode) take int16 activations.
 */
export const F32_ROWS = 32;

/** y [M, N] (+)= x [M, K] · Wᵀ with W [N, K] stored as p.type (QGemmParams). */
export function qgemm(p: QGemmParams): void {
  const { type, M, N, K, x, w, y } = p;
  const rb = rowBytes(type, K);
  if (w.length < N * rb) throw new Error(`qgemm: the ${type} weight holds ${w.length} bytes, needs ${N * rb}`);
  if (usesIntActivations(type) && M < F32_ROWS) {
    const nb = K / 32;
    for (let m = 0; m < M; m++) {
      const a = quantizeActivations(x, p.xOffset + m * K, K);
      const yr = p.yOffset + m * N;
      for (let n = 0; n < N; n++) {
        const s = intDot(type, w, n * rb, a, nb);
        y[yr + n] = p.beta === 0 ? s : y[yr + n]! + s;
      }
    }
    return;
  }
  const row = new Float32Array(K);
  const acc = new Float64Array(M);
  for (let n = 0; n < N; n++) {
    dequantizeRow(type, w, n * rb, row, 0, K);
    acc.fill(0);
    for (let m = 0; m < M; m++) {
      const xo = p.xOffset + m * K;
      let s = 0;
      for (let k = 0; k < K; k++) s += x[xo + k]! * row[k]!;
      acc[m] = s;
    }
    for (let m = 0; m < M; m++) {
      const at = p.yOffset + m * N + n;
      y[at] = p.beta === 0 ? acc[m]! : y[at]! + acc[m]!;
    }
  }
}

/** out [M, K] = the decoded rows idx[m] of W [N, K] stored as `type` (an embedding lookup). */
export function dequantRows(type: QuantType, w: Uint8Array, idx: I32, out: F32, M: number, N: number, K: number): void {
  const rb = rowBytes(type, K);
  for (let m = 0; m < M; m++) {
    const r = idx[m]!;
    if (!(r >= 0 && r < N)) throw new Error(`dequantRows: index ${r} outside [0, ${N})`);
    dequantizeRow(type, w, r * rb, out, m * K, K);
  }
}
