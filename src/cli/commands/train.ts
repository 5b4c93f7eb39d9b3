// `dsv2 train` and `dsv2 sample`: train a DeepSeek-V2 preset on a corpus with the live view, then sample from a
// run's checkpoint. Any training field (--lr, --batch, --capacity-factor, …) or config field (--num_hidden_layers=2,
// --n_routed_experts=16, …) can be overridden with --key=value; values are type-checked.
import { join } from 'node:path';
import { defaultBackend, loadBackend } from '../../backend/registry.js';
import { BUILTIN_CORPORA } from '../../data/corpus.js';
import { generate } from '../../infer/generate.js';
import { loadTokenizer, resolveModelDir } from '../../io/model-dir.js';
import { checkedSampling } from '../sampling.js';
import { configToJson } from '../../model/config.js';
import { loadModel } from '../../model/load.js';
import { preset, PRESET_NAMES } from '../../model/presets.js';
import { writeReport, readMetrics } from '../../train/report.js';
import { BOS, EOS, train, TRAIN_DEFAULTS, type TrainOptions, type TrainResult } from '../../train/trainer.js';
import { LiveView } from '../../train/view.js';
import { parseFlags, UsageError } from '../args.js';

/** Training fields that count something: integers ≥ 1. */
const COUNTS = ['batch', 'seq', 'gradAccum', 'evalEvery', 'evalBatches', 'checkpointEvery'];

const kebab = (s: string): string => s.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());

const TRAIN_HELP: Record<string, string> = {
  batch: 'sequences per micro-batch',
  seq: 'tokens per sequence',
  gradAccum: 'micro-batches per optimizer step',
  lr: 'peak learning rate',
  warmup: 'warm-up, as a fraction of the steps',
  decayAt: 'fractions of training after which lr ×0.316 (comma-separated)',
  weightDecay: 'AdamW weight decay (tensors with ≥ 2 dims)',
  beta1: 'AdamW β1',
  beta2: 'AdamW β2',
  clip: 'global gradient-norm clip (0: off)',
  alpha1: 'expert-level balance loss weight',
  alpha2: 'device-level balance loss weight',
  alpha3: 'communication balance loss weight',
  capacityFactor: 'device capacity factor for token dropping (0: off; paper 1.0)',
  protectedFraction: 'share of sequences never dropped',
  valFraction: 'share of documents held out for validation',
  evalEvery: 'validate every N steps',
  evalBatches: 'validation batches',
  checkpointEvery: 'checkpoint every N steps',
  seed: 'random seed',
  cacheDir: 'tokenizer and token cache folder',
};

/** Parse train flags into TrainOptions; unknown keys that name config fields become config overrides. */
export function parseTrainArgs(argv: string[], base: Partial<TrainOptions> = {}): TrainOptions & { threads?: number } {
  const config: Record<string, unknown> = {};
  const rest: string[] = [];
  const presetName = (() => {
    const i = argv.findIndex((a) => a === '--preset' || a.startsWith('--preset='));
    if (i < 0) return base.preset ?? 'small';
    return argv[i]!.includes('=') ? argv[i]!.slice('--preset='.length) : (argv[i + 1] ?? '');
  })();
  if (!PRESET_NAMES.includes(presetName)) throw new UsageError(`unknown preset '${presetName}' (known: ${PRESET_NAMES.join(', ')})`);
  const configKeys = new Set(Object.keys(configToJson(preset(presetName))));
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf('=');
    const key = a.startsWith('--') ? a.slice(2, eq < 0 ? undefined : eq) : '';
    if (key && configKeys.has(key)) {
      const raw = eq >= 0 ? a.slice(eq + 1) : argv[++i];
      if (raw === undefined) throw new UsageError(`--${key} needs a value`);
      let v: unknown = raw;
      try {
        v = JSON.parse(raw);
      } catch {
        // a plain string (e.g. --topk_method=greedy)
      }
      config[key] = v;
    } else rest.push(a);
  }
  const spec: Parameters<typeof parseFlags>[1] = {
    preset: { type: 'string', help: `model preset (${PRESET_NAMES.join(', ')})` },
    data: { type: 'string', help: `${Object.keys(BUILTIN_CORPORA).join(' | ')} | a .txt/.jsonl file or folder` },
    out: { type: 'string', help: 'run folder' },
    steps: { type: 'int', help: 'optimizer steps' },
    tokens: { type: 'int', help: 'training tokens' },
    minutes: { type: 'number', help: 'wall-clock minutes' },
    resume: { type: 'bool', help: 'continue from the run folder’s last checkpoint' },
    backend: { type: 'string', help: 'ts | native' },
    threads: { type: 'int', help: 'kernel threads' },
  };
  for (const [k, v] of Object.entries(TRAIN_DEFAULTS)) {
    if (k === 'resume') continue;
    spec[kebab(k)] = {
      type: typeof v !== 'number' ? 'string' : COUNTS.includes(k) || k === 'seed' ? 'int' : 'number',
      help: TRAIN_HELP[k] ?? k,
    };
  }
  const { flags, positional } = parseFlags(rest, spec);
  if (positional.length) throw new UsageError(`unexpected argument '${positional[0]}'`);
  const o: TrainOptions & { threads?: number } = {
    ...TRAIN_DEFAULTS,
    ...base,
    preset: presetName,
    config: { ...(base.config ?? {}), ...config },
    data: (flags['data'] as string | undefined) ?? base.data ?? 'moby-dick',
    out: (flags['out'] as string | undefined) ?? base.out ?? '',
    resume: flags['resume'] === true,
  };
  for (const k of ['steps', 'tokens', 'minutes', 'backend', 'threads'] as const)
    if (flags[k] !== undefined) (o as unknown as Record<string, unknown>)[k] = flags[k];
  for (const k of ['steps', 'tokens'] as const)
    if (o[k] !== undefined && !((o[k] as number) >= 1)) throw new UsageError(`--${k} must be at least 1, got ${o[k]}`);
  if (o.minutes !== undefined && !(o.minutes > 0)) throw new UsageError(`--minutes must be > 0, got ${o.minutes}`);
  if (o.threads !== undefined && !(o.threads >= 1 && o.threads <= 1024))
    throw new UsageError(`--threads must be in [1, 1024], got ${o.threads}`);
  for (const k of Object.keys(TRAIN_DEFAULTS)) {
    const v = flags[kebab(k)];
    if (v === undefined) continue;
    if (k === 'decayAt') {
      const parts = String(v).split(',').map(Number);
      if (parts.some((p) => !(p > 0 && p < 1))) throw new UsageError(`--decay-at expects fractions in (0, 1), got '${v}'`);
      o.decayAt = parts;
    } else if (k === 'cacheDir') o.cacheDir = String(v);
    else {
      if ((v as number) < 0 || (COUNTS.includes(k) && (v as number) < 1)) {
        throw new UsageError(`--${kebab(k)} is out of range: ${v}`);
      }
      const open01 = ['beta1', 'beta2'];
      const unit = ['warmup', 'protectedFraction', 'valFraction'];
      if (open01.includes(k) && !((v as number) < 1)) throw new UsageError(`--${kebab(k)} must be in [0, 1), got ${v}`);
      if (unit.includes(k) && !((v as number) < 1)) throw new UsageError(`--${kebab(k)} must be in [0, 1), got ${v}`);
      if (k === 'lr' && !((v as number) > 0)) throw new UsageError(`--lr must be > 0, got ${v}`);
      (o as unknown as Record<string, unknown>)[k] = v;
    }
  }
  // a resumed run continues with its saved options: refuse to pretend it takes new ones
  if (o.resume) {
    const given = [
      ...Object.keys(TRAIN_DEFAULTS)
        .filter((k) => k !== 'resume' && flags[kebab(k)] !== undefined)
        .map((k) => `--${kebab(k)}`),
      ...Object.keys(config).map((k) => `--${k}`),
      ...['preset', 'data'].filter((f) => argv.some((a) => a === `--${f}` || a.startsWith(`--${f}=`))).map((f) => `--${f}`),
    ];
    if (given.length)
      throw new UsageError(
        `--resume continues with the run's saved options; drop ${given.join(', ')} (only --steps, --tokens, --minutes, --backend and --threads may change)`,
      );
  }
  if (!o.out) throw new UsageError('--out DIR is required (the run folder)');
  if (!o.resume && o.steps === undefined && o.tokens === undefined && o.minutes === undefined) {
    throw new UsageError('say how long to train: --steps N, --tokens N or --minutes M');
  }
  // validate the config overrides now, with one clear message
  try {
    preset(presetName, o.config);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  return o;
}

export interface RunOutcome {
  result: TrainResult;
  report: string;
  samples: { prompt: string; text: string }[];
  /** The signal that stopped the run early (SIGINT 2, SIGTERM 15), or 0. */
  signal: number;
}

export const SAMPLE_PROMPTS = ['Call me', 'The whale', 'It was'];

/** One prompt per domain of the mixed corpus, in each domain's own form (a Tang poem starts with title and poet). */
export const MIX_PROMPTS = ['Call me Ishmael.', '春望\n杜甫\n', 'export function ', 'Solve 3x - 7 = 11.\n'];

/** The sample prompts of a corpus. */
export function samplePrompts(data: string): string[] {
  return data === 'mix' || data.startsWith('mix:') ? MIX_PROMPTS : SAMPLE_PROMPTS;
}

function trainWithView(o: TrainOptions, view: LiveView, shouldStop: () => boolean): TrainResult {
  return train(o, {
    onStatus: (msg) => view.note(msg),
    onStart: (info) =>
      view.note(
        `model: ${o.preset} preset, ${(info.params / 1e6).toFixed(2)} M parameters, ${info.config.n_routed_experts} routed experts (top-${info.config.num_experts_per_tok}, ` +
          `${info.config.n_group} devices, ≤ ${info.config.topk_group} per token) + ${info.config.n_shared_experts} shared; backend ${info.backend.name} ` +
          `(${info.backend.threads?.() ?? 1} threads)\n` +
          `data: ${info.trainTokens.toLocaleString('en-US')} training / ${info.valTokens.toLocaleString('en-US')} validation tokens; ` +
          `${info.resumedFrom ? `resuming at step ${info.resumedFrom}` : 'starting'} (${info.totalSteps || '?'} steps planned)`,
      ),
    onStep: (m, info) => view.update(m, info),
    shouldStop,
  });
}

function writeRunReport(o: TrainOptions, result: TrainResult, samples: { prompt: string; text: string }[]): string {
  const metrics = readMetrics(join(o.out, 'metrics.jsonl'));
  const last = result.last;
  const report = join(o.out, 'report.html');
  writeReport(report, {
    title: `deepseek-v2-ts: ${o.preset} on ${o.data}`,
    metrics,
    unigramLoss: result.unigramLoss,
    summary: {
      preset: o.preset,
      data: o.data,
      parameters: result.params.toLocaleString('en-US'),
      steps: last?.step ?? 0,
      tokens: (last?.tokens ?? 0).toLocaleString('en-US'),
      'final train loss': last ? last.loss.toFixed(4) : '—',
      'final validation loss': result.lastValLoss?.toFixed(4) ?? '—',
      'unigram baseline': result.unigramLoss.toFixed(4),
      'balance losses (α1, α2, α3)': `${o.alpha1}, ${o.alpha2}, ${o.alpha3}`,
      'token dropping': o.capacityFactor > 0 ? `capacity factor ${o.capacityFactor}` : 'off',
      backend: `${result.backend.name} (${result.backend.threads?.() ?? 1} threads)`,
    },
    samples,
  });
  return report;
}

/** Train with the live view, write the report with samples; shared by `dsv2 train` and `npm start`. */
export function runTraining(o: TrainOptions & { threads?: number }, sampleTokensCount = 60): RunOutcome {
  const backend = o.backend ? loadBackend(o.backend) : defaultBackend();
  if (o.threads !== undefined) backend.setThreads?.(o.threads);
  const view = new LiveView();
  // Ctrl-C / SIGTERM end the run after the current step with a last checkpoint (the native backend records the
  // signal during the synchronous loop; without it the default handling stands and the last periodic checkpoint
  // is what remains)
  const watch = backend.watchStopSignals?.();
  let result: TrainResult;
  try {
    result = trainWithView(o, view, () => (watch?.received() ?? 0) !== 0);
  } finally {
    watch?.restore();
  }
  const signal = result.stopped ? (watch?.received() ?? 0) : 0;
  if (result.stopped) return { result, report: writeRunReport(o, result, []), samples: [], signal };
  const tok = result.tokenizer;
  const bos = tok.idOf(BOS)!;
  const samples = samplePrompts(o.data).map((prompt) => {
    const [ids] = generate(result.model, [tok.encode(prompt, { addBos: true, bosId: bos })], {
      maxNewTokens: sampleTokensCount,
      params: { temperature: 0.8, topK: 40, topP: 0.95, seed: 1 },
      stopAtEos: true,
      eosTokenIds: [tok.idOf(EOS)!],
    });
    return { prompt, text: tok.decode(ids!, { skipSpecial: true }) };
  });
  return { result, report: writeRunReport(o, result, samples), samples, signal: 0 };
}

/** A sample as a terminal shows it safely: control characters (a small model emits any byte) as U+FFFD. */
export function printable(s: string): string {
  return s.replace(/[^\n\t -~\u0080-\u{10ffff}]|[\u0080-\u009f]/gu, '\ufffd');
}

/** The exit line and code of a run a signal stopped (128 + the signal, as a shell reports it). */
export function stoppedExit(o: TrainOptions, out: RunOutcome): number {
  const step = out.result.last?.step ?? 0;
  console.log(
    `\nstopped by ${out.signal === 15 ? 'SIGTERM' : 'SIGINT'} after step ${step}; checkpoint: ${out.result.checkpoint} ` +
      `(continue with: dsv2 train --out ${o.out} --resume)`,
  );
  return 128 + (out.signal || 2);
}

export function runTrain(argv: string[]): number {
  const o = parseTrainArgs(argv);
  const outcome = runTraining(o);
  if (outcome.signal) return stoppedExit(o, outcome);
  const { result, report, samples } = outcome;
  const last = result.last;
  console.log(
    `\ndone: ${last?.step ?? 0} steps, train loss ${last?.loss.toFixed(3)}, validation loss ${result.lastValLoss?.toFixed(3) ?? '—'} ` +
      `(unigram baseline ${result.unigramLoss.toFixed(3)})`,
  );
  for (const s of samples) console.log(`\n> ${printable(s.prompt + s.text)}`);
  console.log(`\ncheckpoint: ${result.checkpoint}\nreport:     ${report}\nmetrics:    ${join(o.out, 'metrics.jsonl')}`);
  return 0;
}

/** The model directory of a run folder (its checkpoint) or a plain HF model directory. */
export const modelDir = resolveModelDir;

export function runSample(argv: string[]): number {
  const { flags, positional } = parseFlags(argv, {
    model: { type: 'string', help: 'run folder or model directory' },
    prompt: { type: 'string', help: 'text to continue' },
    'max-new-tokens': { type: 'int', help: 'tokens to generate (default 200)' },
    temperature: { type: 'number', help: 'sampling temperature (0: greedy; default 0.8)' },
    'top-k': { type: 'int', help: 'keep the k most likely tokens (default 40; 0: all)' },
    'top-p': { type: 'number', help: 'nucleus mass (default 0.95)' },
    'min-p': { type: 'number', help: 'drop tokens below this fraction of the top probability (default 0)' },
    'repetition-penalty': { type: 'number', help: '> 1 discourages repeats (default 1)' },
    seed: { type: 'int', help: 'random seed (default 0)' },
    backend: { type: 'string', help: 'ts | native' },
  });
  if (positional.length) throw new UsageError(`unexpected argument '${positional[0]}'`);
  if (!flags['model']) throw new UsageError('--model DIR is required');
  const prompt = (flags['prompt'] as string | undefined) ?? '';
  const params = checkedSampling(
    {
      temperature: (flags['temperature'] as number | undefined) ?? 0.8,
      topK: (flags['top-k'] as number | undefined) ?? 40,
      topP: (flags['top-p'] as number | undefined) ?? 0.95,
      minP: flags['min-p'] as number | undefined,
      repetitionPenalty: flags['repetition-penalty'] as number | undefined,
      seed: (flags['seed'] as number | undefined) ?? 0,
      maxTokens: (flags['max-new-tokens'] as number | undefined) ?? 200,
    },
    '--max-new-tokens',
  );
  const dir = modelDir(flags['model'] as string);
  const tok = loadTokenizer(dir);
  const backend = flags['backend'] ? loadBackend(flags['backend'] as string) : defaultBackend();
  const model = loadModel(dir, { backend, trainable: false });
  const bos = tok.idOf(BOS) ?? model.config.bos_token_id;
  const ids = tok.encode(prompt, bos !== undefined && bos !== null ? { addBos: true, bosId: bos } : {});
  process.stdout.write(prompt);
  // the engine's events carry whole UTF-8 characters: print them as they come
  generate(model, [ids], {
    maxNewTokens: params.maxTokens,
    params,
    stopAtEos: true,
    eosTokenIds: [tok.idOf(EOS) ?? model.config.eos_token_id ?? -1],
    tokenizer: tok,
    onEvent: (e) => process.stdout.write(e.text),
  });
  process.stdout.write('\n');
  return 0;
}
