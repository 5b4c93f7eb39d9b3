// `dsv2 experiment NAME`: run (or resume) an ablation of train/experiments.ts and write its report, results.json and
// the Markdown table for docs/experiments.md.
import { join } from 'node:path';
import { defaultBackend, loadBackend } from '../../backend/registry.js';
import { writeFileAtomic } from '../../io/atomic.js';
import {
  collectResults,
  EXPERIMENT_NAMES,
  runExperiment,
  SCALES,
  summarise,
  type DomainScores,
  type ExperimentName,
  type Scale,
} from '../../train/experiments.js';
import { markdownTable, writeExperimentReport } from '../../train/experiment-report.js';
import type { TrainResult } from '../../train/trainer.js';
import { parseFlags, UsageError } from '../args.js';
import { expertsOf } from './experts.js';

/** Mean I/H(domain) and NMI over the MoE layers of a trained model on the scale's held-out text, and its loss by domain. */
function specialisationOf(r: Pick<TrainResult, 'model' | 'tokenizer'>, scale: Scale): DomainScores {
  const rep = expertsOf(r.model, r.tokenizer, {
    data: scale.data,
    valFraction: 0.05,
    seq: scale.seq,
    batch: scale.batch,
    tokensPerDomain: scale.expertTokens,
    topTokens: 1,
  });
  const mean = (f: (l: (typeof rep.layers)[number]) => number): number | null =>
    rep.layers.length ? rep.layers.reduce((s, l) => s + f(l), 0) / rep.layers.length : null;
  return {
    specialisation: mean((l) => l.domainInformation),
    nmi: mean((l) => l.nmi),
    domainLoss: Object.fromEntries(rep.domains.map((d, i) => [d, rep.domainLoss?.[i] ?? null])),
  };
}

function list(flag: string, raw: string | undefined): string[] | undefined {
  if (raw === undefined) return undefined;
  const xs = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (!xs.length) throw new UsageError(`--${flag} needs a comma-separated list`);
  return xs;
}

export function runExperimentCommand(argv: string[]): number {
  const { flags, positional } = parseFlags(argv, {
    scale: { type: 'string', help: `${Object.keys(SCALES).join(' | ')} (default small; micro runs in seconds)` },
    out: { type: 'string', help: 'folder of the runs and the report (default runs/experiments/NAME[-SCALE])' },
    tokens: { type: 'int', help: 'training tokens per run (default: the scale’s)' },
    seeds: { type: 'string', help: 'comma-separated seeds (default: the scale’s)' },
    only: { type: 'string', help: 'comma-separated variant names to run' },
    backend: { type: 'string', help: 'ts | native' },
    threads: { type: 'int', help: 'compute threads' },
    'cache-dir': { type: 'string', help: 'tokenizer and token cache folder (default .cache/dsv2)' },
  });
  const name = positional[0];
  if (positional.length !== 1 || !EXPERIMENT_NAMES.includes(name as ExperimentName))
    throw new UsageError(`name one experiment: ${EXPERIMENT_NAMES.join(', ')}`);
  const scaleName = (flags['scale'] as string | undefined) ?? 'small';
  const scale = SCALES[scaleName];
  if (!scale) throw new UsageError(`unknown --scale '${scaleName}' (known: ${Object.keys(SCALES).join(', ')})`);
  const tokens = flags['tokens'] as number | undefined;
  if (tokens !== undefined && tokens < scale.batch * scale.seq)
    throw new UsageError(`--tokens ${tokens} is less than one step (${scale.batch * scale.seq} tokens)`);
  const seeds = list('seeds', flags['seeds'] as string | undefined)?.map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`--seeds: '${s}' is not an integer ≥ 0`);
    return n;
  });
  const out = (flags['out'] as string | undefined) ?? join('runs', 'experiments', scaleName === 'small' ? name! : `${name}-${scaleName}`);
  const backend = flags['backend'] ? loadBackend(flags['backend'] as string) : defaultBackend();
  const threads = flags['threads'] as number | undefined;
  if (threads !== undefined && !(threads >= 1 && threads <= 1024))
    throw new UsageError(`--threads must be between 1 and 1024, got ${threads}`);
  if (threads !== undefined) backend.setThreads?.(threads);
  const watch = backend.watchStopSignals?.();
  const tty = process.stderr.isTTY;
  const started = performance.now();
  let res: ReturnType<typeof runExperiment>;
  try {
    res = runExperiment({
      name: name as ExperimentName,
      scale,
      out,
      tokens,
      seeds,
      only: list('only', flags['only'] as string | undefined),
      backend: backend.name,
      ...(flags['cache-dir'] ? { cacheDir: flags['cache-dir'] as string } : {}),
      onStatus: (m) => process.stderr.write(`${tty ? '\r\x1b[K' : ''}[${name}] ${m}\n`),
      onStep: (run, m, total) => {
        if (tty && (m.step % 5 === 0 || m.step === total))
          process.stderr.write(
            `\r\x1b[K[${name}] ${run}: step ${m.step}/${total}  loss ${m.loss.toFixed(3)}  ${Math.round(m.tok_s)} tok/s`,
          );
      },
      shouldStop: () => (watch?.received() ?? 0) !== 0,
      specialisation: specialisationOf,
    });
  } finally {
    watch?.restore();
  }
  if (tty) process.stderr.write('\r\x1b[K');
  const { experiment: ex, stopped } = res;
  const results = collectResults(out, ex); // every finished run in the folder, also those of earlier --only runs
  const summary = {
    experiment: `${ex.name} (${ex.about})`,
    scale: `${scale.name}: preset ${scale.preset} ${JSON.stringify(scale.config)}, data ${scale.data}`,
    'tokens per run': (tokens ?? scale.tokens).toLocaleString('en-US'),
    'batch × seq': `${scale.batch} × ${scale.seq}`,
    seeds: (seeds ?? scale.seeds).join(', '),
    command: `dsv2 experiment ${argv.join(' ')}`,
  };
  writeFileAtomic(join(out, 'results.json'), JSON.stringify({ summary, results, variants: summarise(results) }, null, 2) + '\n');
  const md = markdownTable(ex, results);
  writeFileAtomic(join(out, 'results.md'), `${md}\n`);
  writeExperimentReport(join(out, 'report.html'), out, ex, results, summary);
  console.log(`${md}\n\nReport: ${join(out, 'report.html')}  (${((performance.now() - started) / 60000).toFixed(1)} min)`);
  if (stopped) {
    const sig = watch?.received() || 2;
    console.log(`stopped by ${sig === 15 ? 'SIGTERM' : 'SIGINT'}; run the same command again to continue`);
    return 128 + sig;
  }
  return 0;
}
