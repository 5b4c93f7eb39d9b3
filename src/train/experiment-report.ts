// An experiment's results: a table per variant (mean and spread over seeds), the training-loss curves of every
// run, and the same table as Markdown for docs/experiments.md. One self-contained HTML file (uPlot inlined).
import { join } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import type { Experiment, RunResult } from './experiments.js';
import { runDir, summarise } from './experiments.js';
import { readMetrics, uplotAssets } from './report.js';

const LABELS: Record<string, string> = {
  valLoss: 'val loss',
  trainLoss: 'train loss (last 10%)',
  kvElementsPerToken: 'KV elements / token',
  kvBytesPerToken: 'KV bytes / token (bf16)',
  totalParams: 'params',
  activatedParams: 'activated params',
  tokS: 'tok/s',
  loadMaxOverMean: 'load max/mean',
  droppedFrac: 'dropped',
  lExp: 'L_ExpBal',
  lDev: 'L_DevBal',
  specialisation: 'I/H(domain)',
  nmi: 'NMI',
};

function fmt(k: string, v: number | null): string {
  if (v === null || !Number.isFinite(v)) return '—';
  if (k === 'droppedFrac') return `${(100 * v).toFixed(2)}%`;
  if (k === 'totalParams' || k === 'activatedParams') return `${(v / 1e6).toFixed(2)} M`;
  if (k === 'kvElementsPerToken' || k === 'kvBytesPerToken' || k === 'tokS') return Math.round(v).toLocaleString('en-US');
  return v.toFixed(3);
}

/** The results table: one row per variant; a ± column where there are several seeds. */
export function resultRows(ex: Experiment, results: RunResult[]): { head: string[]; rows: string[][] } {
  const cols = ['valLoss', 'trainLoss', ...ex.columns] as string[];
  const domains = [...new Set(results.flatMap((r) => Object.keys(r.domainLoss ?? {})))];
  const head = ['variant', 'what', 'seeds', ...cols.map((c) => LABELS[c] ?? c)];
  if (domains.length) head.push(`val loss ${domains.join(' / ')}`);
  const rows = summarise(results).map((s) => {
    const v = ex.variants.find((x) => x.name === s.variant);
    const mine = results.filter((r) => r.variant === s.variant);
    const byDomain = domains
      .map((d) => {
        const xs = mine.map((r) => r.domainLoss?.[d]).filter((x): x is number => typeof x === 'number');
        return xs.length ? (xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(2) : '—';
      })
      .join(' / ');
    const diverged = mine.some((r) => r.diverged) ? ' (diverged)' : '';
    return [
      s.variant + diverged,
      v?.about ?? '',
      String(s.seeds),
      ...cols.map((c) => {
        const m = fmt(c, s.mean[c] ?? null);
        const sp = s.spread[c];
        return s.seeds > 1 &&
          (c === 'valLoss' || c === 'trainLoss' || c === 'specialisation' || c === 'nmi') &&
          sp !== null &&
          sp !== undefined
          ? `${m} ± ${(sp / 2).toFixed(3)}`
          : m;
      }),
      ...(domains.length ? [byDomain] : []),
    ];
  });
  return { head, rows };
}

export function markdownTable(ex: Experiment, results: RunResult[]): string {
  const { head, rows } = resultRows(ex, results);
  const line = (cells: string[]): string => `| ${cells.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}

function esc(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

export function writeExperimentReport(
  path: string,
  out: string,
  ex: Experiment,
  results: RunResult[],
  summary: Record<string, string | number>,
): void {
  const { js, css } = uplotAssets();
  const { head, rows } = resultRows(ex, results);
  // training loss against tokens, every run, smoothed over 10 steps
  const runs = results.map((r) => {
    const m = readMetrics(join(runDir(out, r.variant, r.seed), 'metrics.jsonl'));
    const loss = m.map((_, i) => {
      const w = m.slice(Math.max(0, i - 9), i + 1);
      return w.reduce((s, x) => s + x.loss, 0) / w.length;
    });
    return { label: `${r.variant} s${r.seed}`, tokens: m.map((x) => x.tokens), loss };
  });
  const x = runs[0]?.tokens ?? [];
  const data = { x, series: runs.map((r) => ({ label: r.label, y: x.map((_, i) => r.loss[i] ?? null) })) };
  const info = Object.entries(summary)
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(String(v))}</td></tr>`)
    .join('');
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>experiment ${esc(ex.name)}</title>
<style>${css}
body{font:14px system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:28px} table{border-collapse:collapse} th,td{padding:3px 10px;text-align:left;border-bottom:1px solid #eee}
td{font-variant-numeric:tabular-nums} .note{color:#666;max-width:900px}
</style></head><body>
<h1>Experiment ${esc(ex.name)}: ${esc(ex.about)}</h1>
<table>${info}</table>
<h2>Results</h2>
<table><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr>${rows.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join('')}</table>
<p class="note">Means over seeds; ± is half the spread (max − min) between seeds. Validation loss on the same held-out batches of every domain for every run,
at the end of training; train loss is the mean of the last 10% of steps.</p>
<h2>Training loss (10-step mean) against tokens</h2><div id="loss"></div>
<script>${js}</script>
<script>
const D = ${JSON.stringify(data).replace(/</g, '\\u003c')};
const colors = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf', '#393b79', '#637939'];
new uPlot({ width: Math.min(1150, window.innerWidth - 60), height: 320, scales: { x: { time: false } },
  series: [{ label: 'tokens' }, ...D.series.map((s, i) => ({ label: s.label, stroke: colors[i % colors.length], dash: / s0$/.test(s.label) ? undefined : [5, 3] }))],
  axes: [{}, { size: 60 }] }, [D.x, ...D.series.map((s) => s.y)], document.getElementById('loss'));
</script></body></html>
`;
  writeFileAtomic(path, html);
}
