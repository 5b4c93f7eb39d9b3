// Helpers shared by the kernels: the fused multiply-add (relaxed SIMD where the build enables it, else a multiply
// and an add, which rounds twice), parameter-block reads, horizontal sums and a vector exp.

/** a·b + c, four lanes. */
@inline
export function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

/** i32 slot i of a parameter block. */
@inline
export function PARAM(pb: usize, i: i32): i32 {
  return load<i32>(pb + (<usize>i << 2));
}

/** f32 slot i of a parameter block. */
@inline
export function PARAMF(pb: usize, i: i32): f32 {
  return load<f32>(pb + (<usize>i << 2));
}

@inline
export function hsum(v: v128): f32 {
  return f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1) + f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3);
}

@inline
export function hmax(v: v128): f32 {
  return max(max(f32x4.extract_lane(v, 0), f32x4.extract_lane(v, 1)), max(f32x4.extract_lane(v, 2), f32x4.extract_lane(v, 3)));
}

/** Σ x[i]·y[i] over n floats (contiguous), four lanes then a scalar tail. */
@inline
export function dot(x: usize, y: usize, n: i32): f32 {
  let s0 = f32x4.splat(0);
  let s1 = f32x4.splat(0);
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const o = <usize>i << 2;
    s0 = madd(v128.load(x + o), v128.load(y + o), s0);
    s1 = madd(v128.load(x + o, 16), v128.load(y + o, 16), s1);
  }
  let s = hsum(f32x4.add(s0, s1));
  for (; i < n; i++) s += load<f32>(x + (<usize>i << 2)) * load<f32>(y + (<usize>i << 2));
  return s;
}

/** Σ_d q[d]·k_i[d] for four rows k_i (`ks` bytes apart) at once: one vector of the four dot products. */
@inline
export function dot4(q: usize, k: usize, ks: usize, D: i32): v128 {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let d = 0;
  for (; d + 4 <= D; d += 4) {
    const o = <usize>d << 2;
    const qv = v128.load(q + o);
    a0 = madd(qv, v128.load(k + o), a0);
    a1 = madd(qv, v128.load(k + ks + o), a1);
    a2 = madd(qv, v128.load(k + 2 * ks + o), a2);
    a3 = madd(qv, v128.load(k + 3 * ks + o), a3);
  }
  // transpose-add: lane i of the result is the sum of a_i's lanes
  const t0 = f32x4.add(i32x4.shuffle(a0, a1, 0, 4, 1, 5), i32x4.shuffle(a0, a1, 2, 6, 3, 7));
  const t1 = f32x4.add(i32x4.shuffle(a2, a3, 0, 4, 1, 5), i32x4.shuffle(a2, a3, 2, 6, 3, 7));
  let r = f32x4.add(i32x4.shuffle(t0, t1, 0, 1, 4, 5), i32x4.shuffle(t0, t1, 2, 3, 6, 7));
  for (; d < D; d++) {
    const qd = load<f32>(q + (<usize>d << 2));
    const o = <usize>d << 2;
    r = f32x4.add(r, f32x4.mul(f32x4.splat(qd), f32x4(load<f32>(k + o), load<f32>(k + ks + o), load<f32>(k + 2 * ks + o), load<f32>(k + 3 * ks + o))));
  }
  return r;
}

/** y[i] += a·x[i] over n floats. */
@inline
export function axpy(a: f32, x: usize, y: usize, n: i32): void {
  const va = f32x4.splat(a);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(y + o, madd(va, v128.load(x + o), v128.load(y + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(y + o, load<f32>(y + o) + a * load<f32>(x + o));
  }
}

/**
 * e^x on four lanes: x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6 polynomial, 2^n by building the exponent
 * bits. Relative error below 2e-7 on [−87, 88]; below −87.3 the result is 0, above 88.7 it saturates (≈ 3.4e38).
 */
@inline
export function exp4(x: v128): v128 {
  const hi = f32x4.splat(88.72283);
  const lo = f32x4.splat(-87.33654);
  const isLow = f32x4.lt(x, lo);
  const xc = f32x4.min(f32x4.max(x, lo), hi);
  const n = f32x4.nearest(f32x4.mul(xc, f32x4.splat(1.44269504)));
  // r = x − n·ln2 in two steps (Cody–Waite) to keep r exact
  let r = f32x4.sub(xc, f32x4.mul(n, f32x4.splat(0.693145751953125)));
  r = f32x4.sub(r, f32x4.mul(n, f32x4.splat(1.428606765330187e-6)));
  let p = f32x4.splat(1.0 / 720.0);
  p = madd(p, r, f32x4.splat(1.0 / 120.0));
  p = madd(p, r, f32x4.splat(1.0 / 24.0));
  p = madd(p, r, f32x4.splat(1.0 / 6.0));
  p = madd(p, r, f32x4.splat(0.5));
  p = madd(p, r, f32x4.splat(1.0));
  p = madd(p, r, f32x4.splat(1.0));
  // 2^n: n + 127 into the exponent field; n ranges over [−126, 128], so split 2^n = 2^(n/2)·2^(n − n/2)
  const ni = i32x4.trunc_sat_f32x4_s(n);
  const n1 = i32x4.shr_s(ni, 1);
  const n2 = i32x4.sub(ni, n1);
  const s1 = i32x4.shl(i32x4.add(n1, i32x4.splat(127)), 23);
  const s2 = i32x4.shl(i32x4.add(n2, i32x4.splat(127)), 23);
  const y = f32x4.mul(f32x4.mul(p, s1), s2);
  return v128.andnot(y, isLow);
}

/** e^x for one float through the four-lane version (the same rounding as the vector loops). */
export function exp1(x: f32): f32 {
  return f32x4.extract_lane(exp4(f32x4.splat(x)), 0);
}
