// `dsv2 experiment NAME`: the paper's claims as ablations in miniature. Every variant of an experiment trains on the
// same data (the mixed corpus), with the same tokenizer, token budget, schedule and seeds; only the named part of
// the model or of the objective changes, and the FFN variants keep the activated parameters equal. Each run is a
// normal training run folder (resumable), and its result.json is written once it has finished, so an interrupted
// experiment continues where it stopped.
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { configToJson, isMoeLayer, parseConfig, type DeepseekV2Config } from '../model/config.js';
import { cacheWidth } from '../model/attention.js';
import { loadBackend } from '../backend/registry.js';
import { loadTokenizer } from '../io/model-dir.js';
import { loadModel } from '../model/load.js';
import { preset } from '../model/presets.js';
import { paramCounts } from '../model/weights.js';
import { readMetrics } from './report.js';
import { train, TRAIN_DEFAULTS, TrainingDiverged, type StepMetrics, type TrainOptions, type TrainResult } from './trainer.js';

export const EXPERIMENT_NAMES = ['attention', 'ffn', 'balance', 'devices'] as const;
export type ExperimentName = (typeof EXPERIMENT_NAMES)[number];

/** What every variant shares at one scale: the preset and overrides, data, budget, batch shape and seeds. */
export interface Scale {
  name: string;
  preset: string;
  config: Record<string, unknown>;
  data: string;
  tokens: number;
  batch: number;
  seq: number;
  seeds: number[];
  evalBatches: number;
  /** Tokens of each domain routed for the specialisation score. */
  expertTokens: number;
}

export const SCALES: Record<string, Scale> = {
  // a `small` DeepSeek-V2 (4 layers, d 256, 32 routed + 2 shared experts, top-4 of 4 groups) on the mixed corpus
  small: {
    name: 'small',
    preset: 'small',
    config: { initializer_range: 0.02 },
    data: 'mix',
    tokens: 2_000_000,
    batch: 8,
    seq: 256,
    seeds: [0, 1],
    evalBatches: 24,
    expertTokens: 16384,
  },
  // seconds per variant: the test suite runs every experiment end to end at this size
  micro: {
    name: 'micro',
    preset: 'tiny',
    config: { vocab_size: 300, max_position_embeddings: 64 },
    data: 'mix:6k',
    tokens: 4 * 4 * 32,
    batch: 4,
    seq: 32,
    seeds: [0],
    evalBatches: 2,
    expertTokens: 256,
  },
};

export interface Variant {
  name: string;
  about: string;
  /** Config fields over the scale's. */
  config: Record<string, unknown>;
  /** Training fields over the experiment's. */
  train: Partial<TrainOptions>;
}

export interface Experiment {
  name: ExperimentName;
  about: string;
  /** The columns of its table beyond validation loss. */
  columns: (keyof RunResult)[];
  variants: Variant[];
  /** Training fields every variant shares. */
  train: Partial<TrainOptions>;
}

/** What the experiments hold fixed unless a variant changes it: a moderate α1, no token dropping. */
const COMMON: Partial<TrainOptions> = { alpha1: 0.01, alpha2: 0.05, alpha3: 0.02, capacityFactor: 0 };

/** The experiments over a base config (the scale's), with the variants' fields derived from it. */
export function experiment(name: ExperimentName, base: DeepseekV2Config): Experiment {
  const L = base.num_hidden_layers;
  const Nr = base.n_routed_experts ?? 0;
  const K = base.num_experts_per_tok ?? 0;
  const Ns = base.n_shared_experts ?? 0;
  const I = base.moe_intermediate_size;
  switch (name) {
    case 'attention': {
      // The baselines use one head dim for q, k and v (qk_nope + qk_rope = v_head_dim, the RoPE half of it as MLA's
      // decoupled key has); MLA keeps the preset's shapes.
      const dv = base.v_head_dim;
      const dr = Math.min(base.qk_rope_head_dim, 2 * Math.floor(dv / 4)); // RoPE rotates pairs: an even width
      const heads = { qk_nope_head_dim: dv - dr, qk_rope_head_dim: dr };
      const H = base.num_attention_heads;
      const groups = H / 4; // small: 8 heads in 2 groups
      const gqa: Variant[] =
        Number.isInteger(groups) && groups > 1
          ? [
              {
                name: 'gqa',
                about: `GQA, ${groups} K/V groups`,
                config: { attention_type: 'gqa', num_key_value_heads: groups, ...heads },
                train: {},
              },
            ]
          : []; // too few heads for a GQA between MHA and MQA
      return {
        name,
        about: 'MLA against MHA, GQA and MQA: validation loss and the KV cache per token',
        columns: ['kvElementsPerToken', 'kvBytesPerToken', 'totalParams', 'activatedParams', 'tokS'],
        train: COMMON,
        variants: [
          { name: 'mla', about: `MLA (d_c ${base.kv_lora_rank}, d_rope ${base.qk_rope_head_dim})`, config: {}, train: {} },
          { name: 'mha', about: `MHA, ${H} K/V heads`, config: { attention_type: 'mha', ...heads }, train: {} },
          ...gqa,
          { name: 'mqa', about: 'MQA, one K/V head', config: { attention_type: 'mqa', ...heads }, train: {} },
        ],
      };
    }
    case 'ffn': {
      // equal activated FFN width: GShard's two experts together are as wide as DeepSeekMoE's shared + top-K
      // experts; its expert count keeps the total expert parameters (as in the DeepSeekMoE paper's comparison);
      // the dense model's every layer has the mean activated width of the MoE model's layers
      const active = (Ns + K) * I;
      const gshardI = Math.floor(active / 2); // (a width of half a unit less when the active width is odd)
      const gshardN = Math.max(2, Math.floor(((Nr + Ns) * I) / gshardI));
      let denseWidth = 0;
      for (let i = 0; i < L; i++) denseWidth += isMoeLayer(base, i) ? active : base.intermediate_size;
      return {
        name,
        about: 'DeepSeekMoE (fine-grained + shared experts) against GShard-style top-2 and a dense FFN, at equal activated parameters',
        columns: ['specialisation', 'nmi', 'activatedParams', 'totalParams', 'loadMaxOverMean', 'tokS'],
        train: COMMON,
        variants: [
          { name: 'deepseekmoe', about: `${Nr} routed × ${I} + ${Ns} shared, top-${K}`, config: {}, train: {} },
          {
            name: 'gshard',
            about: `${gshardN} experts × ${gshardI}, top-2, no shared experts`,
            config: {
              n_routed_experts: gshardN,
              moe_intermediate_size: gshardI,
              n_shared_experts: 0,
              num_experts_per_tok: 2,
              topk_method: 'greedy',
              n_group: 1,
              topk_group: 1,
            },
            train: {},
          },
          {
            name: 'dense',
            about: `dense SwiGLU FFN, width ${Math.round(denseWidth / L)} in every layer`,
            config: { first_k_dense_replace: L, intermediate_size: Math.round(denseWidth / L) },
            train: {},
          },
        ],
      };
    }
    case 'balance': {
      const sweep = [0.001, 0.003, 0.01, 0.03, 0.1];
      return {
        name,
        about: 'the three balance losses on and off, and a sweep of α1, with device-level token dropping (capacity 1.0)',
        columns: ['loadMaxOverMean', 'droppedFrac', 'lExp'],
        train: { ...COMMON, capacityFactor: 1.0 },
        variants: [
          { name: 'off', about: 'no balance losses', config: {}, train: { alpha1: 0, alpha2: 0, alpha3: 0 } },
          ...sweep.map((a) => ({ name: `a1=${a}`, about: `α1 ${a}, α2 0.05, α3 0.02`, config: {}, train: { alpha1: a } })),
        ],
      };
    }
    case 'devices': {
      const D = base.n_group;
      return {
        name,
        about: `device-limited routing: each token's experts on at most M of ${D} devices, against unrestricted top-${K}`,
        columns: ['loadMaxOverMean', 'lDev', 'tokS'],
        train: COMMON,
        variants: [
          ...Array.from({ length: Math.max(0, D - 1) }, (_, m) => ({
            name: `M=${m + 1}`,
            about: `top-${K} within the best ${m + 1} of ${D} devices`,
            config: { topk_method: 'group_limited_greedy', n_group: D, topk_group: m + 1 },
            train: {},
          })).filter((v) => (v.config.topk_group * Nr) / D >= K),
          { name: 'unrestricted', about: `plain top-${K} over all ${Nr} experts`, config: { topk_method: 'greedy' }, train: {} },
        ],
      };
    }
  }
}

/** One finished run's numbers. */
export interface RunResult {
  variant: string;
  seed: number;
  steps: number;
  tokens: number;
  valLoss: number;
  /** Mean training cross-entropy over the last 10% of steps. */
  trainLoss: number;
  tokS: number;
  seconds: number;
  totalParams: number;
  activatedParams: number;
  kvElementsPerToken: number;
  /** At bf16, as the released checkpoints are served. */
  kvBytesPerToken: number;
  /** max/mean expert load, averaged over MoE layers and the last 10% of steps; null without MoE layers. */
  loadMaxOverMean: number | null;
  droppedFrac: number;
  lExp: number;
  lDev: number;
  /** Mean I(expert; domain) / H(domain) over the MoE layers (dsv2 experts); null without MoE layers. */
  specialisation: number | null;
  /** Mean NMI between expert choice and domain over the MoE layers; null without MoE layers. */
  nmi: number | null;
  /** Validation loss of each domain of the held-out text (dsv2 experts' routing), by domain name. */
  domainLoss?: Record<string, number | null>;
  /** Set when the run diverged (its message); its numbers are then those of its last steps. */
  diverged?: string;
}

export interface ExperimentOptions {
  name: ExperimentName;
  scale: Scale;
  out: string;
  /** Override the scale's budget or seeds. */
  tokens?: number;
  seeds?: number[];
  /** Only these variants (names). */
  only?: string[];
  backend?: string;
  cacheDir?: string;
  onStatus?: (msg: string) => void;
  onStep?: (run: string, m: StepMetrics, totalSteps: number) => void;
  /** Checked after every step: true stops the run there (its checkpoint stays; a rerun resumes it). */
  shouldStop?: () => boolean;
  /** A finished model's specialisation scores (means over its MoE layers; null without MoE layers) and loss by
   * domain (dsv2 experts); injected to keep this module off the CLI. */
  specialisation?: (r: Pick<TrainResult, 'model' | 'tokenizer'>, scale: Scale) => DomainScores;
}

const mean = (xs: number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

/** The config a variant trains, as the trainer will build it (for counts before training). */
export function variantConfig(scale: Scale, v: Variant): DeepseekV2Config {
  return parseConfig({ ...configToJson(preset(scale.preset, scale.config)), ...v.config });
}

export interface DomainScores {
  specialisation: number | null;
  nmi: number | null;
  domainLoss: Record<string, number | null>;
}

function resultOf(
  v: Variant,
  seed: number,
  r: Pick<TrainResult, 'config' | 'lastValLoss'>,
  metrics: StepMetrics[],
  spec: DomainScores | null,
): RunResult {
  const c = r.config;
  const counts = paramCounts(c);
  const tail = metrics.slice(-Math.max(1, Math.round(metrics.length / 10)));
  const moe = tail[0]?.load_max_over_mean.length ? tail.map((m) => mean(m.load_max_over_mean)) : [];
  const kvElements = cacheWidth(c) * c.num_hidden_layers;
  const last = metrics[metrics.length - 1];
  return {
    variant: v.name,
    seed,
    steps: last?.step ?? 0,
    tokens: last?.tokens ?? 0,
    valLoss: r.lastValLoss ?? [...metrics].reverse().find((m) => m.val_loss !== undefined)?.val_loss ?? NaN,
    trainLoss: mean(tail.map((m) => m.loss)),
    tokS: mean(metrics.slice(1).map((m) => m.tok_s)),
    seconds: last?.elapsed_s ?? 0,
    totalParams: counts.total_params,
    activatedParams: counts.activated_params,
    kvElementsPerToken: kvElements,
    kvBytesPerToken: 2 * kvElements,
    loadMaxOverMean: moe.length ? mean(moe) : null,
    droppedFrac: mean(tail.map((m) => m.dropped_frac)),
    lExp: mean(tail.map((m) => m.l_exp)),
    lDev: mean(tail.map((m) => m.l_dev)),
    specialisation: spec?.specialisation ?? null,
    nmi: spec?.nmi ?? null,
    ...(spec ? { domainLoss: spec.domainLoss } : {}),
  };
}

/** The run folder of one (variant, seed). */
export function runDir(out: string, variant: string, seed: number): string {
  return join(out, `${variant.replace(/[^A-Za-z0-9._=-]/g, '_')}-seed${seed}`);
}

/**
 * A run folder made with another budget, scale or variant must not be continued or reused as if it were this one
 * (a resume keeps the saved options): one message naming the field and both values.
 */
const COMPARED = ['batch', 'seq', 'lr', 'alpha1', 'alpha2', 'alpha3', 'capacityFactor', 'evalBatches'] as const;

function checkSameRun(dir: string, want: Record<string, unknown>): void {
  const file = join(dir, 'train_options.json');
  if (!existsSync(file)) return;
  let had: Partial<TrainOptions>;
  try {
    had = JSON.parse(readFileSync(file, 'utf8')) as Partial<TrainOptions>;
  } catch {
    throw new Error(`${file} is not valid JSON: move ${dir} away to train that run afresh`);
  }
  for (const [k, b] of Object.entries(want)) {
    const a = (had as Record<string, unknown>)[k];
    if (JSON.stringify(a) !== JSON.stringify(b))
      throw new Error(
        `${dir} was trained with ${k} ${JSON.stringify(a)}, this experiment asks for ${JSON.stringify(b)}: rerun with the same settings, or give another --out`,
      );
  }
}

/** Runs (or resumes) every variant × seed; returns every finished run's result, in order. */
export function runExperiment(o: ExperimentOptions): { experiment: Experiment; results: RunResult[]; stopped: boolean } {
  const base = preset(o.scale.preset, o.scale.config);
  const ex = experiment(o.name, base);
  const variants = o.only?.length ? ex.variants.filter((v) => o.only!.includes(v.name)) : ex.variants;
  if (o.only?.length) {
    const unknown = o.only.filter((n) => !ex.variants.some((v) => v.name === n));
    if (unknown.length)
      throw new Error(`experiment ${o.name} has no variant ${unknown.join(', ')} (it has ${ex.variants.map((v) => v.name).join(', ')})`);
  }
  for (const v of variants) variantConfig(o.scale, v); // every config is valid before anything trains
  const seeds = o.seeds ?? o.scale.seeds;
  const tokens = o.tokens ?? o.scale.tokens;
  mkdirSync(o.out, { recursive: true });
  const results: RunResult[] = [];
  for (const v of variants) {
    for (const seed of seeds) {
      const dir = runDir(o.out, v.name, seed);
      const resultFile = join(dir, 'result.json');
      const trainFields = {
        ...TRAIN_DEFAULTS,
        ...ex.train,
        ...v.train,
        batch: o.scale.batch,
        seq: o.scale.seq,
        evalBatches: o.scale.evalBatches,
      };
      checkSameRun(dir, {
        tokens,
        preset: o.scale.preset,
        data: o.scale.data,
        config: { ...o.scale.config, ...v.config },
        ...Object.fromEntries(COMPARED.map((k) => [k, trainFields[k]])),
      });
      if (existsSync(resultFile)) {
        let res = readResult(resultFile);
        const ck = join(dir, 'checkpoint');
        if (!res.domainLoss && !res.diverged && o.specialisation && existsSync(join(ck, 'config.json'))) {
          // a result written before the loss by domain was measured: measure it on the finished checkpoint
          const model = loadModel(ck, { trainable: false, ...(o.backend ? { backend: loadBackend(o.backend) } : {}) });
          const s = o.specialisation({ model, tokenizer: loadTokenizer(ck) }, o.scale);
          res = { ...res, specialisation: s.specialisation, nmi: s.nmi, domainLoss: s.domainLoss };
          writeFileAtomic(resultFile, JSON.stringify(res, null, 2) + '\n');
        }
        results.push(res);
        o.onStatus?.(`${v.name} seed ${seed}: done before, kept`);
        continue;
      }
      const opts: TrainOptions = {
        ...trainFields,
        preset: o.scale.preset,
        config: { ...o.scale.config, ...v.config },
        data: o.scale.data,
        out: dir,
        tokens,
        seed,
        evalEvery: 1_000_000, // once, at the end, on the same evaluation batches for every variant
        checkpointEvery: 100,
        resume: existsSync(dir),
        ...(o.backend ? { backend: o.backend } : {}),
        ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}),
      };
      o.onStatus?.(`${v.name} seed ${seed}: ${v.about}`);
      let r: TrainResult;
      try {
        r = train(opts, {
          onStatus: o.onStatus,
          onStep: (m, info) => o.onStep?.(`${v.name} seed ${seed}`, m, info.totalSteps),
          shouldStop: o.shouldStop,
        });
      } catch (e) {
        if (!(e instanceof TrainingDiverged)) throw e;
        // a diverged variant is a result (the losses it reached), not a reason to stop the other variants
        o.onStatus?.(`${v.name} seed ${seed}: diverged: ${e.message}`);
        const metrics = readMetrics(join(dir, 'metrics.jsonl'));
        const res = { ...resultOf(v, seed, { config: variantConfig(o.scale, v), lastValLoss: null }, metrics, null), diverged: e.message };
        writeFileAtomic(resultFile, JSON.stringify(res, null, 2) + '\n');
        results.push(res);
        continue;
      }
      if (r.stopped) return { experiment: ex, results, stopped: true };
      const metrics = readMetrics(join(dir, 'metrics.jsonl'));
      const res = resultOf(v, seed, r, metrics, o.specialisation ? o.specialisation(r, o.scale) : null);
      writeFileAtomic(resultFile, JSON.stringify(res, null, 2) + '\n');
      results.push(res);
    }
  }
  return { experiment: ex, results, stopped: false };
}

function readResult(file: string): RunResult {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as RunResult;
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message}); delete it to run that variant again`);
  }
}

/** Every finished run in `out` of the experiment's variants (any seed), in variant then seed order: the report
 * covers them all, also after a rerun with --only or --seeds. */
export function collectResults(out: string, ex: Experiment): RunResult[] {
  if (!existsSync(out)) return [];
  const entries = readdirSync(out);
  const results: RunResult[] = [];
  for (const v of ex.variants) {
    const prefix = runDir('', v.name, 0).replace(/0$/, '');
    const seeds = entries
      .filter((e) => e.startsWith(prefix) && /^\d+$/.test(e.slice(prefix.length)))
      .map((e) => Number(e.slice(prefix.length)))
      .sort((a, b) => a - b);
    for (const s of seeds) {
      const f = join(runDir(out, v.name, s), 'result.json');
      if (existsSync(f)) results.push(readResult(f));
    }
  }
  return results;
}

/** Per variant: the mean and the spread (max − min) over seeds of each numeric field. */
export function summarise(
  results: RunResult[],
): { variant: string; seeds: number; mean: Record<string, number | null>; spread: Record<string, number | null> }[] {
  const names = [...new Set(results.map((r) => r.variant))];
  return names.map((variant) => {
    const rs = results.filter((r) => r.variant === variant);
    const meanOut: Record<string, number | null> = {};
    const spread: Record<string, number | null> = {};
    for (const k of Object.keys(rs[0]!) as (keyof RunResult)[]) {
      if (k === 'variant' || k === 'seed') continue;
      const xs = rs.map((r) => r[k]).filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
      meanOut[k] = xs.length ? mean(xs) : null;
      spread[k] = xs.length ? Math.max(...xs) - Math.min(...xs) : null;
    }
    return { variant, seeds: rs.length, mean: meanOut, spread };
  });
}
