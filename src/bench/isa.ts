// The native backend's instruction sets against each other, interleaved in one run (this machine swings ±20% within
// seconds, so each sample of the best set is paired with one of the baseline taken next to it): GEMM 1024³ in the
// x·Wᵀ layout of a linear layer, a prefill-shaped 64×1024·1024×4096, and one training step of a preset. The sets
// give bit-identical results (test/native-isa.test.ts), so only the speed differs.
import type { Backend } from '../backend/backend.js';
import { threadsOf } from './kernels.js';
import { quartile } from './peer.js';
import { median } from './timing.js';
import { trainStepper } from './train.js';
import { gemmParams, interleaved } from './wasm.js';

export interface IsaRecord {
  bench: 'isa';
  what: string;
  threads: number;
  pairs: number;
  /** The instruction set measured and the baseline it is compared with (e.g. avx512 against avx2). */
  isa: string;
  baseline: string;
  value: number;
  baseline_value: number;
  unit: string;
  /** isa ÷ baseline throughput: the median over the pairs, and its quartiles. */
  ratio: number;
  ratio_q1: number;
  ratio_q3: number;
}

/** Each instruction set of the backend but its best, against the best: GEMMs and a training step of `presetName`. */
export function benchIsa(backend: Backend, presetName = 'small', steps = 7): IsaRecord[] {
  const sets = backend.isas?.() ?? [];
  if (!backend.setIsa || sets.length < 2) return [];
  const best = sets[sets.length - 1]!;
  const start = backend.isa!();
  const out: IsaRecord[] = [];
  try {
    for (const baseline of sets.slice(0, -1)) {
      const under =
        (isa: string, f: () => number): (() => number) =>
        () => {
          backend.setIsa!(isa);
          return f();
        };
      const record = (what: string, unit: string, pairs: [number, number][]): IsaRecord => {
        const ratios = pairs.map(([a, b]) => a / b);
        return {
          bench: 'isa', what, threads: threadsOf(backend), pairs: pairs.length, isa: best, baseline,
          value: median(pairs.map((p) => p[0])), baseline_value: median(pairs.map((p) => p[1])), unit,
          ratio: median(ratios), ratio_q1: quartile(ratios, 0.25), ratio_q3: quartile(ratios, 0.75),
        }; // prettier-ignore
      };
      for (const [M, N, K] of [
        [1024, 1024, 1024],
        [64, 4096, 1024],
      ] as const) {
        const p = gemmParams(M, N, K);
        const gflops = (): number => {
          const t0 = performance.now();
          for (let r = 0; r < 3; r++) backend.gemm(p);
          return (3 * 2 * M * N * K) / (performance.now() - t0) / 1e6;
        };
        for (const isa of [best, baseline]) under(isa, gflops)();
        out.push(record(`gemm ${M}×${N}×${K}`, 'GFLOP/s', interleaved(9, under(best, gflops), under(baseline, gflops))));
      }
      const s = trainStepper(backend, presetName);
      s.warmUp();
      const tokS = (): number => {
        const t = s.step();
        return (s.batch * s.seq) / ((t.forward + t.backward + t.optimizer) / 1000);
      };
      under(baseline, tokS)();
      out.push(
        record(`train step ${presetName} ${s.batch}×${s.seq}`, 'tok/s', interleaved(steps, under(best, tokS), under(baseline, tokS))),
      );
    }
  } finally {
    backend.setIsa(start);
  }
  return out;
}
