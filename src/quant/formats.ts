// Weight storage types beside float32: llama.cpp's (ggml's) block layouts byte for byte, so a GGUF tensor is used
// as it lies in the file. A row of K values is K / blockElems blocks of blockBytes bytes; a [out, in] weight is its
// rows one after another. This module is the reference that defines every type: how a block decodes
// (`dequantizeRow`) and how a float row is quantized (`quantizeRow`, ggml's reference quantizers; K-quants are
// decoded only, as files carry them). Little-endian throughout, as GGUF.
import { f16ToF32, f32ToBf16, f32ToF16 } from '../tensor/dtype.js';

/** A weight storage type other than float32. */
export type QuantType = 'bf16' | 'f16' | 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1' | 'q4_k' | 'q5_k' | 'q6_k';

export interface QuantFormat {
  /** GGML's type id (the number in a GGUF tensor info). */
  readonly ggml: number;
  /** Values per block (a row length must be a multiple). */
  readonly blockElems: number;
  readonly blockBytes: number;
  /** dsv2 quantize can write it (K-quants are read only). */
  readonly writable: boolean;
}

export const QUANT_FORMATS: Readonly<Record<QuantType, QuantFormat>> = {
  f16: { ggml: 1, blockElems: 1, blockBytes: 2, writable: true },
  q4_0: { ggml: 2, blockElems: 32, blockBytes: 18, writable: true },
  q4_1: { ggml: 3, blockElems: 32, blockBytes: 20, writable: true },
  q5_0: { ggml: 6, blockElems: 32, blockBytes: 22, writable: true },
  q5_1: { ggml: 7, blockElems: 32, blockBytes: 24, writable: true },
  q8_0: { ggml: 8, blockElems: 32, blockBytes: 34, writable: true },
  q4_k: { ggml: 12, blockElems: 256, blockBytes: 144, writable: false },
  q5_k: { ggml: 13, blockElems: 256, blockBytes: 176, writable: false },
  q6_k: { ggml: 14, blockElems: 256, blockBytes: 210, writable: false },
  bf16: { ggml: 30, blockElems: 1, blockBytes: 2, writable: true },
};

export const QUANT_TYPES = Object.keys(QUANT_FORMATS) as QuantType[];

/** Small integer codes the native kernels switch on (stable: the addon has the same table). */
export const QUANT_CODE: Readonly<Record<QuantType, number>> = {
  bf16: 1,
  f16: 2,
  q8_0: 3,
  q4_0: 4,
  q4_1: 5,
  q5_0: 6,
  q5_1: 7,
  q4_k: 8,
  q5_k: 9,
  q6_k: 10,
};

export function isQuantType(t: string): t is QuantType {
  return Object.prototype.hasOwnProperty.call(QUANT_FORMATS, t);
}

/** Bytes of one row of K values, or an error naming the type when K is not a multiple of its block. */
export function rowBytes(type: QuantType, K: number): number {
  const f = QUANT_FORMATS[type];
  if (K % f.blockElems !== 0) throw new Error(`${type} needs rows of a multiple of ${f.blockElems} values, got ${K}`);
  return (K / f.blockElems) * f.blockBytes;
}

/** Whether rows of K values can be stored as `type`. */
export function fitsRow(type: QuantType, K: number): boolean {
  return K % QUANT_FORMATS[type].blockElems === 0;
}

const h16 = new Uint16Array(1);
const hf = new Float32Array(1);
/** The IEEE half stored little-endian at b[at], as a number. */
export function halfAt(b: Uint8Array, at: number): number {
  h16[0] = b[at]! | (b[at + 1]! << 8);
  return f16ToF32(h16, hf)[0]!;
}
function putHalf(b: Uint8Array, at: number, v: number): void {
  hf[0] = v;
  const h = f32ToF16(hf, h16)[0]!;
  b[at] = h & 0xff;
  b[at + 1] = h >>> 8;
}

/** Q4_K / Q5_K: the 6-bit scale and min of sub-block j (ggml's get_scale_min_k4). */
export function scaleMinK4(j: number, q: Uint8Array, at: number): [number, number] {
  if (j < 4) return [q[at + j]! & 63, q[at + j + 4]! & 63];
  return [(q[at + j + 4]! & 0xf) | ((q[at + j - 4]! >> 6) << 4), (q[at + j + 4]! >> 4) | ((q[at + j]! >> 6) << 4)];
}

/** Decode one row of K values stored at src[at …] into dst[dOff …]. */
export function dequantizeRow(type: QuantType, src: Uint8Array, at: number, dst: Float32Array, dOff: number, K: number): void {
  const nb = K / QUANT_FORMATS[type].blockElems;
  const bs = QUANT_FORMATS[type].blockBytes;
  const f32 = Math.fround;
  switch (type) {
    case 'bf16': {
      const u = new Uint32Array(1);
      const f = new Float32Array(u.buffer);
      for (let i = 0; i < K; i++) {
        u[0] = (src[at + 2 * i]! | (src[at + 2 * i + 1]! << 8)) << 16;
        dst[dOff + i] = f[0]!;
      }
      return;
    }
    case 'f16':
      for (let i = 0; i < K; i++) dst[dOff + i] = halfAt(src, at + 2 * i);
      return;
    case 'q8_0':
      for (let b = 0; b < nb; b++) {
        const p = at + b * bs;
        const d = halfAt(src, p);
        for (let j = 0; j < 32; j++) dst[dOff + b * 32 + j] = f32(d * ((src[p + 2 + j]! << 24) >> 24));
      }
      return;
    case 'q4_0':
    case 'q4_1':
    case 'q5_0':
    case 'q5_1': {
      // d (f16), [m (f16)], [qh: the 5th bits, u32], 16 bytes of nibbles: low ones are values 0–15, high ones 16–31
      const hasMin = type === 'q4_1' || type === 'q5_1';
      const five = type === 'q5_0' || type === 'q5_1';
      const off = hasMin ? 0 : five ? 16 : 8;
      for (let b = 0; b < nb; b++) {
        const p = at + b * bs;
        const d = halfAt(src, p);
        const m = hasMin ? halfAt(src, p + 2) : 0;
        const hp = p + (hasMin ? 4 : 2);
        const qh = five ? (src[hp]! | (src[hp + 1]! << 8) | (src[hp + 2]! << 16) | (src[hp + 3]! << 24)) >>> 0 : 0;
        const qs = hp + (five ? 4 : 0);
        const o = dOff + b * 32;
        for (let j = 0; j < 16; j++) {
          const lo = (src[qs + j]! & 0xf) | (((qh >>> j) & 1) << 4);
          const hi = (src[qs + j]! >> 4) | (((qh >>> (j + 16)) & 1) << 4);
          dst[o + j] = hasMin ? f32(f32(d * lo) + m) : f32(d * (lo - off));
          dst[o + j + 16] = hasMin ? f32(f32(d * hi) + m) : f32(d * (hi - off));
        }
      }
      return;
    }
    case 'q4_k':
    case 'q5_k': {
      const five = type === 'q5_k';
      for (let b = 0; b < nb; b++) {
        const p = at + b * bs;
        const d = halfAt(src, p);
        const dmin = halfAt(src, p + 2);
        const sc = p + 4;
        const qh = p + 16; // q5_k: 32 bytes of high bits
        let ql = five ? p + 48 : p + 16;
        let o = dOff + b * 256;
        for (let j = 0; j < 4; j++) {
          const [s1, m1] = scaleMinK4(2 * j, src, sc);
          const [s2, m2] = scaleMinK4(2 * j + 1, src, sc);
          const d1 = f32(d * s1);
          const n1 = f32(dmin * m1);
          const d2 = f32(d * s2);
          const n2 = f32(dmin * m2);
          for (let l = 0; l < 32; l++) {
            const h1 = five && src[qh + l]! & (1 << (2 * j)) ? 16 : 0;
            const h2 = five && src[qh + l]! & (2 << (2 * j)) ? 16 : 0;
            dst[o + l] = f32(f32(d1 * ((src[ql + l]! & 0xf) + h1)) - n1);
            dst[o + l + 32] = f32(f32(d2 * ((src[ql + l]! >> 4) + h2)) - n2);
          }
          ql += 32;
          o += 64;
        }
      }
      return;
    }
    case 'q6_k':
      for (let b = 0; b < nb; b++) {
        const p = at + b * bs;
        const d = halfAt(src, p + 208);
        for (let n = 0; n < 2; n++) {
          const ql = p + 64 * n;
          const qh = p + 128 + 32 * n;
          const sc = p + 192 + 8 * n;
          const o = dOff + b * 256 + 128 * n;
          for (let l = 0; l < 32; l++) {
            const is = l >> 4;
            const h = src[qh + l]!;
            const q1 = ((src[ql + l]! & 0xf) | ((h & 3) << 4)) - 32;
            const q2 = ((src[ql + l + 32]! & 0xf) | (((h >> 2) & 3) << 4)) - 32;
            const q3 = ((src[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32;
            const q4 = ((src[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32;
            const s = (k: number): number => (src[sc + is + k]! << 24) >> 24;
            dst[o + l] = f32(f32(d * s(0)) * q1);
            dst[o + l + 32] = f32(f32(d * s(2)) * q2);
            dst[o + l + 64] = f32(f32(d * s(4)) * q3);
            dst[o + l + 96] = f32(f32(d * s(6)) * q4);
          }
        }
      }
      return;
  }
}

/** Round half to even, as the native kernels' conversions (cvtps2dq) do. */
export function roundEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** C's roundf: half away from zero (ggml's reference quantizers use it). */
function roundAway(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

/**
 * A 32-value block's codes q(x) (0–15, or 0–31) into 16 nibble bytes at `qs` (values 0–15 in the low nibbles, 16–31
 * in the high ones) and, when `qhAt` ≥ 0, their 5th bits as a little-endian u32 at `qhAt` (bit i: value i).
 */
function packCodes(q: (v: number) => number, x: Float32Array, o: number, dst: Uint8Array, qs: number, qhAt: number): void {
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const a = q(x[o + j]!);
    const c = q(x[o + j + 16]!);
    dst[qs + j] = (a & 0xf) | ((c & 0xf) << 4);
    qh |= ((a >> 4) & 1) << j;
    qh |= ((c >> 4) & 1) << (j + 16);
  }
  if (qhAt >= 0) for (let k = 0; k < 4; k++) dst[qhAt + k] = (qh >>> (8 * k)) & 0xff;
}

/** Quantize one row of K floats into dst[at …] with ggml's reference quantizer for `type`. */
export function quantizeRow(type: QuantType, x: Float32Array, xOff: number, K: number, dst: Uint8Array, at: number): void {
  const f = QUANT_FORMATS[type];
  if (!f.writable) throw new Error(`${type} can be read but not written; write q8_0, q4_0, q4_1, q5_0, q5_1, bf16 or f16`);
  const nb = K / f.blockElems;
  const f32 = Math.fround;
  if (type === 'bf16' || type === 'f16') {
    const h = (type === 'bf16' ? f32ToBf16 : f32ToF16)(x.subarray(xOff, xOff + K));
    for (let i = 0; i < K; i++) {
      dst[at + 2 * i] = h[i]! & 0xff;
      dst[at + 2 * i + 1] = h[i]! >>> 8;
    }
    return;
  }
  for (let b = 0; b < nb; b++) {
    const p = at + b * f.blockBytes;
    const o = xOff + b * 32;
    if (type === 'q8_0') {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[o + j]!));
      const d = f32(amax / 127);
      const id = d ? f32(1 / d) : 0;
      putHalf(dst, p, d);
      for (let j = 0; j < 32; j++) dst[p + 2 + j] = roundAway(f32(x[o + j]! * id)) & 0xff;
    } else if (type === 'q4_0' || type === 'q5_0') {
      // the value of largest magnitude, sign kept, maps to −8 (−16): d = max / −8
      let amax = 0;
      let max = 0;
      for (let j = 0; j < 32; j++) {
        const v = x[o + j]!;
        if (Math.abs(v) > amax) [amax, max] = [Math.abs(v), v];
      }
      const five = type === 'q5_0';
      const d = f32(max / (five ? -16 : -8));
      const id = d ? f32(1 / d) : 0;
      putHalf(dst, p, d);
      const lim = five ? 31 : 15;
      const bias = five ? 16.5 : 8.5;
      const q = (v: number): number => Math.min(lim, Math.trunc(f32(f32(v * id) + bias)));
      packCodes(q, x, o, dst, p + (five ? 6 : 2), five ? p + 2 : -1);
    } else {
      // q4_1 / q5_1: x ≈ d·q + min
      let min = Infinity;
      let max = -Infinity;
      for (let j = 0; j < 32; j++) {
        min = Math.min(min, x[o + j]!);
        max = Math.max(max, x[o + j]!);
      }
      const five = type === 'q5_1';
      const d = f32((max - min) / (five ? 31 : 15));
      const id = d ? f32(1 / d) : 0;
      putHalf(dst, p, d);
      putHalf(dst, p + 2, min);
      const lim = five ? 31 : 15;
      const q = (v: number): number => Math.min(lim, Math.trunc(f32(f32(f32(v - min) * id) + 0.5)));
      packCodes(q, x, o, dst, p + (five ? 8 : 4), five ? p + 4 : -1);
    }
  }
}

/** Quantize a [rows, K] float matrix into a new byte array. */
export function quantize(type: QuantType, x: Float32Array, rows: number, K: number): Uint8Array {
  const rb = rowBytes(type, K);
  const out = new Uint8Array(rows * rb);
  for (let r = 0; r < rows; r++) quantizeRow(type, x, r * K, K, out, r * rb);
  return out;
}

/** Decode a [rows, K] stored matrix into float32. */
export function dequantize(type: QuantType, src: Uint8Array, rows: number, K: number): Float32Array {
  const rb = rowBytes(type, K);
  const out = new Float32Array(rows * K);
  for (let r = 0; r < rows; r++) dequantizeRow(type, src, r * rb, out, r * K, K);
  return out;
}

/**
 * Types whose products quantize the activations to int16 per 32-value block on the fly and take exact integer dot
 * products (src/backend/ts/quant.ts): every block type, K-quants included (their 32-value sub-blocks line up with
 * the activation blocks). bf16 and f16 multiply float32 activations.
 */
export function usesIntActivations(type: QuantType): boolean {
  return type !== 'bf16' && type !== 'f16';
}
