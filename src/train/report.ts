// The end-of-run HTML report: one self-contained file (no network) with loss, learning-rate, throughput and
// balance charts drawn by uPlot (inlined from the npm package) and per-layer expert-load heatmaps over time.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import type { StepMetrics } from './trainer.js';

const require = createRequire(import.meta.url);

export function uplotAssets(): { js: string; css: string } {
  const dir = join(dirname(require.resolve('uplot/package.json')), 'dist');
  return { js: readFileSync(join(dir, 'uPlot.iife.min.js'), 'utf8'), css: readFileSync(join(dir, 'uPlot.min.css'), 'utf8') };
}

export interface ReportInput {
  title: string;
  metrics: StepMetrics[];
  unigramLoss: number;
  summary: Record<string, string | number>;
  samples: { prompt: string; text: string }[];
}

function esc(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

export function readMetrics(file: string): StepMetrics[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as StepMetrics);
}

export function writeReport(path: string, r: ReportInput): void {
  const { js, css } = uplotAssets();
  const m = r.metrics;
  const data = {
    step: m.map((x) => x.step),
    loss: m.map((x) => x.loss),
    val: m.map((x) => x.val_loss ?? null),
    lr: m.map((x) => x.lr),
    tok_s: m.map((x) => x.tok_s),
    dropped: m.map((x) => 100 * x.dropped_frac),
    balance: (m[0]?.load_max_over_mean ?? []).map((_, l) => m.map((x) => x.load_max_over_mean[l] ?? null)),
    heat: (m[0]?.expert_load ?? []).map((_, l) => m.map((x) => x.expert_load[l] ?? [])),
    unigram: r.unigramLoss,
  };
  const rows = Object.entries(r.summary)
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(String(v))}</td></tr>`)
    .join('');
  const samples = r.samples.map((s) => `<pre><b>${esc(s.prompt)}</b>${esc(s.text)}</pre>`).join('');
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(r.title)}</title>
<style>${css}
body{font:14px system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:28px} table{border-collapse:collapse} th,td{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}
pre{white-space:pre-wrap;background:#f6f6f6;padding:8px;border-radius:4px} .heat{display:inline-block;margin:6px 12px 6px 0}
.heat canvas{image-rendering:pixelated;border:1px solid #ccc;width:480px;height:160px} .note{color:#666}
</style></head><body>
<h1>${esc(r.title)}</h1>
<table>${rows}</table>
<h2>Loss</h2><div id="loss"></div>
<p class="note">Dashed: the unigram baseline (cross-entropy of token frequencies) on the validation text.</p>
<h2>Learning rate</h2><div id="lr"></div>
<h2>Throughput (tokens/s)</h2><div id="tps"></div>
<h2>Expert load balance: max / mean assignments per expert, by MoE layer</h2><div id="bal"></div>
<h2>Dropped assignments (%)</h2><div id="drop"></div>
<h2>Expert load over time</h2>
<p class="note">One heatmap per MoE layer: x = training step, y = routed expert, colour = share of the layer's assignments (white 0, dark ≥ 2× the uniform share).</p>
<div id="heat"></div>
<h2>Samples</h2>${samples}
<script>${js}</script>
<script>
const D = ${JSON.stringify(data)};
const W = Math.min(1050, window.innerWidth - 60);
function chart(el, series, cols, opts = {}) {
  new uPlot({ width: W, height: 240, scales: { x: { time: false }, ...(opts.scales || {}) }, series: [{ label: 'step' }, ...series], axes: [{}, { size: 60, ...(opts.y || {}) }] },
    [D.step, ...cols], document.getElementById(el));
}
chart('loss', [{ label: 'train', stroke: '#1f77b4' }, { label: 'validation', stroke: '#d62728', points: { show: true }, spanGaps: true },
  { label: 'unigram', stroke: '#999', dash: [6, 4] }], [D.loss, D.val, D.step.map(() => D.unigram)]);
chart('lr', [{ label: 'lr', stroke: '#2ca02c', value: (u, v) => v == null ? '--' : v.toExponential(2) }], [D.lr],
  { y: { values: (u, vals) => vals.map((v) => v.toExponential(1)) } });
chart('tps', [{ label: 'tok/s', stroke: '#9467bd' }], [D.tok_s]);
const colors = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];
chart('bal', D.balance.map((_, l) => ({ label: 'MoE layer ' + (l + 1), stroke: colors[l % colors.length] })), D.balance);
chart('drop', [{ label: 'dropped %', stroke: '#8c564b' }], [D.dropped]);
D.heat.forEach((layer, l) => {
  const E = layer[0] ? layer[0].length : 0, S = layer.length;
  const box = document.createElement('div'); box.className = 'heat';
  box.innerHTML = '<div>MoE layer ' + (l + 1) + '</div>';
  const c = document.createElement('canvas'); c.width = Math.max(1, S); c.height = Math.max(1, E);
  const ctx = c.getContext('2d'), img = ctx.createImageData(c.width, c.height);
  for (let s = 0; s < S; s++) for (let e = 0; e < E; e++) {
    const v = Math.min(1, (layer[s][e] || 0) * E / 2), k = ((E - 1 - e) * c.width + s) * 4;
    img.data[k] = 255 - 230 * v; img.data[k + 1] = 255 - 180 * v; img.data[k + 2] = 255 - 90 * v; img.data[k + 3] = 255;
  }
  ctx.putImageData(img, 0, 0); box.appendChild(c); document.getElementById('heat').appendChild(box);
});
</script></body></html>
`;
  writeFileAtomic(path, html);
}
