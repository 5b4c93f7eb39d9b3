// The DeepSeek-V2 learning-rate schedule (paper §3.2.1, spec §6.4): linear warm-up from 0 to the peak, then
// step decay: × 0.316 once `decayAt[0]` of training has passed and again after `decayAt[1]` (two drops leave
// ≈ 1/10 of the peak).

export interface Schedule {
  peakLr: number;
  totalSteps: number;
  warmupSteps: number;
  /** Fractions of training after which the rate is multiplied by `decayFactor` (paper: 0.6 and 0.9). */
  decayAt: readonly number[];
  decayFactor: number;
}

export function makeSchedule(peakLr: number, totalSteps: number, warmupFraction = 0.03, decayAt: readonly number[] = [0.6, 0.9]): Schedule {
  return { peakLr, totalSteps, warmupSteps: Math.max(1, Math.round(totalSteps * warmupFraction)), decayAt, decayFactor: 0.316 };
}

/** The rate for 0-based `step`. */
export function lrAt(s: Schedule, step: number): number {
  if (step < s.warmupSteps) return (s.peakLr * (step + 1)) / s.warmupSteps;
  let lr = s.peakLr;
  for (const f of s.decayAt) if (step >= Math.round(f * s.totalSteps)) lr *= s.decayFactor;
  return lr;
}
