// One optimizer step — the one the trainer, `dsv2 bench train` and `dsv2 step` all take: zero the gradients; for each
// micro-batch, the objective's forward and backward (its loss scaled by 1/micro-batches), with the activations of the
// previous micro-batch handed back to a BufferArena first; then AdamW. What callers differ in (data, dropping,
// metrics, NaN checks, writing gradients out) comes in through the arguments.
import { backward } from '../autograd/graph.js';
import { scale } from '../autograd/ops/elementwise.js';
import type { DeepseekV2ForCausalLM } from '../model/model.js';
import type { TokenDropping } from '../model/moe.js';
import type { AdamW } from '../optim/optimizer.js';
import { withArena, type BufferArena } from '../tensor/arena.js';
import type { Tensor } from '../tensor/tensor.js';
import type { BalanceCoefficients } from './losses.js';
import { objective, type Objective } from './objective.js';

export interface MicroBatch {
  /** Token ids and next-token labels, [B, T] int32 (labels −100 where no target). */
  x: Tensor;
  y: Tensor;
  drop?: TokenDropping;
}

export interface StepOptions {
  coef: BalanceCoefficients;
  /** Micro-batches per optimizer step (gradient accumulation); default 1. */
  micro?: number;
  /** Reused memory between micro-batches; null runs without. */
  arena: BufferArena | null;
  /** The learning rate of this step (default: the optimizer's). */
  lr?: number;
  /** Each micro-batch's objective after its backward (metrics, checks; a throw stops the step). */
  onMicro?: (o: Objective, micro: number) => void;
  /** Between the last backward and the optimizer update (the gradients are complete). */
  beforeUpdate?: () => void;
}

export interface StepTimes {
  forward: number;
  backward: number;
  optimizer: number;
}

/** One optimizer step; returns the pre-clip gradient norm and where the time went (milliseconds). */
export function trainStep(
  model: DeepseekV2ForCausalLM,
  opt: AdamW,
  next: (micro: number) => MicroBatch,
  o: StepOptions,
): { gradNorm: number; times: StepTimes } {
  const params = opt.params;
  const micro = o.micro ?? 1;
  const times: StepTimes = { forward: 0, backward: 0, optimizer: 0 };
  opt.zeroGrad();
  for (let m = 0; m < micro; m++) {
    // the previous micro-batch's activations and gradients are dead: reuse their memory (tensor/arena.ts)
    o.arena?.reset(params.map((p) => p.gradBuffer()?.buf ?? null));
    const run = (): void => {
      const t0 = performance.now();
      const { x, y, drop } = next(m);
      const obj = objective(model, x, y, o.coef, { drop });
      const t1 = performance.now();
      backward(micro > 1 ? scale(obj.lossTotal, 1 / micro) : obj.lossTotal);
      const t2 = performance.now();
      times.forward += t1 - t0;
      times.backward += t2 - t1;
      o.onMicro?.(obj, m);
    };
    if (o.arena) withArena(o.arena, run);
    else run();
  }
  o.beforeUpdate?.();
  const t3 = performance.now();
  const gradNorm = opt.step(o.lr);
  times.optimizer = performance.now() - t3;
  return { gradNorm, times };
}
