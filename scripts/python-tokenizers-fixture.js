#!/usr/bin/env node
// Regenerates test/fixtures/python-tokenizers.json: two tokenizer.json files (one trained by this project on the
// first Moby-Dick chapters, and the same in DeepSeek's pre-tokenizer layout), a set of tricky texts, and the ids and
// decodings Hugging Face's Python `tokenizers` gives for them. The test suite checks our encoder against these ids
// on every run; where a Python with `tokenizers` is at hand it also runs the live check (test/tokenizer.test.ts).
//   node scripts/python-tokenizers-fixture.js /path/to/python   (after npm run build)
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { loadCorpus } from '../dist/src/data/corpus.js';
import { trainBpe } from '../dist/src/tokenizer/train.js';
import { deepseekLayout, TOKENIZER_TEXTS } from '../dist/test/tokenizer-cases.js';

const python = process.argv[2] ?? 'python3';
const docs = loadCorpus('moby-dick')
  .docs.slice(0, 8)
  .map((d) => d.text);
const ours = trainBpe(docs, { vocabSize: 600, specials: ['<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>'] }).toJSON();
const tokenizers = [ours, deepseekLayout(ours)];
const texts = [...TOKENIZER_TEXTS, docs[2].slice(0, 1500)];
const r = spawnSync(python, ['scripts/python-tokenizers.py'], { input: JSON.stringify({ tokenizers, texts }), encoding: 'utf8' });
if (r.status !== 0) {
  console.error(`python-tokenizers-fixture: ${python} failed: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`);
  process.exit(1);
}
const py = JSON.parse(r.stdout);
writeFileSync(
  'test/fixtures/python-tokenizers.json',
  JSON.stringify({ tokenizers_version: py.version, tokenizers, texts, ids: py.ids, decoded: py.decoded }) + '\n',
);
console.log(
  `wrote test/fixtures/python-tokenizers.json (Python tokenizers ${py.version}, ${texts.length} texts × ${tokenizers.length} tokenizers)`,
);
