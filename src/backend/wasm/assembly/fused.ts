// Row kernels with SIMD128: RMSNorm, softmax / log-softmax, SwiGLU, cross-entropy, RoPE, AdamW and Σx². The
// reference (src/backend/ts/fused.ts) accumulates in double; these accumulate four float lanes, as the native
// kernels do, and meet it within the backend-parity tolerances.
import { axpy, dot, exp1, exp4, hmax, hsum, madd } from './common';

@inline
function at(p: usize, i: i32): usize {
  return p + (<usize>i << 2);
}

function sumSquares(x: usize, n: i32): f32 {
  return dot(x, x, n);
}

export function rmsnorm(x: usize, w: usize, y: usize, rstd: usize, R: i32, D: i32, eps: f32): void {
  for (let r = 0; r < R; r++) {
    const xr = at(x, r * D);
    const yr = at(y, r * D);
    const s: f32 = <f32>(1.0 / Math.sqrt(<f64>sumSquares(xr, D) / D + eps));
    store<f32>(at(rstd, r), s);
    const vs = f32x4.splat(s);
    let i = 0;
    for (; i + 4 <= D; i += 4) v128.store(at(yr, i), f32x4.mul(f32x4.mul(v128.load(at(xr, i)), vs), v128.load(at(w, i))));
    for (; i < D; i++) store<f32>(at(yr, i), load<f32>(at(xr, i)) * s * load<f32>(at(w, i)));
  }
}

// dw_i += dy_i·x_i·s;  dx_i = s·dy_i·w_i − s³/D · x_i · Σ_j dy_j·w_j·x_j
export function rmsnormBackward(x: usize, w: usize, rstd: usize, dy: usize, dx: usize, dw: usize, R: i32, D: i32): void {
  for (let r = 0; r < R; r++) {
    const xr = at(x, r * D);
    const dyr = at(dy, r * D);
    const dxr = at(dx, r * D);
    const s = load<f32>(at(rstd, r));
    const vs = f32x4.splat(s);
    let acc = f32x4.splat(0);
    let i = 0;
    for (; i + 4 <= D; i += 4) {
      const xv = v128.load(at(xr, i));
      const g = v128.load(at(dyr, i));
      acc = madd(f32x4.mul(g, v128.load(at(w, i))), xv, acc);
      v128.store(at(dw, i), madd(f32x4.mul(g, xv), vs, v128.load(at(dw, i))));
    }
    let sdot = hsum(acc);
    for (; i < D; i++) {
      const g = load<f32>(at(dyr, i));
      const xv = load<f32>(at(xr, i));
      sdot += g * load<f32>(at(w, i)) * xv;
      store<f32>(at(dw, i), load<f32>(at(dw, i)) + g * xv * s);
    }
    const k: f32 = (s * s * s * sdot) / <f32>D;
    const vk = f32x4.splat(k);
    i = 0;
    for (; i + 4 <= D; i += 4) {
      const v = f32x4.sub(f32x4.mul(f32x4.mul(v128.load(at(dyr, i)), v128.load(at(w, i))), vs), f32x4.mul(vk, v128.load(at(xr, i))));
      v128.store(at(dxr, i), v);
    }
    for (; i < D; i++) store<f32>(at(dxr, i), s * load<f32>(at(dyr, i)) * load<f32>(at(w, i)) - k * load<f32>(at(xr, i)));
  }
}

function rowMax(x: usize, n: i32): f32 {
  let m = f32x4.splat(-Infinity);
  let i = 0;
  for (; i + 4 <= n; i += 4) m = f32x4.max(m, v128.load(at(x, i)));
  let s = hmax(m);
  for (; i < n; i++) s = max(s, load<f32>(at(x, i)));
  return s;
}

/** Σ exp(x − m) over a row; with `y`, also y = exp(x − m). */
function expSum(x: usize, y: usize, n: i32, m: f32): f32 {
  const vm = f32x4.splat(m);
  let acc = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const e = exp4(f32x4.sub(v128.load(at(x, i)), vm));
    if (y) v128.store(at(y, i), e);
    acc = f32x4.add(acc, e);
  }
  let s = hsum(acc);
  for (; i < n; i++) {
    const e = exp1(load<f32>(at(x, i)) - m);
    if (y) store<f32>(at(y, i), e);
    s += e;
  }
  return s;
}

function scaleRow(y: usize, n: i32, a: f32, b: f32): void {
  // y = y·a + b
  const va = f32x4.splat(a);
  const vb = f32x4.splat(b);
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(at(y, i), madd(v128.load(at(y, i)), va, vb));
  for (; i < n; i++) store<f32>(at(y, i), load<f32>(at(y, i)) * a + b);
}

export function softmax(x: usize, y: usize, R: i32, N: i32, log: bool): void {
  for (let r = 0; r < R; r++) {
    const xr = at(x, r * N);
    const yr = at(y, r * N);
    let m = rowMax(xr, N);
    if (m == -Infinity) m = 0; // a fully masked row: exps of −inf are 0, not NaN
    if (log) {
      // (x − m) − log Σ: adding m back first would round to the float spacing of m (large logits)
      const ls = <f32>Math.log(<f64>expSum(xr, 0, N, m));
      const vm = f32x4.splat(m);
      const vl = f32x4.splat(ls);
      let i = 0;
      for (; i + 4 <= N; i += 4) v128.store(at(yr, i), f32x4.sub(f32x4.sub(v128.load(at(xr, i)), vm), vl));
      for (; i < N; i++) store<f32>(at(yr, i), load<f32>(at(xr, i)) - m - ls);
    } else {
      const s = expSum(xr, yr, N, m);
      scaleRow(yr, N, 1 / s, 0);
    }
  }
}

// softmax: dx = y ⊙ (dy − Σ dy⊙y);  log-softmax: dx = dy − exp(y) · Σ dy
export function softmaxBackward(y: usize, dy: usize, dx: usize, R: i32, N: i32, log: bool): void {
  for (let r = 0; r < R; r++) {
    const yr = at(y, r * N);
    const gr = at(dy, r * N);
    const dr = at(dx, r * N);
    let i = 0;
    if (log) {
      let acc = f32x4.splat(0);
      for (; i + 4 <= N; i += 4) acc = f32x4.add(acc, v128.load(at(gr, i)));
      let s = hsum(acc);
      for (; i < N; i++) s += load<f32>(at(gr, i));
      const vs = f32x4.splat(s);
      i = 0;
      for (; i + 4 <= N; i += 4) v128.store(at(dr, i), f32x4.sub(v128.load(at(gr, i)), f32x4.mul(exp4(v128.load(at(yr, i))), vs)));
      for (; i < N; i++) store<f32>(at(dr, i), load<f32>(at(gr, i)) - exp1(load<f32>(at(yr, i))) * s);
    } else {
      const s = dot(gr, yr, N);
      const vs = f32x4.splat(s);
      for (; i + 4 <= N; i += 4) v128.store(at(dr, i), f32x4.mul(v128.load(at(yr, i)), f32x4.sub(v128.load(at(gr, i)), vs)));
      for (; i < N; i++) store<f32>(at(dr, i), load<f32>(at(yr, i)) * (load<f32>(at(gr, i)) - s));
    }
  }
}

@inline
function sigmoid4(a: v128): v128 {
  return f32x4.div(f32x4.splat(1), f32x4.add(f32x4.splat(1), exp4(f32x4.neg(a))));
}

export function swiglu(a: usize, b: usize, out: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const av = v128.load(at(a, i));
    v128.store(at(out, i), f32x4.mul(f32x4.mul(av, sigmoid4(av)), v128.load(at(b, i))));
  }
  for (; i < n; i++) {
    const av = load<f32>(at(a, i));
    store<f32>(at(out, i), (av / (1 + exp1(-av))) * load<f32>(at(b, i)));
  }
}

export function swigluBackward(a: usize, b: usize, dy: usize, da: usize, db: usize, n: i32): void {
  const one = f32x4.splat(1);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const av = v128.load(at(a, i));
    const g = v128.load(at(dy, i));
    const s = sigmoid4(av);
    v128.store(at(db, i), f32x4.mul(f32x4.mul(g, av), s));
    const ds = f32x4.add(one, f32x4.mul(av, f32x4.sub(one, s)));
    v128.store(at(da, i), f32x4.mul(f32x4.mul(f32x4.mul(g, v128.load(at(b, i))), s), ds));
  }
  for (; i < n; i++) {
    const av = load<f32>(at(a, i));
    const g = load<f32>(at(dy, i));
    const s: f32 = 1 / (1 + exp1(-av));
    store<f32>(at(db, i), g * av * s);
    store<f32>(at(da, i), g * load<f32>(at(b, i)) * s * (1 + av * (1 - s)));
  }
}

/** Targets are checked by the caller (JavaScript), so every target here is in [0, V) or ignoreIndex. */
export function crossEntropy(logits: usize, targets: usize, loss: usize, lse: usize, R: i32, V: i32, ignore: i32): void {
  for (let r = 0; r < R; r++) {
    const xr = at(logits, r * V);
    const t = load<i32>(at(targets, r));
    const m = rowMax(xr, V);
    const ls = <f32>Math.log(<f64>expSum(xr, 0, V, m));
    store<f32>(at(lse, r), m + ls);
    store<f32>(at(loss, r), t == ignore ? 0 : m - load<f32>(at(xr, t)) + ls);
  }
}

export function crossEntropyBackward(logits: usize, targets: usize, lse: usize, dloss: usize, dlogits: usize, R: i32, V: i32, ignore: i32): void {
  for (let r = 0; r < R; r++) {
    const xr = at(logits, r * V);
    const dr = at(dlogits, r * V);
    const t = load<i32>(at(targets, r));
    if (t == ignore) {
      memory.fill(dr, 0, <usize>V << 2);
      continue;
    }
    const g = load<f32>(at(dloss, r));
    const l = load<f32>(at(lse, r));
    expSum(xr, dr, V, l);
    scaleRow(dr, V, g, 0);
    store<f32>(at(dr, t), load<f32>(at(dr, t)) - g);
  }
}

export function rope(x: usize, cos: usize, sin: usize, out: usize, B: i32, T: i32, H: i32, D: i32, Bc: i32, inverse: bool, pass: i32): void {
  const half = D / 2;
  const W = pass + D;
  const sgn: f32 = inverse ? -1 : 1;
  for (let b = 0; b < B; b++) {
    const cb = Bc == 1 ? 0 : b;
    for (let t = 0; t < T; t++) {
      const tab = (cb * T + t) * half;
      for (let h = 0; h < H; h++) {
        const row = ((b * T + t) * H + h) * W;
        if (pass) memory.copy(at(out, row), at(x, row), <usize>pass << 2);
        const o = row + pass;
        for (let k = 0; k < half; k++) {
          const c = load<f32>(at(cos, tab + k));
          const s = sgn * load<f32>(at(sin, tab + k));
          const x0 = load<f32>(at(x, o + 2 * k));
          const x1 = load<f32>(at(x, o + 2 * k + 1));
          store<f32>(at(out, o + 2 * k), x0 * c - x1 * s);
          store<f32>(at(out, o + 2 * k + 1), x0 * s + x1 * c);
        }
      }
    }
  }
}

// θ ← θ·(1 − lr·wd) − lr·(m/bc1)/(sqrt(v/bc2) + eps), m and v the moving moments of g·gradScale
export function adamw(n: i32, param: usize, grad: usize, m: usize, v: usize, lr: f32, b1: f32, b2: f32, eps: f32, decay: f32, bc1: f32, bc2: f32, gs: f32): void {
  const vb1 = f32x4.splat(b1), vb1c = f32x4.splat(1 - b1), vb2 = f32x4.splat(b2), vb2c = f32x4.splat(1 - b2);
  const vgs = f32x4.splat(gs), vdec = f32x4.splat(decay), vlr = f32x4.splat(lr / bc1), vbc2 = f32x4.splat(1 / bc2), veps = f32x4.splat(eps);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const g = f32x4.mul(v128.load(at(grad, i)), vgs);
    const mi = madd(vb1, v128.load(at(m, i)), f32x4.mul(vb1c, g));
    const vi = madd(vb2, v128.load(at(v, i)), f32x4.mul(vb2c, f32x4.mul(g, g)));
    v128.store(at(m, i), mi);
    v128.store(at(v, i), vi);
    const den = f32x4.add(f32x4.sqrt(f32x4.mul(vi, vbc2)), veps);
    v128.store(at(param, i), f32x4.sub(f32x4.mul(v128.load(at(param, i)), vdec), f32x4.div(f32x4.mul(vlr, mi), den)));
  }
  for (; i < n; i++) {
    const g = load<f32>(at(grad, i)) * gs;
    const mi = b1 * load<f32>(at(m, i)) + (1 - b1) * g;
    const vi = b2 * load<f32>(at(v, i)) + (1 - b2) * g * g;
    store<f32>(at(m, i), mi);
    store<f32>(at(v, i), vi);
    store<f32>(at(param, i), load<f32>(at(param, i)) * decay - (lr * (mi / bc1)) / (Mathf.sqrt(vi / bc2) + eps));
  }
}

/** Σ x[i]², accumulated in double (two f64 lanes per half vector). */
export function sumsq(x: usize, n: i32): f64 {
  let acc = f64x2.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const v = v128.load(at(x, i));
    const lo = f64x2.promote_low_f32x4(v);
    const hi = f64x2.promote_low_f32x4(i32x4.shuffle(v, v, 2, 3, 0, 1));
    acc = f64x2.add(acc, f64x2.add(f64x2.mul(lo, lo), f64x2.mul(hi, hi)));
  }
  let s = f64x2.extract_lane(acc, 0) + f64x2.extract_lane(acc, 1);
  for (; i < n; i++) {
    const v = <f64>load<f32>(at(x, i));
    s += v * v;
  }
  return s;
}

export { axpy };
