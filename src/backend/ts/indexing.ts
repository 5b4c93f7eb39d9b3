// Reference gather / scatter-add (embedding, MoE dispatch and combine), top-k and argsort.
import type { F32, I32 } from '../backend.js';

function checkIndex(i: number, n: number, what: string): void {
  if (!(i >= 0 && i < n)) throw new Error(`${what}: index ${i} is outside [0, ${n})`);
}

export function gatherRows(src: F32, idx: I32, out: F32, M: number, N: number, D: number): void {
  for (let m = 0; m < M; m++) {
    const r = idx[m]!;
    checkIndex(r, N, 'gather rows');
    out.set(src.subarray(r * D, r * D + D), m * D);
  }
}

export function scatterRows(src: F32, idx: I32, dst: F32, M: number, N: number, D: number): void {
  for (let m = 0; m < M; m++) {
    const r = idx[m]!;
    checkIndex(r, N, 'scatter rows');
    dst.set(src.subarray(m * D, m * D + D), r * D);
  }
}

export function scatterAddRows(src: F32, idx: I32, dst: F32, M: number, N: number, D: number, w?: F32 | null): void {
  for (let m = 0; m < M; m++) {
    const r = idx[m]!;
    checkIndex(r, N, 'scatter-add rows');
    const o = r * D;
    const s = m * D;
    const wm = w ? w[m]! : 1;
    for (let i = 0; i < D; i++) dst[o + i] += wm * src[s + i]!;
  }
}

export function scatterAddRowsBackward(
  dy: F32,
  idx: I32,
  src: F32,
  w: F32,
  dsrc: F32 | null,
  dw: F32 | null,
  M: number,
  N: number,
  D: number,
): void {
  for (let m = 0; m < M; m++) {
    const r = idx[m]!;
    checkIndex(r, N, 'scatter-add rows backward');
    const g = r * D;
    const s = m * D;
    if (dsrc) for (let i = 0; i < D; i++) dsrc[s + i] = w[m]! * dy[g + i]!;
    if (dw) {
      let acc = 0;
      for (let i = 0; i < D; i++) acc += dy[g + i]! * src[s + i]!;
      dw[m] = acc;
    }
  }
}

export function gatherLast(x: F32, idx: I32, out: F32, R: number, N: number, K: number): void {
  for (let r = 0; r < R; r++) {
    for (let k = 0; k < K; k++) {
      const i = idx[r * K + k]!;
      checkIndex(i, N, 'gather');
      out[r * K + k] = x[r * N + i]!;
    }
  }
}

export function scatterAddLast(dy: F32, idx: I32, dx: F32, R: number, N: number, K: number): void {
  for (let r = 0; r < R; r++) {
    for (let k = 0; k < K; k++) {
      const i = idx[r * K + k]!;
      checkIndex(i, N, 'scatter-add');
      dx[r * N + i] += dy[r * K + k]!;
    }
  }
}

/** Largest first; among equal values the lower index wins (spec §5.5). NaN sorts last. */
function before(x: F32, a: number, b: number): boolean {
  const va = x[a]!;
  const vb = x[b]!;
  if (va > vb) return true;
  if (va < vb) return false;
  if (va === vb) return a < b;
  // at least one NaN
  if (Number.isNaN(va) && !Number.isNaN(vb)) return false;
  if (!Number.isNaN(va) && Number.isNaN(vb)) return true;
  return a < b;
}

export function topk(x: F32, idx: I32, R: number, N: number, K: number): void {
  if (K > N) throw new Error(`top-k: k = ${K} is larger than the axis (${N})`);
  const best = new Int32Array(K);
  for (let r = 0; r < R; r++) {
    const o = r * N;
    let len = 0;
    // insertion into a sorted list of the K best so far
    for (let i = 0; i < N; i++) {
      const cand = o + i;
      if (len === K && !before(x, cand, best[K - 1]!)) continue;
      let p = len < K ? len++ : K - 1;
      while (p > 0 && before(x, cand, best[p - 1]!)) {
        best[p] = best[p - 1]!;
        p--;
      }
      best[p] = cand;
    }
    for (let k = 0; k < K; k++) idx[r * K + k] = best[k]! - o;
  }
}

export function argsort(x: F32, idx: I32, R: number, N: number, descending: boolean): void {
  const perm = new Array<number>(N);
  for (let r = 0; r < R; r++) {
    const o = r * N;
    for (let i = 0; i < N; i++) perm[i] = i;
    // Array.prototype.sort is stable; NaN sorts last either way
    perm.sort((a, b) => {
      const va = x[o + a]!;
      const vb = x[o + b]!;
      const na = Number.isNaN(va);
      const nb = Number.isNaN(vb);
      if (na || nb) return na === nb ? 0 : na ? 1 : -1;
      const c = va < vb ? -1 : va > vb ? 1 : 0;
      return descending ? -c : c;
    });
    for (let i = 0; i < N; i++) idx[o + i] = perm[i]!;
  }
}
