// Training throughput: forward + backward (cross-entropy plus the three balance losses) + AdamW on random tokens,
// at the batch (8 × 256 for `small`, 4 × 256 for `medium`). Reports the median step as tokens/s, with the
// forward / backward / optimizer split so a regression points at its phase.
import { contiguous, narrow } from '../autograd/ops/views.js';
import type { Backend } from '../backend/backend.js';
import { DeepseekV2ForCausalLM } from '../model/model.js';
import { pinWeights } from '../model/from-tensors.js';
import { preset } from '../model/presets.js';
import { AdamW } from '../optim/optimizer.js';
import { trainStep, type StepTimes } from '../train/step.js';

export type { StepTimes };
import { BufferArena } from '../tensor/arena.js';
import { Rng } from '../tensor/random.js';
import { intTensor } from '../tensor/tensor.js';
import { threadsOf, type BenchRecord } from './kernels.js';
import { median } from './timing.js';

export const TRAIN_BATCH: Record<string, [number, number]> = { tiny: [8, 64], small: [8, 256], medium: [4, 256] };

export interface TrainBenchRecord extends BenchRecord {
  preset: string;
  batch: number;
  seq: number;
  tok_s: number;
  forward_ms: number;
  backward_ms: number;
  optimizer_ms: number;
}

/** One training step of the benchmark, timed by phase (milliseconds). */
/** A model, optimizer and fixed random batch at the benchmark's shape; `step()` runs and times one step. */
export interface TrainStepper {
  preset: string;
  batch: number;
  seq: number;
  /** One untimed step, then huge pages over the heap it grew (a one-time collapse that no timed step should pay). */
  warmUp(): void;
  step(): StepTimes;
}

export function trainStepper(b: Backend, presetName: string, opts: { batch?: number; seq?: number; arena?: boolean } = {}): TrainStepper {
  const [B0, T0] = TRAIN_BATCH[presetName] ?? [8, 256];
  const B = opts.batch ?? B0;
  const T = opts.seq ?? T0;
  const config = preset(presetName);
  const model = DeepseekV2ForCausalLM.init(config, { seed: 0, backend: b });
  const params = model.parameters();
  const opt = new AdamW(params, { lr: 3e-4, maxGradNorm: 1 });
  pinWeights(model); // as the trainer does: only AdamW writes the weights
  const arena = opts.arena === false ? null : new BufferArena(b); // as the trainer does
  const rng = new Rng(3);
  const ids = intTensor(
    Array.from({ length: B * (T + 1) }, () => rng.int(config.vocab_size)),
    [B, T + 1],
    { backend: b },
  );
  const x = contiguous(narrow(ids, 1, 0, T));
  const y = contiguous(narrow(ids, 1, 1, T));
  const coef = { alpha1: 0.003, alpha2: 0.05, alpha3: 0.02 };
  const stepper: TrainStepper = {
    preset: presetName,
    batch: B,
    seq: T,
    warmUp(): void {
      stepper.step();
      b.adviseHugePages?.(true);
    },
    step(): StepTimes {
      return trainStep(model, opt, () => ({ x, y }), { coef, arena }).times;
    },
  };
  return stepper;
}

export function benchTrain(
  b: Backend,
  presetName: string,
  opts: { steps?: number; batch?: number; seq?: number; arena?: boolean } = {},
): TrainBenchRecord {
  const stepper = trainStepper(b, presetName, opts);
  const steps = Math.max(5, opts.steps ?? 10); // the median of 10 steps: this machine varies by ±20% within seconds
  stepper.warmUp();
  const times = Array.from({ length: steps }, () => stepper.step());
  const ms = median(times.map((t) => t.forward + t.backward + t.optimizer));
  return {
    bench: 'train',
    preset: presetName,
    backend: b.name,
    threads: threadsOf(b),
    batch: stepper.batch,
    seq: stepper.seq,
    ms,
    tok_s: (stepper.batch * stepper.seq) / (ms / 1000),
    forward_ms: median(times.map((t) => t.forward)),
    backward_ms: median(times.map((t) => t.backward)),
    optimizer_ms: median(times.map((t) => t.optimizer)),
  };
}
