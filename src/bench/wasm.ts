// The wasm backend against native, interleaved in one run (this machine swings ±20% within seconds, so each wasm
// sample is paired with the native sample taken next to it and the ratio is the median of the pairs' ratios):
// GEMM 1024³ in the x·Wᵀ layout of a linear layer, and one `small` training step (forward, backward, AdamW).
import type { Backend, GemmParams } from '../backend/backend.js';
import { Rng } from '../tensor/random.js';
import { threadsOf } from './kernels.js';
import { quartile } from './peer.js';
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
    ratio_q1: quartile(ratios, 0.25),
    ratio_q3: quartile(ratios, 0.75),
  };
}

/** `pairs` measurements of [a, b], alternating which runs first so that neither always runs on the warmer machine. */
export function interleaved(pairs: number, a: () => number, b: () => number): [number, number][] {
  return Array.from({ length: pairs }, (_, i): [number, number] => {
    if (i % 2 === 0) return [a(), b()];
    const second = b();
    return [a(), second];
  });
}

/** C [M×N] = A [M×K] · Wᵀ (W [N×K], a linear layer's layout) on random operands. */
export function gemmParams(M: number, N = M, K = M): GemmParams {
  const rng = new Rng(1);
  const rand = (len: number): Float32Array => Float32Array.from({ length: len }, () => rng.uniform() * 2 - 1);
  return {
    batch: 1, M, N, K,
    a: rand(M * K), aOffset: 0, aBatchStride: 0, aRowStride: K, aColStride: 1,
    b: rand(N * K), bOffset: 0, bBatchStride: 0, bRowStride: 1, bColStride: K,
    c: new Float32Array(M * N), cOffset: 0, cBatchStride: 0, alpha: 1, beta: 0,
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
  return record(
    `gemm ${n}³`,
    'GFLOP/s',
    wasm,
    interleaved(
      pairs,
      () => gflops(wasm),
      () => gflops(native),
    ),
  );
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
  return record(
    `train step ${presetName} ${sw.batch}×${sw.seq}`,
    'tok/s',
    wasm,
    interleaved(
      pairs,
      () => tokS(sw),
      () => tokS(sn),
    ),
  );
}
