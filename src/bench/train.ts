// Training throughput: forward + backward (cross-entropy plus the three balance losses) + AdamW on random tokens,
// at the batch (8 × 256 for `small`, 4 × 256 for `medium`). Reports the median step as tokens/s, with the
// forward / backward / optimizer split so a regression points at its phase.
import type { Backend } from '../backend/backend.js';
import { DeepseekV2ForCausalLM } from '../model/model.js';
import { preset } from '../model/presets.js';
import { AdamW } from '../optim/optimizer.js';
import { objective } from '../train/objective.js';
import { BufferArena, withArena } from '../tensor/arena.js';
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

export function benchTrain(
  b: Backend,
  presetName: string,
  opts: { steps?: number; batch?: number; seq?: number; arena?: boolean } = {},
): TrainBenchRecord {
  const [B0, T0] = TRAIN_BATCH[presetName] ?? [8, 256];
  const B = opts.batch ?? B0;
  const T = opts.seq ?? T0;
  const config = preset(presetName);
  const model = DeepseekV2ForCausalLM.init(config, { seed: 0, backend: b });
  const params = model.parameters();
  const opt = new AdamW(params, { lr: 3e-4, maxGradNorm: 1 });
  const arena = opts.arena === false ? null : new BufferArena(b); // as the trainer does
  const rng = new Rng(3);
  const ids = intTensor(
    Array.from({ length: B * (T + 1) }, () => rng.int(config.vocab_size)),
    [B, T + 1],
    { backend: b },
  );
  const x = ids.narrow(1, 0, T).contiguous();
  const y = ids.narrow(1, 1, T).contiguous();
  const coef = { alpha1: 0.003, alpha2: 0.05, alpha3: 0.02 };
  const steps = Math.max(5, opts.steps ?? 10); // the median of 10 steps: this machine varies by ±20% within seconds
  const fwd: number[] = [];
  const bwd: number[] = [];
  const upd: number[] = [];
  for (let s = -1; s < steps; s++) {
    const t0 = performance.now();
    arena?.reset(params.map((p) => p.gradBuffer()?.buf ?? null));
    let t1 = 0;
    const step = (): void => {
      opt.zeroGrad();
      const { lossTotal } = objective(model, x, y, coef);
      t1 = performance.now();
      lossTotal.backward();
    };
    if (arena) withArena(arena, step);
    else step();
    const t2 = performance.now();
    opt.step();
    const t3 = performance.now();
    if (s >= 0) {
      fwd.push(t1 - t0);
      bwd.push(t2 - t1);
      upd.push(t3 - t2);
    }
  }
  const total = fwd.map((f, i) => f + bwd[i]! + upd[i]!);
  const ms = median(total);
  return {
    bench: 'train',
    preset: presetName,
    backend: b.name,
    threads: threadsOf(b),
    batch: B,
    seq: T,
    ms,
    tok_s: (B * T) / (ms / 1000),
    forward_ms: median(fwd),
    backward_ms: median(bwd),
    optimizer_ms: median(upd),
  };
}
