// Learn a byte-level BPE vocabulary from text (the algorithm of Sennrich et al. as HF's BpeTrainer runs it):
// count pre-tokenized words, then repeatedly merge the most frequent adjacent symbol pair (ties: the pair that
// sorts first), updating only the words that contain it. A lazy max-heap finds the best pair.
import { byteAlphabet, toByteLevel } from './bytes.js';
import { GPT2_PATTERN, mergePair, Tokenizer, type SpecialToken } from './tokenizer.js';

export interface BpeTrainOptions {
  /** Final vocabulary size, special tokens included. */
  vocabSize: number;
  /** Special tokens, given the first ids in order (e.g. BOS, EOS). */
  specials?: string[];
  /** Pairs seen fewer times than this are never merged. */
  minFrequency?: number;
  /** Called every 256 merges. */
  onProgress?: (merges: number, target: number) => void;
}

type Entry = [count: number, key: string];

/** Max-heap on (count desc, key asc). */
class Heap {
  private a: Entry[] = [];
  private less(x: Entry, y: Entry): boolean {
    return x[0] > y[0] || (x[0] === y[0] && x[1] < y[1]);
  }
  push(e: Entry): void {
    const a = this.a;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  pop(): Entry | undefined {
    const a = this.a;
    if (!a.length) return undefined;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.less(a[l]!, a[m]!)) m = l;
        if (r < a.length && this.less(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}

export function trainBpe(texts: Iterable<string>, opts: BpeTrainOptions): Tokenizer {
  const specials = opts.specials ?? [];
  const alphabet = byteAlphabet();
  const target = opts.vocabSize - specials.length - alphabet.length;
  if (target < 0) throw new Error(`BPE: a vocabulary of ${opts.vocabSize} cannot hold ${specials.length} special tokens and 256 bytes`);
  const minFreq = opts.minFrequency ?? 2;

  // 1. word counts over the pre-tokenized, byte-level text
  const re = new RegExp(GPT2_PATTERN, 'gu');
  const wordCount = new Map<string, number>();
  for (const text of texts) {
    for (const m of text.matchAll(re)) {
      const w = toByteLevel(m[0]);
      wordCount.set(w, (wordCount.get(w) ?? 0) + 1);
    }
  }
  const words: string[][] = [];
  const counts: number[] = [];
  for (const [w, c] of wordCount) {
    words.push(Array.from(w));
    counts.push(c);
  }

  // 2. pair counts and which words hold each pair
  const pairCount = new Map<string, number>();
  const pairWords = new Map<string, Set<number>>();
  const addWord = (wi: number, sign: number): void => {
    const s = words[wi]!;
    for (let i = 0; i < s.length - 1; i++) {
      const key = `${s[i]} ${s[i + 1]}`;
      pairCount.set(key, (pairCount.get(key) ?? 0) + sign * counts[wi]!);
      if (sign > 0) {
        let set = pairWords.get(key);
        if (!set) pairWords.set(key, (set = new Set()));
        set.add(wi);
      }
    }
  };
  words.forEach((_, wi) => addWord(wi, 1));
  const heap = new Heap();
  for (const [k, c] of pairCount) heap.push([c, k]);

  // 3. merge loop
  const merges: [string, string][] = [];
  while (merges.length < target) {
    const top = heap.pop();
    if (!top) break;
    const [c, key] = top;
    if (pairCount.get(key) !== c) continue; // stale entry
    if (c < minFreq) break;
    const sp = key.indexOf(' ');
    const a = key.slice(0, sp);
    const b = key.slice(sp + 1);
    merges.push([a, b]);
    const touched = new Set<string>();
    for (const wi of pairWords.get(key) ?? []) {
      const s = words[wi]!;
      let has = false;
      for (let i = 0; i < s.length - 1; i++) if (s[i] === a && s[i + 1] === b) has = true;
      if (!has) continue;
      for (let i = 0; i < s.length - 1; i++) touched.add(`${s[i]} ${s[i + 1]}`);
      addWord(wi, -1);
      const merged = mergePair(s, a, b);
      words[wi] = merged;
      addWord(wi, 1);
      for (let i = 0; i < merged.length - 1; i++) touched.add(`${merged[i]} ${merged[i + 1]}`);
    }
    pairCount.delete(key);
    for (const k of touched) {
      const n = pairCount.get(k);
      if (n === undefined || k === key) continue;
      if (n <= 0) pairCount.delete(k);
      else heap.push([n, k]);
    }
    if (opts.onProgress && merges.length % 256 === 0) opts.onProgress(merges.length, target);
  }

  const vocab = new Map<string, number>();
  const specialTokens: SpecialToken[] = specials.map((content, id) => ({ id, content }));
  let id = specials.length;
  for (const ch of alphabet) vocab.set(ch, id++);
  for (const [a, b] of merges) if (!vocab.has(a + b)) vocab.set(a + b, id++);
  return new Tokenizer(vocab, merges, specialTokens);
}
