// `dsv2 experts`: which expert does what. Routes the held-out documents of every domain of a corpus (`mix`: prose,
// poetry, code, math) through a trained model and reports, per MoE layer, each expert's share of every domain, the
// specialisation scores, the tokens each expert takes most and how much the shared experts carry (experts/stats.ts).
// Writes experts.json and report.html; prints a summary.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { defaultBackend, loadBackend } from '../../backend/registry.js';
import { loadCorpus, splitDocs } from '../../data/corpus.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { loadTokenizer, resolveModelDir } from '../../io/model-dir.js';
import { isMoeLayer } from '../../model/config.js';
import { loadModel } from '../../model/load.js';
import type { DeepseekV2ForCausalLM } from '../../model/model.js';
import { writeExpertsReport } from '../../experts/report.js';
import { domainsOf, routeDomains } from '../../experts/route.js';
import { specialisation, type SpecialisationReport } from '../../experts/stats.js';
import type { Tokenizer } from '../../tokenizer/tokenizer.js';
import { EOS, TRAIN_DEFAULTS } from '../../train/trainer.js';
import { parseFlags, UsageError } from '../args.js';

export interface ExpertsOptions {
  data: string;
  valFraction: number;
  seq: number;
  batch: number;
  tokensPerDomain: number;
  topTokens: number;
}

/** A token's text; a token that is part of a UTF-8 character (byte-level BPE) as its bytes, e.g. ‹e5 9c›. */
export function tokenText(tok: Tokenizer, id: number): string {
  const s = tok.decode([id]);
  if (!s.includes('\uFFFD')) return s;
  return `‹${Array.from(tok.tokenBytes(id), (b) => b.toString(16).padStart(2, '0')).join(' ')}›`;
}

/** The run folder a model path belongs to (it holds train_options.json), if any. */
function runFolder(path: string, dir: string): string | null {
  for (const p of [path, dirname(dir)]) if (existsSync(join(p, 'train_options.json'))) return p;
  return null;
}

/** Route a model over a corpus's held-out documents and compute the report. */
export function expertsOf(
  model: DeepseekV2ForCausalLM,
  tok: Tokenizer,
  o: ExpertsOptions,
  onProgress?: (done: number, total: number) => void,
): SpecialisationReport & { tokenTexts: Record<number, string> } {
  const corpus = loadCorpus(o.data);
  const { val } = splitDocs(corpus, o.valFraction);
  if (!val.length) throw new Error(`--val-fraction ${o.valFraction} holds out no documents of ${o.data}`);
  const fallback = basename(corpus.name) || corpus.name;
  const domains = domainsOf(val, fallback);
  const eosId = tok.idOf(EOS) ?? model.config.eos_token_id ?? 0;
  const routing = routeDomains(model, tok, val, domains, fallback, {
    seq: o.seq,
    batch: o.batch,
    maxTokensPerDomain: o.tokensPerDomain,
    eosId,
    onProgress,
  });
  const c = model.config;
  const rep = specialisation(routing, domains, c.n_routed_experts ?? 0, c.num_experts_per_tok ?? 0, o.topTokens);
  const tokenTexts: Record<number, string> = {};
  for (const l of rep.layers)
    for (const e of l.experts) for (const t of [...e.topTokens, ...e.distinctive]) tokenTexts[t.id] ??= tokenText(tok, t.id);
  return { ...rep, tokenTexts };
}

export function runExperts(argv: string[]): number {
  const { flags, positional } = parseFlags(argv, {
    model: { type: 'string', help: 'run folder or model directory' },
    data: { type: 'string', help: "corpus whose held-out documents are routed (default: the run's; mix gives four domains)" },
    out: { type: 'string', help: 'folder for experts.json and report.html (default: RUN/experts)' },
    'val-fraction': { type: 'number', help: "share of documents held out (default: the run's, else 0.05)" },
    'tokens-per-domain': { type: 'int', help: 'route at most this many tokens of each domain (default 32768)' },
    seq: { type: 'int', help: 'tokens per window (default: the run’s --seq, else 256)' },
    batch: { type: 'int', help: 'windows per forward pass (default 8)' },
    'top-tokens': { type: 'int', help: 'tokens listed per expert (default 10)' },
    backend: { type: 'string', help: 'ts | native' },
    json: { type: 'bool', help: 'print experts.json to stdout instead of the summary' },
  });
  if (positional.length) throw new UsageError(`unexpected argument '${positional[0]}'`);
  if (!flags['model']) throw new UsageError('--model DIR is required');
  const path = flags['model'] as string;
  const dir = resolveModelDir(path);
  const run = runFolder(path, dir);
  let runOpts: { data?: string; valFraction?: number; seq?: number } = {};
  if (run) {
    try {
      runOpts = JSON.parse(readFileSync(join(run, 'train_options.json'), 'utf8')) as typeof runOpts;
    } catch {
      runOpts = {};
    }
  }
  const data = (flags['data'] as string | undefined) ?? runOpts.data;
  if (!data) throw new UsageError('--data is required (the model is not a training run folder that names its corpus)');
  const out = (flags['out'] as string | undefined) ?? (run ? join(run, 'experts') : undefined);
  if (!out) throw new UsageError('--out DIR is required (the model is not inside a training run folder)');
  const positive = (name: string, v: number | undefined, dflt: number, int = true): number => {
    const x = v ?? dflt;
    if (!(x > 0) || (int && !Number.isInteger(x)))
      throw new UsageError(`--${name} must be ${int ? 'an integer ' : 'a number '}> 0, got ${x}`);
    return x;
  };
  const asked = flags['val-fraction'] as number | undefined;
  if (asked === undefined && runOpts.valFraction === 0)
    throw new UsageError(`${run} held out no documents (val fraction 0): give --val-fraction F to route documents it also trained on`);
  const valFraction = asked ?? runOpts.valFraction ?? TRAIN_DEFAULTS.valFraction;
  if (!(valFraction > 0 && valFraction < 1)) throw new UsageError(`--val-fraction must be between 0 and 1, got ${valFraction}`);
  if (asked !== undefined && runOpts.valFraction !== undefined && asked !== runOpts.valFraction)
    process.stderr.write(
      `note: the run held out ${runOpts.valFraction} of the documents; with --val-fraction ${asked} some routed documents were seen in training\n`,
    );
  const o: ExpertsOptions = {
    data,
    valFraction,
    seq: positive('seq', flags['seq'] as number | undefined, runOpts.seq ?? 256),
    batch: positive('batch', flags['batch'] as number | undefined, 8),
    tokensPerDomain: positive('tokens-per-domain', flags['tokens-per-domain'] as number | undefined, 32768),
    topTokens: positive('top-tokens', flags['top-tokens'] as number | undefined, 10),
  };
  const backend = flags['backend'] ? loadBackend(flags['backend'] as string) : defaultBackend();
  const model = loadModel(dir, { backend, trainable: false });
  const mc = model.config;
  if (!Array.from({ length: mc.num_hidden_layers }, (_, i) => isMoeLayer(mc, i)).some(Boolean))
    throw new UsageError(`${dir} has no MoE layer (a dense model): there are no experts to report on`);
  if (o.seq > model.config.max_position_embeddings)
    throw new UsageError(`--seq ${o.seq} is longer than the model's max_position_embeddings ${model.config.max_position_embeddings}`);
  const tok = loadTokenizer(dir);
  const tty = process.stderr.isTTY;
  const { json, html } = reportExperts(model, tok, o, {
    out,
    title: `Which expert does what — ${basename(run ?? dir)} on ${data}`,
    model: resolve(dir),
    onProgress: (done, total) => {
      if (tty) process.stderr.write(`\rrouting ${done.toLocaleString('en-US')} / ${total.toLocaleString('en-US')} tokens…`);
    },
  });
  if (tty) process.stderr.write('\n');
  const rep = json;
  if (flags['json']) {
    console.log(JSON.stringify(json));
    return 0;
  }
  console.log(summaryText(rep, (id) => rep.tokenTexts[id] ?? String(id)));
  console.log(`\nReport: ${html}\nJSON:   ${join(out, 'experts.json')}`);
  return 0;
}

/** Route, compute, and write OUT/experts.json and OUT/report.html; shared by dsv2 experts and npm start. */
export function reportExperts(
  model: DeepseekV2ForCausalLM,
  tok: Tokenizer,
  o: ExpertsOptions,
  w: { out: string; title: string; model: string; onProgress?: (done: number, total: number) => void },
): { json: ReturnType<typeof expertsOf> & Record<string, unknown>; html: string } {
  const t0 = performance.now();
  const rep = expertsOf(model, tok, o, w.onProgress);
  const seconds = (performance.now() - t0) / 1000;
  const json = {
    model: w.model,
    data: o.data,
    val_fraction: o.valFraction,
    seq: o.seq,
    tokens: rep.domainTokens.reduce((a, b) => a + b, 0),
    seconds: Number(seconds.toFixed(2)),
    ...rep,
  };
  mkdirSync(w.out, { recursive: true });
  writeFileAtomic(join(w.out, 'experts.json'), JSON.stringify(json) + '\n');
  const html = join(w.out, 'report.html');
  writeExpertsReport(html, {
    title: w.title,
    summary: {
      model: w.model,
      data: `${o.data} (held-out documents, val fraction ${o.valFraction})`,
      'tokens routed': json.tokens.toLocaleString('en-US'),
      'routed experts / layer': `${rep.experts} (top-${rep.topK})`,
      'shared experts / layer': model.config.n_shared_experts ?? 0,
      'window (tokens)': o.seq,
      'time (s)': json.seconds,
    },
    report: rep,
    tokenText: (id) => rep.tokenTexts[id] ?? tokenText(tok, id),
  });
  return { json, html };
}

/** A few lines per layer: the scores, the shared carry, and each domain's most specialised experts. */
export function summaryText(rep: SpecialisationReport, text: (id: number) => string): string {
  const lines: string[] = [];
  lines.push(
    `${rep.domainTokens.reduce((a, b) => a + b, 0).toLocaleString('en-US')} held-out tokens: ` +
      rep.domains.map((d, i) => `${d} ${(100 * rep.domainShare[i]!).toFixed(0)}%`).join(', '),
  );
  if (rep.domainLoss)
    lines.push(`validation loss by domain: ${rep.domains.map((d, i) => `${d} ${rep.domainLoss![i]?.toFixed(3) ?? '—'}`).join(', ')}`);
  for (const l of rep.layers) {
    lines.push(`\nMoE layer ${l.layer}: I/H(domain) ${l.domainInformation.toFixed(3)}, NMI ${l.nmi.toFixed(3)}`);
    if (l.sharedCarry)
      lines.push(`  shared experts carry ${rep.domains.map((d, i) => `${d} ${(100 * l.sharedCarry![i]!).toFixed(0)}%`).join(', ')}`);
    rep.domains.forEach((d, di) => {
      const best = l.experts
        .filter((e) => e.dominant === di)
        .sort((a, b) => b.concentration - a.concentration)
        .slice(0, 3);
      const desc = best.map((e) => {
        const toks = e.distinctive
          .slice(0, 4)
          .map((t) => `${JSON.stringify(text(t.id))} ${(100 * t.share).toFixed(0)}%`)
          .join(' ');
        return `#${e.expert} (${e.concentration.toFixed(2)}: ${toks})`;
      });
      lines.push(`  ${d.padEnd(8)} ${desc.length ? desc.join('  ') : '(no expert prefers it)'}`);
    });
  }
  return lines.join('\n');
}
