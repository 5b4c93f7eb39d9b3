// Timing for benchmarks: warm up, then the median of at least `runs` timed samples. A kernel that takes
// microseconds is called in an inner loop so that each sample lasts about a millisecond (timer resolution).

export interface Timing {
  /** Median milliseconds per call. */
  ms: number;
  /** Timed samples taken (each of `inner` calls). */
  samples: number;
  inner: number;
}

function now(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export function time(fn: () => void, opts: { runs?: number; warmup?: number; minSampleMs?: number; maxMs?: number } = {}): Timing {
  const runs = Math.max(5, opts.runs ?? 7);
  const minSample = opts.minSampleMs ?? 1;
  const t0 = now();
  for (let i = 0; i < (opts.warmup ?? 2); i++) fn();
  const est = Math.max((now() - t0) / (opts.warmup ?? 2), 1e-4);
  const inner = Math.max(1, Math.ceil(minSample / est));
  const samples: number[] = [];
  const budget = opts.maxMs ?? 2000;
  const start = now();
  while (samples.length < runs || (now() - start < budget && samples.length < 3 * runs)) {
    const s = now();
    for (let i = 0; i < inner; i++) fn();
    samples.push((now() - s) / inner);
    if (samples.length >= runs && now() - start > budget) break;
  }
  return { ms: median(samples), samples: samples.length, inner };
}

/** The median of xs (the mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
