// The mixed corpus `--data mix`: four domains of about the same size in UTF-8 bytes, every document labelled with
// its domain, so that `dsv2 experts` can ask which expert takes which kind of text.
//   prose   English: Moby-Dick chapters and State of the Union addresses (spread over the years), alternating
//   poetry  Classical Chinese: Tang poems from the `chinese-poetry` package (title, poet, lines)
//   code    TypeScript: the sources of rxjs 7.8.2 (a pinned dependency), one file per document
//   math    Worked arithmetic and algebra problems (data/math.ts), generated from a fixed seed
// Everything is read in a fixed order, so the corpus (and its content hash) is the same on every machine.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { loadCorpus, type Corpus, type Doc } from './corpus.js';
import { mathProblems } from './math.js';

export const MIX_DOMAINS = ['prose', 'poetry', 'code', 'math'] as const;
export type MixDomain = (typeof MIX_DOMAINS)[number];

/** UTF-8 bytes per domain (each domain stops at the first whole document past it); also the most `mix:SIZE` may
 * ask for, as rxjs's sources (814 kB) are the smallest domain. */
export const MIX_DOMAIN_BYTES = 800_000;

const require = createRequire(import.meta.url);

function packageRoot(pkg: string, why: string): string {
  try {
    return dirname(require.resolve(`${pkg}/package.json`));
  } catch {
    throw new Error(`the mixed corpus needs the npm package ${pkg} for its ${why} (run npm ci, or npm install ${pkg})`);
  }
}

const bytes = (s: string): number => Buffer.byteLength(s, 'utf8');

/** Documents from `sources` in turn, always from the one with the fewest bytes so far, up to `budget` bytes. */
function balanced(sources: Doc[][], budget: number): Doc[] {
  const used = sources.map(() => 0);
  const next = sources.map(() => 0);
  const out: Doc[] = [];
  let total = 0;
  while (total < budget) {
    let best = -1;
    sources.forEach((s, i) => {
      if (next[i]! < s.length && (best < 0 || used[i]! < used[best]!)) best = i;
    });
    if (best < 0) break;
    const d = sources[best]![next[best]!++]!;
    used[best]! += bytes(d.text);
    total += bytes(d.text);
    out.push(d);
  }
  return out;
}

/** A long text cut at paragraph breaks into sections of at least `min` characters (the last one may be shorter). */
function sections(d: Doc, min: number): Doc[] {
  const paras = d.text.split(/\n\s*\n/);
  const out: Doc[] = [];
  let cur: string[] = [];
  let len = 0;
  const flush = (): void => {
    if (cur.length) out.push({ ...d, name: `${d.name}#${out.length + 1}`, text: cur.join('\n\n') });
    cur = [];
    len = 0;
  };
  for (const p of paras) {
    if (!p.trim()) continue;
    cur.push(p);
    len += p.length;
    if (len >= min) flush();
  }
  flush();
  return out;
}

function prose(budget: number): Doc[] {
  // the built-in corpora, read as `--data moby-dick` and `--data sotu` read them
  const moby = loadCorpus('moby-dick').docs.map((d) => ({ ...d, domain: 'prose' }));
  const sotuAll = loadCorpus('sotu').docs.map((d) => ({ ...d, domain: 'prose' }));
  // every 12th address: the vocabulary of every era, not only the first presidents'
  const sotu = sotuAll.filter((_, i) => i % 12 === 6);
  // chapters and addresses in sections of ≥ 4,000 characters: the unit of the train/validation split, so that the
  // held-out prose is as large a share as the other domains' (a whole address is 40 kB)
  return balanced(
    [
      moby.flatMap((d) => sections({ ...d, name: `moby-dick/${d.name}` }, 4000)),
      sotu.flatMap((d) => sections({ ...d, name: `sotu/${d.name}` }, 4000)),
    ],
    budget,
  );
}

interface Poem {
  title?: unknown;
  author?: unknown;
  paragraphs?: unknown;
}

function poetry(budget: number): Doc[] {
  const dir = join(packageRoot('chinese-poetry', 'Chinese poetry'), 'dist', 'quantangshi');
  // eight files spread over the Complete Tang Poems (poet.tang.0 … poet.tang.57000), poems taken in turn
  const sources: Doc[][] = [];
  for (let n = 0; n <= 49_000; n += 7_000) {
    const file = join(dir, `poet.tang.${n}.json`);
    const poems = JSON.parse(readFileSync(file, 'utf8')) as Poem[];
    sources.push(
      poems
        .filter((p) => typeof p.title === 'string' && typeof p.author === 'string' && Array.isArray(p.paragraphs))
        .map((p, i) => ({
          name: `tang/${n + i}`,
          text: `${p.title as string}\n${p.author as string}\n${(p.paragraphs as unknown[]).join('\n')}`,
          domain: 'poetry',
        })),
    );
  }
  return balanced(sources, budget);
}

function code(budget: number): Doc[] {
  const root = packageRoot('rxjs', 'TypeScript sources');
  const src = join(root, 'src');
  const files: string[] = [];
  const walk = (p: string): void => {
    for (const f of readdirSync(p).sort()) {
      const full = join(p, f);
      if (statSync(full).isDirectory()) walk(full);
      else if (f.endsWith('.ts')) files.push(full);
    }
  };
  walk(src);
  const docs = files.map((f) => ({ name: `rxjs/${relative(src, f)}`, text: readFileSync(f, 'utf8'), domain: 'code' }));
  return balanced([docs], budget);
}

function math(budget: number): Doc[] {
  const out: Doc[] = [];
  const seen = new Set<string>(); // a problem drawn twice would sit in both halves of the split
  let total = 0;
  let i = 0;
  for (const p of mathProblems(0)) {
    if (total >= budget) break;
    if (seen.has(p.text)) continue;
    seen.add(p.text);
    out.push({ name: `math/${i++}-${p.kind}`, text: p.text, domain: 'math' });
    total += bytes(p.text);
  }
  return out;
}

/** The mixed corpus; `perDomain` bytes of each domain (default MIX_DOMAIN_BYTES). */
export function mixCorpus(perDomain = MIX_DOMAIN_BYTES): Corpus {
  const parts = [prose(perDomain), poetry(perDomain), code(perDomain), math(perDomain)];
  return { name: 'mix', docs: interleaveByDomain(parts.flat()) };
}

/**
 * Documents reordered so that every prefix holds the domains in about equal bytes (the next document comes from
 * the domain with the fewest bytes so far; within a domain the order is kept). A validation stream read from its
 * start, as the trainer's evaluation batches are, then covers every domain.
 */
export function interleaveByDomain(docs: readonly Doc[]): Doc[] {
  const byDomain = new Map<string, Doc[]>();
  for (const d of docs) {
    const k = d.domain ?? '';
    if (!byDomain.has(k)) byDomain.set(k, []);
    byDomain.get(k)!.push(d);
  }
  return balanced([...byDomain.values()], Infinity);
}
