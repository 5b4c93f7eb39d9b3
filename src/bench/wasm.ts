// The wasm backend against native, interleaved in one run (this machine swings ±20% within seconds, so each wasm
// sample is paired with the native sample taken next to it and the ratio is the median of the pairs' ratios):
// GEMM 1024³ in the x·Wᵀ layout of a linear layer, and one `small` training step (forward, backward, AdamW).
import type { Backend, GemmParams } from '../backend/backend.js';
import { Rng } from '../tensor/random.js';
import { threadsOf } from './kernels.js';
import { median } from './timing.js';
import { trainStepper } from './train.js';

export interface WasmVsNativeRecord {
  bench: 'wasm-vs-native';
  what: string;
  threads: number;
  pairs: number;
  wasm: number;
  native: number;
  unit: string;
  /** wasm ÷ native throughput: the median over the pairs, and its quartiles. */
  ratio: number;
  ratio_q1: number;
  ratio_q3: number;
}

const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * (s.length - 1)))]!;
};

function record(what: string, unit: string, wasm: Backend, pairs: [number, number][]): WasmVsNativeRecord {
  const ratios = pairs.map(([w, n]) => w / n);
  return {
    bench: 'wasm-vs-native',
    what,
    threads: threadsOf(wasm),
    pairs: pairs.length,
    wasm: median(pairs.map((p) => p[0])),
    native: median(pairs.map((p) => p[1])),
    unit,
    ratio: median(ratios),
    ratio_q1: quantile(ratios, 0.25),
    ratio_q3: quantile(ratios, 0.75),
  };
}

function gemmParams(n: number): GemmParams {
  const rng = new Rng(1);
  const rand = (len: number): Float32Array => Float32Array.from({ length: len }, () => rng.uniform() * 2 - 1);
  return {
    batch: 1, M: n, N: n, K: n,
    a: rand(n * n), aOffset: 0, aBatchStride: 0, aRowStride: n, aColStride: 1,
    b: rand(n * n), bOffset: 0, bBatchStride: 0, bRowStride: 1, bColStride: n,
    c: new Float32Array(n * n), cOffset: 0, cBatchStride: 0, alpha: 1, beta: 0,
  }; // prettier-ignore
}

/** GEMFLOP/s of wasm and native on n³, `pairs` interleaved pairs after a warm-up of each. */
export function gemmWasmVsNative(wasm: Backend, native: Backend, n = 1024, pairs = 9): WasmVsNativeRecord {
  const p = gemmParams(n);
  const gflops = (b: Backend): number => {
    const t0 = performance.now();
    b.gemm(p);
    return (2 * n ** 3) / (performance.now() - t0) / 1e6;
  };
  for (let i = 0; i < 2; i++) [wasm, native].forEach(gflops);
  const out: [number, number][] = [];
  for (let i = 0; i < pairs; i++) {
    // alternate which goes first, so neither always runs on the warmer machine
    if (i % 2) {
      const nat = gflops(native);
      out.push([gflops(wasm), nat]);
    } else out.push([gflops(wasm), gflops(native)]);
  }
  return record(`gemm ${n}³`, 'GFLOP/s', wasm, out);
}

/** Training tokens/s of wasm and native on a preset, `pairs` interleaved steps after a warm-up of each. */
export function trainWasmVsNative(wasm: Backend, native: Backend, presetName = 'small', pairs = 7): WasmVsNativeRecord {
  const sw = trainStepper(wasm, presetName);
  const sn = trainStepper(native, presetName);
  sw.warmUp();
  sn.warmUp();
  const tokS = (s: typeof sw): number => {
    const t = s.step();
    return (s.batch * s.seq) / ((t.forward + t.backward + t.optimizer) / 1000);
  };
  const out: [number, number][] = [];
  for (let i = 0; i < pairs; i++) {
    // alternate which goes first, so neither always runs on the warmer machine
    if (i % 2) {
      const n = tokS(sn);
      out.push([tokS(sw), n]);
    } else out.push([tokS(sw), tokS(sn)]);
  }
  return record(`train step ${presetName} ${sw.batch}×${sw.seq}`, 'tok/s', wasm, out);
}
