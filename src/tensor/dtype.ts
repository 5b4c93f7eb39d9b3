// Storage is float32 (and int32 for indices) for everything that trains. Weights for inference may also stay in a
// stored type (bf16, f16, llama.cpp's block quantizations; src/quant/formats.ts): their tensors hold the raw bytes
// and only the products (linear, expert products, embedding lookup) read them.
import type { QuantType } from '../quant/formats.js';

export type DType = 'f32' | 'i32' | QuantType;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bf16 is the top 16 bits of an IEEE float32. */
export function bf16ToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  const out = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i]! << 16;
  return dst;
}

/** float32 -> bf16 with round-to-nearest-even; NaN stays NaN. */
export function f32ToBf16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) {
    f32[0] = src[i]!;
    const bits = u32[0]!;
    if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x007fffff) !== 0) {
      dst[i] = (bits >>> 16) | 0x0040; // quiet NaN
      continue;
    }
    const rounding = 0x7fff + ((bits >>> 16) & 1);
    dst[i] = ((bits + rounding) >>> 16) & 0xffff;
  }
  return dst;
}

/** One IEEE half (its 16 bits) as a number. */
function halfValue(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

let halfTable: Float32Array | null = null;

/** IEEE half -> float32 (subnormals, inf and NaN included), through a 64 K-entry table for long arrays. */
export function f16ToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  if (src.length <= 4096) {
    for (let i = 0; i < src.length; i++) dst[i] = halfValue(src[i]!);
    return dst;
  }
  const t = (halfTable ??= Float32Array.from({ length: 65536 }, (_, h) => halfValue(h)));
  for (let i = 0; i < src.length; i++) dst[i] = t[src[i]!]!;
  return dst;
}

/** float32 -> IEEE half, round to nearest even, overflow to inf. */
export function f32ToF16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) {
    f32[0] = src[i]!;
    const x = u32[0]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      dst[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    let e = exp - 127 + 15;
    if (e >= 31) {
      dst[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        dst[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      const half = 1 << (shift - 1);
      let m = mant >>> shift;
      const rest = mant & ((1 << shift) - 1);
      if (rest > half || (rest === half && m & 1)) m++;
      dst[i] = sign | m;
      continue;
    }
    let m = mant >>> 13;
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && m & 1)) {
      m++;
      if (m === 0x400) {
        m = 0;
        e++;
        if (e >= 31) {
          dst[i] = sign | 0x7c00;
          continue;
        }
      }
    }
    dst[i] = sign | (e << 10) | m;
  }
  return dst;
}
