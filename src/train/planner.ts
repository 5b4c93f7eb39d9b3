// The length of a --minutes run. The step count is fixed from the wall-clock time per step of steps 2–6 (step 1 is
// slow: caches, JIT, the heap's growth), then re-planned once, at 30% of the run or half the way to the first decay,
// from the time per step since (evaluations and checkpoints included): a machine busy during the first steps would
// otherwise leave the run far shorter, or longer, than asked.
export interface PlannerOptions {
  minutes: number;
  /** Seconds a resumed run already trained. */
  elapsedBefore: number;
  warmup: number;
  decayAt: readonly number[];
}

export class MinutesPlanner {
  private afterFirst = 0;
  private plan: { step: number; t: number } | null = null;
  private replanned = false;
  private readonly firstDecay: number;
  private readonly replanAt: number;

  constructor(
    private readonly o: PlannerOptions,
    private readonly now: () => number,
    private readonly started: number,
  ) {
    this.firstDecay = Math.min(1, ...o.decayAt);
    this.replanAt = Math.min(0.3, this.firstDecay / 2); // after warm-up, before the first decay
  }

  private secondsLeft(): number {
    return this.o.minutes * 60 - (this.o.elapsedBefore + (this.now() - this.started) / 1000);
  }

  /**
   * After step `step` (1-based) of a run planned at `totalSteps` (0: not yet): the new step count, or null when it
   * stays. `fixed` says whether a schedule exists yet.
   */
  afterStep(step: number, totalSteps: number, fixed: boolean): number | null {
    if (step === 1) this.afterFirst = this.now();
    if (!fixed && step >= 6) {
      const typical = (this.now() - this.afterFirst) / 1000 / (step - 1);
      this.plan = { step, t: this.now() };
      return Math.max(step + 1, step + Math.floor(this.secondsLeft() / Math.max(typical, 1e-6)));
    }
    if (!this.plan || this.replanned || step - this.plan.step < 5 || step < Math.round(this.replanAt * totalSteps)) return null;
    // Warm-up is over and the first decay not yet reached, so the rate goes on without a jump; the bounds keep it
    // that way (the new warm-up must end before this step, the first decay must lie after it).
    this.replanned = true;
    const perStep = Math.max((this.now() - this.plan.t) / 1000 / (step - this.plan.step), 1e-6);
    const want = step + Math.floor(this.secondsLeft() / perStep);
    const bounded = Math.min(
      Math.max(want, Math.floor(step / this.firstDecay) + 1, step + 1),
      Math.floor(step / Math.max(this.o.warmup, 1e-6)),
    );
    return Math.abs(bounded - totalSteps) > 0.1 * totalSteps ? bounded : null;
  }
}
