// The experts report as one self-contained HTML file (no network), in the training report's style: per MoE layer a
// heatmap of experts × domains, the specialisation scores, each expert's dominant domain, concentration and the
// tokens it takes most, and how much of each domain the shared experts carry.
import { writeFileAtomic } from '../io/atomic.js';
import type { SpecialisationReport } from './stats.js';

export interface ExpertsReportInput {
  title: string;
  summary: Record<string, string | number>;
  report: SpecialisationReport;
  /** Display text of a token id. */
  tokenText: (id: number) => string;
}

function esc(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

/** A token as the report shows it: spaces as ·, newlines as ⏎, other control characters as \uXXXX. */
export function visibleToken(s: string): string {
  return s
    .replace(/ /g, '·')
    .replace(/\n/g, '⏎')
    .replace(/\t/g, '⇥')
    .replace(/[^ -~\u0080-\u{10ffff}]/gu, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`); // control characters
}

const pct = (v: number, digits = 1): string => `${(100 * v).toFixed(digits)}%`;

/** White → blue by lift: ≤ 1× (the domain's own share) white, 2× halfway, ≥ 4× dark. */
function liftColour(lift: number): string {
  const v = Math.max(0, Math.min(1, Math.log2(Math.max(lift, 1e-9)) / 2));
  const r = Math.round(255 - 225 * v);
  const g = Math.round(255 - 160 * v);
  const b = Math.round(255 - 60 * v);
  return `rgb(${r},${g},${b});color:${v > 0.6 ? '#fff' : '#222'}`;
}

export function expertsHtml(x: ExpertsReportInput): string {
  const r = x.report;
  const D = r.domains.length;
  const rows = Object.entries(x.summary)
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(String(v))}</td></tr>`)
    .join('');
  const domainRow = r.domains
    .map(
      (d, i) =>
        `<tr><th>${esc(d)}</th><td>${r.domainTokens[i]!.toLocaleString('en-US')}</td><td>${pct(r.domainShare[i]!)}</td><td>${r.domainLoss?.[i]?.toFixed(3) ?? '—'}</td></tr>`,
    )
    .join('');
  const scores = r.layers
    .map(
      (l) =>
        `<tr><th>layer ${l.layer}</th><td>${l.domainInformation.toFixed(4)}</td><td>${l.nmi.toFixed(4)}</td><td>${l.mutualInformation.toFixed(4)}</td>` +
        (l.sharedCarry ? l.sharedCarry.map((v) => `<td>${pct(v)}</td>`).join('') : r.domains.map(() => '<td>—</td>').join('')) +
        '</tr>',
    )
    .join('');
  const layers = r.layers
    .map((l) => {
      const head = `<tr><th>expert</th><th>load</th>${r.domains.map((d) => `<th>${esc(d)}</th>`).join('')}<th>dominant</th><th>conc.</th><th>tokens it takes the largest share of; below, the tokens it takes most (share of each token's occurrences)</th></tr>`;
      const body = l.experts
        .map((e) => {
          const cells = e.shareOfDomain
            .map(
              (v, d) =>
                `<td class="h" style="background:${liftColour(e.lift[d]!)}" title="p(e|${esc(r.domains[d]!)}) = ${pct(v, 2)}; ${pct(e.domainShare[d]!)} of this expert's assignments vs the domain's ${pct(r.domainShare[d]!)} of all tokens (lift ${e.lift[d]!.toFixed(2)})">${pct(v)}</td>`,
            )
            .join('');
          const list = (ts: typeof e.topTokens): string =>
            ts.map((t) => `<code>${esc(visibleToken(x.tokenText(t.id)))}</code><span class="n">${pct(t.share, 0)}</span>`).join(' ');
          const toks = `${list(e.distinctive)}<br><span class="n">most: </span>${list(e.topTokens)}`;
          return `<tr><th>${e.expert}</th><td>${pct(e.load)}</td>${cells}<td>${e.dominant === null ? 'unused' : esc(r.domains[e.dominant]!)}</td><td>${e.concentration.toFixed(2)}</td><td class="t">${toks}</td></tr>`;
        })
        .join('');
      return `<h2>MoE layer ${l.layer} — I/H(domain) ${l.domainInformation.toFixed(3)}, NMI ${l.nmi.toFixed(3)}</h2><table class="m">${head}${body}</table>`;
    })
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(x.title)}</title>
<style>
body{font:14px system-ui,sans-serif;margin:24px;max-width:1300px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:28px} table{border-collapse:collapse} th,td{padding:2px 8px;text-align:left;border-bottom:1px solid #eee}
td.h{text-align:right;min-width:52px} td.t{font-size:12px} code{background:#f3f3f3;padding:0 3px;border-radius:3px} .n{color:#888;font-size:11px;margin-left:2px}
.note{color:#666;max-width:900px}
</style></head><body>
<h1>${esc(x.title)}</h1>
<table>${rows}</table>
<h2>Domains of the held-out text</h2>
<table><tr><th>domain</th><th>tokens</th><th>share</th><th>loss (next-token cross-entropy)</th></tr>${domainRow}</table>
<h2>Specialisation by layer</h2>
<table><tr><th></th><th>I/H(domain)</th><th>NMI</th><th>I (nats)</th>${r.domains.map((d) => `<th>shared carry: ${esc(d)}</th>`).join('')}</tr>${scores}</table>
<p class="note">I/H(domain), over all routed assignments: the share of the uncertainty about a token's domain that the choice of expert removes —
0 when it says nothing about the domain, 1 when it determines it, whatever the numbers of experts and domains. NMI = 2·I / (H(expert) + H(domain)) is
1 only when expert and domain determine each other, so with more experts than domains, or top-k > 1, even a perfect split stays below 1.
A random router is not at 0 either: tokens differ between domains, and routing depends on the token.
Shared carry: the mean over a domain's tokens of |shared experts' output| / (|shared| + |Σ routed gate·output|).</p>
<h2>Experts × domains</h2>
<p class="note">Cells: the share of each domain's assignments that the expert takes, p(expert | domain) (each column sums to 100%; a uniform router gives ${pct(1 / Math.max(1, r.experts))}
per cell). Colour: lift = p(domain | expert) / p(domain), the expert's share of a domain against the domain's share
of all tokens (white ≤ 1×, dark ≥ 4×). Dominant domain and concentration weigh the ${D} domains alike (concentration ${(1 / Math.max(1, D)).toFixed(2)}: none; 1: one only).</p>
${layers}
</body></html>
`;
}

export function writeExpertsReport(path: string, x: ExpertsReportInput): void {
  writeFileAtomic(path, expertsHtml(x));
}
