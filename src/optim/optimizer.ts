// Optimizers update parameters in place (no graph) and reuse the parameters' gradient buffers across steps.
import type { F32 } from '../backend/backend.js';
import { noGrad } from '../autograd/graph.js';
import type { Tensor } from '../tensor/tensor.js';

/** Zero the parameters' gradients (in O(1) each: see Tensor.zeroGrad). */
export function zeroGrad(params: readonly Tensor[]): void {
  for (const p of params) p.zeroGrad();
}

/** Whether a parameter received a gradient since its last zeroGrad (PyTorch: `.grad is not None`). */
export function hasGrad(p: Tensor): boolean {
  const g = p.gradBuffer();
  return g !== null && !g.zero;
}

/** sqrt(Σ over the gradients of this step of g²), accumulated in float64 (parameters without one are skipped). */
export function globalGradNorm(params: readonly Tensor[]): number {
  const grads = params.filter(hasGrad).map((p) => p.grad!);
  let ss = 0;
  for (const b of new Set(grads.map((g) => g.backend))) {
    const mine = grads.filter((g) => g.backend === b); // one call per backend: all its tensors in one parallel region
    ss += b.sumsqMany(
      mine.map((g) => g.f32()),
      mine.map((g) => g.size),
    );
  }
  return Math.sqrt(ss);
}

/** Plain SGD: θ ← θ − lr·g. */
export class SGD {
  constructor(
    readonly params: readonly Tensor[],
    public lr: number,
  ) {}

  step(): void {
    noGrad(() => {
      for (const p of this.params) {
        if (!p.grad) continue;
        const w = p.f32();
        const g = p.grad.f32();
        for (let i = 0; i < w.length; i++) w[i] = w[i]! - this.lr * g[i]!;
      }
    });
  }

  zeroGrad(): void {
    zeroGrad(this.params);
  }
}

export interface AdamWOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Clip the global gradient norm to this value before the update (PyTorch clip_grad_norm_). */
  maxGradNorm?: number;
  /** Which parameters decay; default: tensors with ≥ 2 dims (matrices and embeddings), never norms. */
  decays?: (p: Tensor) => boolean;
}

/**
 * AdamW with decoupled weight decay, bias correction, optional global-norm clipping, as torch.optim.AdamW: a
 * parameter that received no gradient in a step (an expert no token was routed to; `.grad is None` in PyTorch) is
 * skipped entirely — no moment decay, no weight decay — and its own step count, which its bias correction uses,
 * stands still.
 */
export class AdamW {
  private m: F32[];
  private v: F32[];
  /** Optimizer steps taken. */
  step_ = 0;
  /** Each parameter's own update count (PyTorch's state['step']). */
  private steps: number[];
  readonly opts: Required<Omit<AdamWOptions, 'maxGradNorm'>> & { maxGradNorm: number | undefined };

  constructor(
    readonly params: readonly Tensor[],
    opts: AdamWOptions,
  ) {
    this.opts = {
      lr: opts.lr,
      beta1: opts.beta1 ?? 0.9,
      beta2: opts.beta2 ?? 0.95,
      eps: opts.eps ?? 1e-8,
      weightDecay: opts.weightDecay ?? 0.1,
      maxGradNorm: opts.maxGradNorm,
      decays: opts.decays ?? ((p: Tensor) => p.ndim >= 2),
    };
    this.m = params.map((p) => p.backend.alloc(p.size));
    this.v = params.map((p) => p.backend.alloc(p.size));
    this.steps = params.map(() => 0);
  }

  /** Moments and step counts, for checkpoints (the arrays are the live buffers, not copies). */
  state(): { step: number; steps: readonly number[]; m: readonly F32[]; v: readonly F32[] } {
    return { step: this.step_, steps: this.steps, m: this.m, v: this.v };
  }

  /** Restore moments and step counts saved by state() (without per-parameter counts: every one at `step`). */
  loadState(st: { step: number; steps?: readonly number[]; m: readonly Float32Array[]; v: readonly Float32Array[] }): void {
    if (st.steps && st.steps.length !== this.m.length)
      throw new Error(`optimizer state has ${st.steps.length} step counts, the model ${this.m.length} tensors`);
    if (st.m.length !== this.m.length || st.v.length !== this.v.length) {
      throw new Error(`optimizer state holds ${st.m.length} tensors, the model has ${this.m.length}`);
    }
    st.m.forEach((a, i) => {
      if (a.length !== this.m[i]!.length)
        throw new Error(`optimizer state tensor ${i} has ${a.length} values, expected ${this.m[i]!.length}`);
      this.m[i]!.set(a);
      this.v[i]!.set(st.v[i]!);
    });
    this.step_ = st.step;
    this.steps = st.steps ? [...st.steps] : this.params.map(() => st.step);
  }

  /** One update; returns the pre-clip global gradient norm. */
  step(lr = this.opts.lr): number {
    const { beta1, beta2, eps, weightDecay, maxGradNorm, decays } = this.opts;
    this.step_++;
    const norm = globalGradNorm(this.params);
    const gradScale = maxGradNorm !== undefined ? Math.min(1, maxGradNorm / (norm + 1e-6)) : 1;
    noGrad(() => {
      const updates = this.params.flatMap((p, i) => {
        if (!hasGrad(p)) return [];
        this.steps[i]!++;
        const u = {
          n: p.size,
          param: p.f32(),
          grad: p.grad!.f32(),
          m: this.m[i]!,
          v: this.v[i]!,
          lr,
          beta1,
          beta2,
          eps,
          weightDecay: decays(p) ? weightDecay : 0,
          step: this.steps[i]!,
          gradScale,
        };
        return [{ u, backend: p.backend }];
      });
      // one call per backend and step count (almost always one): every tensor's update in one parallel region
      const groups = new Map<string, typeof updates>();
      for (const x of updates) {
        const key = `${x.backend.name}:${x.u.step}`;
        const g = groups.get(key);
        if (g) g.push(x);
        else groups.set(key, [x]);
      }
      for (const g of groups.values()) g[0]!.backend.adamwMany(g.map((x) => x.u));
    });
    return norm;
  }

  zeroGrad(): void {
    zeroGrad(this.params);
  }
}
