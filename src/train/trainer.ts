// The training loop (spec §6): data → DeepSeek-V2 forward with device-level token dropping → cross-entropy plus
// the three balance losses → backward → AdamW with the warm-up + step-decay schedule and global-norm clipping.
// Every step appends one line to metrics.jsonl; validation every `evalEvery` steps; checkpoints every
// `checkpointEvery` steps and at the end. `resume` continues from the last checkpoint so that the loss sequence
// is the one an uninterrupted run would have produced.
import '../backend/node.js'; // registers the native and wasm backends (Node)
import { existsSync, mkdirSync, readFileSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { noGrad } from '../autograd/graph.js';
import type { Backend } from '../backend/backend.js';
import { defaultBackend, loadBackend } from '../backend/registry.js';
import { corpusHash, loadCorpus, splitDocs } from '../data/corpus.js';
import { BatchStream, evalBatches, tokenizeDocs, type DataPosition } from '../data/loader.js';
import { writeFileAtomic } from '../io/atomic.js';
import { configToJson, parseConfig, type DeepseekV2Config } from '../model/config.js';
import { DeepseekV2ForCausalLM } from '../model/model.js';
import { pinWeights } from '../model/from-tensors.js';
import type { TokenDropping } from '../model/moe.js';
import { preset } from '../model/presets.js';
import { AdamW } from '../optim/optimizer.js';
import { BufferArena } from '../tensor/arena.js';
import { Rng, type RngState } from '../tensor/random.js';
import { intTensor } from '../tensor/tensor.js';
import { trainBpe } from '../tokenizer/train.js';
import { Tokenizer, type TokenizerJson } from '../tokenizer/tokenizer.js';
import {
  cleanStaleTemps,
  findCheckpoint,
  partialCheckpoints,
  readCheckpoint,
  recoverCheckpoint,
  writeCheckpoint,
  type SwapPhase,
} from './checkpoint.js';
import { objective } from './objective.js';
import { trainStep } from './step.js';
import { MinutesPlanner } from './planner.js';
import { lrAt, makeSchedule, type Schedule } from './schedule.js';

import { BOS, EOS } from '../tokenizer/specials.js';

export { BOS, EOS };

export interface TrainOptions {
  preset: string;
  /** Config fields over the preset (HF names), e.g. { num_hidden_layers: 2 }. */
  config: Record<string, unknown>;
  data: string;
  out: string;
  /** Length of the run: steps, or tokens, or wall-clock minutes (the step count is fixed after 6 steps and re-planned once, at 30%). */
  steps?: number;
  tokens?: number;
  minutes?: number;
  batch: number;
  seq: number;
  gradAccum: number;
  lr: number;
  warmup: number;
  decayAt: number[];
  weightDecay: number;
  beta1: number;
  beta2: number;
  clip: number;
  alpha1: number;
  alpha2: number;
  alpha3: number;
  /** Device capacity factor for token dropping; 0 turns dropping off (spec §6.3). */
  capacityFactor: number;
  protectedFraction: number;
  valFraction: number;
  evalEvery: number;
  evalBatches: number;
  checkpointEvery: number;
  seed: number;
  resume: boolean;
  backend?: string;
  /** Folder for the tokenizer and token caches (default .cache/dsv2). */
  cacheDir: string;
}

export const TRAIN_DEFAULTS: Omit<TrainOptions, 'preset' | 'data' | 'out' | 'config'> = {
  batch: 8,
  seq: 256,
  gradAccum: 1,
  lr: 2e-3,
  warmup: 0.03,
  decayAt: [0.6, 0.9],
  weightDecay: 0.1,
  beta1: 0.9,
  beta2: 0.95,
  clip: 1.0,
  alpha1: 0.003,
  alpha2: 0.05,
  alpha3: 0.02,
  capacityFactor: 0,
  protectedFraction: 0.1,
  valFraction: 0.05,
  evalEvery: 50,
  evalBatches: 4,
  checkpointEvery: 100,
  seed: 0,
  resume: false,
  cacheDir: '.cache/dsv2',
};

/** One line of metrics.jsonl. */
export interface StepMetrics {
  step: number;
  tokens: number;
  loss: number;
  loss_total: number;
  lr: number;
  tok_s: number;
  grad_norm: number;
  /** Max over mean expert load (assignments per expert, before dropping), one number per MoE layer. */
  load_max_over_mean: number[];
  /** Share of each routed expert in each MoE layer's assignments (before dropping). */
  expert_load: number[][];
  dropped_frac: number;
  l_exp: number;
  l_dev: number;
  l_comm: number;
  elapsed_s: number;
  val_loss?: number;
}

interface TrainerState {
  step: number;
  tokens: number;
  totalSteps: number;
  data: DataPosition;
  rng: RngState;
  elapsedS: number;
  options: Omit<TrainOptions, 'resume'>;
}

export interface RunInfo {
  config: DeepseekV2Config;
  tokenizer: Tokenizer;
  backend: Backend;
  totalSteps: number;
  trainTokens: number;
  valTokens: number;
  params: number;
  unigramLoss: number;
  resumedFrom: number;
}

export interface TrainResult extends RunInfo {
  model: DeepseekV2ForCausalLM;
  /** The run ended early because shouldStop said so (its last step is checkpointed). */
  stopped: boolean;
  last: StepMetrics | null;
  lastValLoss: number | null;
  checkpoint: string;
}

export interface TrainHooks {
  onStart?: (info: RunInfo) => void;
  onStep?: (m: StepMetrics, info: RunInfo) => void;
  onStatus?: (msg: string) => void;
  /** Milliseconds since an arbitrary origin (default performance.now); tests drive --minutes planning with it. */
  clock?: () => number;
  /** Asked after every step: true ends the run there with a last checkpoint (SIGINT/SIGTERM in the CLI). */
  shouldStop?: () => boolean;
  /** Each moment of a checkpoint swap (tests interrupt it there: a throw is a kill at that instant). */
  onCheckpointPhase?: (phase: SwapPhase, step: number) => void;
}

/** trainer_state.json as a resume needs it; one message naming the field and the value otherwise. */
function checkTrainerState(s: unknown, where: string): TrainerState {
  const bad = (what: string, v: unknown): never => {
    throw new Error(`checkpoint ${where}: trainer_state.json: ${what}, got ${JSON.stringify(v)}`);
  };
  if (typeof s !== 'object' || s === null || Array.isArray(s)) return bad('not an object', s);
  const o = s as Record<string, unknown>;
  const count = (k: string): void => {
    if (!Number.isInteger(o[k]) || (o[k] as number) < 0) bad(`"${k}" must be an integer ≥ 0`, o[k]);
  };
  count('step');
  count('tokens');
  count('totalSteps');
  if (typeof o['elapsedS'] !== 'number' || !((o['elapsedS'] as number) >= 0)) bad('"elapsedS" must be a number ≥ 0', o['elapsedS']);
  const d = o['data'] as Record<string, unknown> | undefined;
  if (!d || !Number.isInteger(d['epoch']) || !Number.isInteger(d['index']) || (d['epoch'] as number) < 0 || (d['index'] as number) < 0)
    bad('"data" must be {epoch, index} (integers ≥ 0)', d);
  const r = o['rng'] as Record<string, unknown> | undefined;
  if (!r || !Array.isArray(r['s']) || r['s'].length !== 4 || !r['s'].every((x) => Number.isInteger(x)))
    bad('"rng" must hold 4 state words', r);
  const op = o['options'] as Record<string, unknown> | undefined;
  if (!op || typeof op !== 'object' || typeof op['preset'] !== 'string' || typeof op['data'] !== 'string')
    bad('"options" must name the preset and data', op);
  return o as unknown as TrainerState;
}

/** metrics.jsonl's lines of steps ≤ `step`: a torn last line (a kill mid-write) is dropped; any other broken line is named. */
function metricsUpTo(file: string, step: number): string[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  const kept: string[] = [];
  lines.forEach((l, i) => {
    if (!l.trim()) return;
    let m: StepMetrics;
    try {
      m = JSON.parse(l) as StepMetrics;
    } catch {
      if (lines.slice(i + 1).every((r) => !r.trim())) return; // the torn last line
      throw new Error(`${file}: line ${i + 1} is not valid JSON (${l.slice(0, 40)}…)`);
    }
    if (m.step <= step) kept.push(l);
  });
  return kept;
}

export class TrainingDiverged extends Error {}

/** The tokenizer of a corpus: trained once per (corpus, vocabulary size) and cached. */
function corpusTokenizer(
  opts: TrainOptions,
  trainDocs: { name: string; text: string }[],
  hash: string,
  vocab: number,
  say: (m: string) => void,
): Tokenizer {
  const file = join(opts.cacheDir, `tokenizer-${hash}-${vocab}.json`);
  if (existsSync(file)) {
    try {
      return Tokenizer.fromJSON(JSON.parse(readFileSync(file, 'utf8')) as TokenizerJson);
    } catch {
      // a broken cache entry is rebuilt below
    }
  }
  say(`training a ${vocab}-token byte-level BPE tokenizer on ${trainDocs.length} documents…`);
  const t0 = performance.now();
  const tok = trainBpe(
    trainDocs.map((d) => d.text),
    { vocabSize: vocab, specials: [BOS, EOS] },
  );
  say(`tokenizer trained in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  mkdirSync(opts.cacheDir, { recursive: true });
  writeFileAtomic(file, JSON.stringify(tok.toJSON()));
  return tok;
}

/** Cross-entropy of a unigram model fitted on the training tokens, measured on the validation tokens. */
function unigramLoss(train: Int32Array, val: Int32Array, vocab: number): number {
  const counts = new Float64Array(vocab).fill(1); // add-one smoothing
  for (const t of train) counts[t]!++;
  const total = train.length + vocab;
  let nll = 0;
  for (const t of val) nll -= Math.log(counts[t]! / total);
  return nll / Math.max(1, val.length);
}

function toBatch(b: Backend, rows: Int32Array, B: number, T: number): { x: ReturnType<typeof intTensor>; y: ReturnType<typeof intTensor> } {
  const xs = new Int32Array(B * T);
  const ys = new Int32Array(B * T);
  for (let r = 0; r < B; r++) {
    xs.set(rows.subarray(r * (T + 1), r * (T + 1) + T), r * T);
    ys.set(rows.subarray(r * (T + 1) + 1, r * (T + 1) + T + 1), r * T);
  }
  return { x: intTensor(xs, [B, T], { backend: b }), y: intTensor(ys, [B, T], { backend: b }) };
}

export function evaluate(model: DeepseekV2ForCausalLM, batches: Int32Array[], T: number): number {
  if (!batches.length) return NaN;
  const coef = { alpha1: 0, alpha2: 0, alpha3: 0 };
  let sum = 0;
  noGrad(() => {
    for (const rows of batches) {
      const B = rows.length / (T + 1);
      const { x, y } = toBatch(model.backend, rows, B, T);
      sum += objective(model, x, y, coef).lossCe.item(); // no dropping at evaluation (spec §6.3)
    }
  });
  return sum / batches.length;
}

type SavedRun = ReturnType<typeof readCheckpoint<TrainerState>>;

/**
 * A run's start: a new one, or a resume from the folder's last complete checkpoint. The saved options win (the run
 * must continue as it started), except the length of the run and the folder: a copied or moved run resumes where it
 * is now.
 */
function resumeOrStart(
  options: TrainOptions,
  backend: Backend,
  say: (m: string) => void,
): { opts: TrainOptions; saved: SavedRun | null; ckDir: string | null } {
  let opts = options;
  if (opts.resume && recoverCheckpoint(opts.out)) say(`recovered a checkpoint written just before an interruption`);
  const ckDir = opts.resume ? findCheckpoint(opts.out) : null;
  if (opts.resume && !ckDir) {
    const partial = partialCheckpoints(opts.out);
    if (partial.length)
      throw new Error(
        `--resume: ${opts.out} holds no complete checkpoint, only partial ones (${partial.join(', ')}); not starting a new run over them (move them away to start afresh)`,
      );
    say(`no checkpoint in ${opts.out}: starting a new run`);
  }
  let saved: SavedRun | null = null;
  if (ckDir) {
    saved = readCheckpoint<TrainerState>(ckDir, backend);
    saved.state = checkTrainerState(saved.state, ckDir);
    opts = {
      ...saved.state.options,
      out: options.out,
      resume: true,
      steps: opts.steps ?? saved.state.options.steps,
      backend: opts.backend,
    };
  }
  return { opts, saved, ckDir };
}

/** The run's data: corpus, tokenizer (the checkpoint's on resume), config, token streams and the validation set. */
function prepareData(opts: TrainOptions, saved: SavedRun | null, say: (m: string) => void) {
  const corpus = loadCorpus(opts.data);
  const { train: trainDocs, val: valDocs } = splitDocs(corpus, opts.valFraction);
  const base = preset(opts.preset, opts.config);
  const vocab = base.vocab_size;
  const tokenizer = saved
    ? Tokenizer.fromJSON(saved.tokenizerJson as TokenizerJson)
    : corpusTokenizer(opts, trainDocs, corpusHash(corpus), vocab, say);
  const bosId = tokenizer.idOf(BOS);
  const eosId = tokenizer.idOf(EOS);
  if (eosId === undefined || bosId === undefined) throw new Error('the tokenizer has no BOS/EOS special tokens');
  const config = parseConfig({ ...configToJson(base), bos_token_id: bosId, eos_token_id: eosId });
  if (opts.seq > config.max_position_embeddings)
    throw new Error(
      `--seq ${opts.seq} is longer than max_position_embeddings ${config.max_position_embeddings}: the model has no positions for it`,
    );
  if (tokenizer.vocabSize > config.vocab_size) {
    throw new Error(`the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${config.vocab_size}`);
  }
  say(`tokenizing ${corpus.name} (${trainDocs.length} train / ${valDocs.length} validation documents)…`);
  const trainTokens = tokenizeDocs(tokenizer, trainDocs, eosId, opts.cacheDir);
  const valTokens = tokenizeDocs(tokenizer, valDocs, eosId, opts.cacheDir);
  const stream = new BatchStream(trainTokens, opts.batch, opts.seq, opts.seed);
  const evalSet = evalBatches(valTokens, opts.batch, opts.seq, opts.evalBatches);

  return { tokenizer, config, trainTokens, valTokens, stream, evalSet };
}

export function train(options: TrainOptions, hooks: TrainHooks = {}): TrainResult {
  const say = hooks.onStatus ?? (() => {});
  mkdirSync(options.out, { recursive: true });
  const backend = options.backend ? loadBackend(options.backend) : defaultBackend();
  const { opts, saved, ckDir } = resumeOrStart(options, backend, say);
  const stale = cleanStaleTemps(opts.out);
  if (stale.length) say(`removed what an interrupted run left: ${stale.join(', ')}`);

  const { tokenizer, config, trainTokens, valTokens, stream, evalSet } = prepareData(opts, saved, say);

  const model = saved ? saved.model : DeepseekV2ForCausalLM.init(config, { seed: opts.seed, backend });
  const params = model.parameters();
  const arena = new BufferArena(backend);
  const opt = new AdamW(params, {
    lr: opts.lr,
    beta1: opts.beta1,
    beta2: opts.beta2,
    weightDecay: opts.weightDecay,
    maxGradNorm: opts.clip > 0 ? opts.clip : undefined,
  });
  const rng = new Rng(opts.seed + 7);
  const tokensPerStep = opts.batch * opts.seq * opts.gradAccum;
  let step = 0;
  let tokens = 0;
  let elapsedBefore = 0;
  let totalSteps = opts.steps ?? (opts.tokens ? Math.ceil(opts.tokens / tokensPerStep) : 0);
  if (saved) {
    saved.restoreOptimizer(opt);
    stream.seek(saved.state.data);
    rng.setState(saved.state.rng);
    step = saved.state.step;
    tokens = saved.state.tokens;
    elapsedBefore = saved.state.elapsedS;
    totalSteps = opts.steps ?? saved.state.totalSteps;
  }
  pinWeights(model); // from here only AdamW writes the weights: a copying backend (wasm) may keep them resident
  if (!totalSteps && !opts.minutes) throw new Error('say how long to train: steps, tokens or minutes');
  if (!(totalSteps >= 0) || !Number.isInteger(totalSteps))
    throw new Error(`the number of steps must be a whole number ≥ 1, got ${totalSteps}`);

  // metrics.jsonl: on resume keep only the lines of steps the checkpoint already includes
  const metricsFile = join(opts.out, 'metrics.jsonl');
  if (saved && existsSync(metricsFile)) {
    writeFileAtomic(
      metricsFile,
      metricsUpTo(metricsFile, step)
        .map((l) => l + '\n')
        .join(''),
    );
  } else if (!saved) writeFileSync(metricsFile, '');
  writeFileAtomic(join(opts.out, 'train_options.json'), JSON.stringify({ ...opts, resume: undefined }, null, 2) + '\n');

  const info: RunInfo = {
    config,
    tokenizer,
    backend,
    totalSteps,
    trainTokens: trainTokens.length,
    valTokens: valTokens.length,
    params: model.parameters().reduce((s, p) => s + p.size, 0),
    unigramLoss: unigramLoss(trainTokens, valTokens, config.vocab_size),
    resumedFrom: step,
  };
  hooks.onStart?.(info);

  let schedule: Schedule | null = totalSteps ? makeSchedule(opts.lr, totalSteps, opts.warmup, opts.decayAt) : null;
  const coef = { alpha1: opts.alpha1, alpha2: opts.alpha2, alpha3: opts.alpha3 };
  const Nr = config.n_routed_experts ?? 0;
  const now = hooks.clock ?? (() => performance.now());
  const started = now();
  let last: StepMetrics | null = null;
  let lastVal: number | null = null;
  let checkpoint = ckDir ?? '';
  let stopped = false;
  const state = (): TrainerState => ({
    step,
    tokens,
    totalSteps,
    data: stream.pos,
    rng: rng.getState(),
    elapsedS: elapsedBefore + (now() - started) / 1000,
    options: { ...opts, resume: undefined } as unknown as TrainerState['options'],
  });

  const planner = opts.minutes
    ? new MinutesPlanner({ minutes: opts.minutes, elapsedBefore, warmup: opts.warmup, decayAt: opts.decayAt }, now, started)
    : null;
  while (!schedule || step < schedule.totalSteps) {
    const t0 = now();
    // While the length of a --minutes run is being measured (6 steps), ramp as a 100-step warm-up would, so the
    // schedule fixed afterwards (3% of a few hundred steps) continues upward instead of dropping back.
    const lr = schedule ? lrAt(schedule, step) : (opts.lr * (step + 1)) / 100;
    let lossCe = 0;
    let lossTotal = 0;
    const lb = { exp: 0, dev: 0, comm: 0 };
    let dropped = 0;
    let assignments = 0;
    const layerCounts: number[][] = [];
    const { gradNorm } = trainStep(
      model,
      opt,
      () => {
        const { x, y } = toBatch(backend, stream.next(), opts.batch, opts.seq);
        const protectedRows = new Set<number>();
        for (let r = 0; r < opts.batch; r++) if (rng.uniform() < opts.protectedFraction) protectedRows.add(r);
        const drop: TokenDropping | undefined =
          opts.capacityFactor > 0 ? { capacityFactor: opts.capacityFactor, protectedRows } : undefined;
        return { x, y, drop };
      },
      {
        coef,
        micro: opts.gradAccum,
        arena,
        lr,
        onMicro: (o) => {
          const ce = o.lossCe.item();
          if (!Number.isFinite(ce)) {
            throw new TrainingDiverged(
              `the loss became ${ce} at step ${step + 1}; stopping. The last good checkpoint is ${checkpoint || '(none yet)'}; lower --lr or raise --warmup`,
            );
          }
          lossCe += ce / opts.gradAccum;
          lossTotal += o.lossTotal.item() / opts.gradAccum;
          for (const b of o.balance) {
            lb.exp += b.L_exp.item() / opts.gradAccum;
            lb.dev += b.L_dev.item() / opts.gradAccum;
            lb.comm += b.L_comm.item() / opts.gradAccum;
          }
          o.router.forEach((r, li) => {
            const counts = (layerCounts[li] ??= new Array<number>(Nr).fill(0));
            for (const e of r.chosen) counts[e]!++;
            dropped += r.dropped;
            assignments += r.indices.size;
          });
        },
      },
    );
    if (!Number.isFinite(gradNorm)) {
      throw new TrainingDiverged(
        `the gradient norm became ${gradNorm} at step ${step + 1}; stopping. The last good checkpoint is ${checkpoint || '(none yet)'}`,
      );
    }
    step++;
    tokens += tokensPerStep;
    const dt = (now() - t0) / 1000;
    if (step === 1) {
      // Step 1 grew the heap to its working size: put it in huge pages now (a one-time collapse of a second or
      // two for `small`), so that no later step, and not the --minutes plan from steps 2–6, pays for it.
      backend.adviseHugePages?.(true);
    }
    const planned = planner?.afterStep(step, totalSteps, schedule !== null) ?? null;
    if (planned !== null) {
      totalSteps = planned;
      info.totalSteps = totalSteps;
      schedule = makeSchedule(opts.lr, totalSteps, opts.warmup, opts.decayAt);
    }
    const m: StepMetrics = {
      step,
      tokens,
      loss: lossCe,
      loss_total: lossTotal,
      lr,
      tok_s: tokensPerStep / dt,
      grad_norm: gradNorm,
      load_max_over_mean: layerCounts.map((c) => Math.max(...c) / (c.reduce((a, b) => a + b, 0) / c.length)),
      expert_load: layerCounts.map((c) => {
        const total = c.reduce((a, b) => a + b, 0);
        return c.map((v) => Number((v / total).toFixed(5)));
      }),
      dropped_frac: assignments ? dropped / assignments : 0,
      l_exp: lb.exp,
      l_dev: lb.dev,
      l_comm: lb.comm,
      elapsed_s: elapsedBefore + (now() - started) / 1000,
    };
    const done = schedule !== null && step >= schedule.totalSteps;
    if (step % opts.evalEvery === 0 || done) {
      m.val_loss = evaluate(model, evalSet, opts.seq);
      lastVal = m.val_loss;
    }
    appendFileSync(metricsFile, JSON.stringify(m) + '\n');
    last = m;
    hooks.onStep?.(m, info);
    const stop = !done && hooks.shouldStop?.() === true;
    if (step % opts.checkpointEvery === 0 || done || stop)
      checkpoint = writeCheckpoint(opts.out, model, tokenizer, opt, state() as unknown as Record<string, unknown>, (p) =>
        hooks.onCheckpointPhase?.(p, step),
      );
    if (stop) {
      stopped = true;
      break;
    }
  }
  // a resume of a run that had already finished trains no step: its validation loss is measured here
  if (lastVal === null && !stopped && step > 0 && evalSet.length) lastVal = evaluate(model, evalSet, opts.seq);
  return { ...info, model, last, lastValLoss: lastVal, checkpoint: checkpoint || join(opts.out, 'checkpoint'), stopped };
}
