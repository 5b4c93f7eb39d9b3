import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { loadCorpus, splitDocs } from '../src/data/corpus.js';
import { Tokenizer, type TokenizerJson } from '../src/tokenizer/tokenizer.js';
import { trainBpe } from '../src/tokenizer/train.js';
import { deepseekLayout, TOKENIZER_TEXTS } from './tokenizer-cases.js';

const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';
const TRICKY = TOKENIZER_TEXTS;

interface PythonFixture {
  tokenizers_version: string;
  tokenizers: TokenizerJson[];
  texts: string[];
  ids: number[][][];
  decoded: string[][];
}

/** A Python that imports `tokenizers`: $DSV2_PYTHON, else python3 on the PATH, else Debian's. */
function pythonWithTokenizers(): string | null {
  for (const p of [process.env['DSV2_PYTHON'], 'python3', '/usr/bin/python3']) {
    if (p && spawnSync(p, ['-c', 'import tokenizers'], { stdio: 'ignore' }).status === 0) return p;
  }
  return null;
}

describe('byte-level BPE tokenizer', () => {
  const corpus = loadCorpus('moby-dick');
  const docs = corpus.docs.slice(0, 30).map((d) => d.text);
  const tok = trainBpe(docs, { vocabSize: 1024, specials: [BOS, EOS] });

  it('learns the requested vocabulary with specials first and the 256 bytes next', () => {
    assert.equal(tok.vocabSize, 1024);
    assert.equal(tok.idOf(BOS), 0);
    assert.equal(tok.idOf(EOS), 1);
    assert.equal(tok.encode(' the').length, 1, "' the' is merged into one token");
  });

  it('round-trips any text exactly, Chinese and emoji included', () => {
    for (const s of TRICKY) assert.equal(tok.decode(tok.encode(s)), s, JSON.stringify(s));
    const all = docs.join('\n');
    assert.equal(tok.decode(tok.encode(all)), all);
  });

  it('special tokens in text become their ids; BOS is prepended on request; decode can skip specials', () => {
    const ids = tok.encode(`a${EOS}b`, { addBos: true, bosId: 0 });
    assert.equal(ids[0], 0);
    assert.ok(ids.includes(1));
    assert.equal(tok.decode(ids, { skipSpecial: true }), 'ab');
    assert.throws(() => tok.decode([5000]), /outside the vocabulary/);
  });

  it('tokenizer.json round-trips and @huggingface/tokenizers gives identical ids', () => {
    const json = JSON.parse(JSON.stringify(tok.toJSON())) as TokenizerJson;
    const again = Tokenizer.fromJSON(json);
    const hf = new HfTokenizer(json as never, {} as never);
    for (const s of [...TRICKY, docs[3]!.slice(0, 4000)]) {
      const ours = tok.encode(s);
      assert.deepEqual(again.encode(s), ours);
      assert.deepEqual(hf.encode(s, { add_special_tokens: false } as never).ids, ours, JSON.stringify(s.slice(0, 40)));
      if (ours.length) assert.equal(hf.decode(ours, { skip_special_tokens: false } as never), s);
    }
  });

  it("loads DeepSeek's tokenizer.json layout: a Sequence of regex Splits, then ByteLevel, added tokens", () => {
    const deepseekStyle = deepseekLayout(tok.toJSON());
    const ds = Tokenizer.fromJSON(deepseekStyle);
    const hf = new HfTokenizer(deepseekStyle as never, {} as never);
    for (const s of TRICKY) {
      assert.equal(ds.decode(ds.encode(s)), s);
      assert.deepEqual(hf.encode(s, { add_special_tokens: false } as never).ids, ds.encode(s), JSON.stringify(s));
    }
  });

  it("Python `tokenizers`' ids, recorded in test/fixtures/python-tokenizers.json, equal ours", () => {
    // written by scripts/python-tokenizers-fixture.js: our tokenizer.json and DeepSeek's layout, each encoded by
    // Hugging Face's Python library (the Rust implementation behind transformers)
    const fx = JSON.parse(readFileSync('test/fixtures/python-tokenizers.json', 'utf8')) as PythonFixture;
    assert.equal(fx.tokenizers.length, 2);
    fx.tokenizers.forEach((json, k) => {
      const t = Tokenizer.fromJSON(json);
      fx.texts.forEach((text, i) => {
        assert.deepEqual(t.encode(text), fx.ids[k]![i], `tokenizer ${k}, ${JSON.stringify(text.slice(0, 40))}`);
        assert.equal(t.decode(fx.ids[k]![i]!), fx.decoded[k]![i]);
      });
    });
  });

  it('the tokenizer.json we write lists each special token in the model vocab too, under its id', () => {
    // Python `tokenizers` takes an added token's id from the vocab; one missing there is appended after it
    const json = tok.toJSON();
    for (const t of json.added_tokens ?? []) assert.equal(json.model.vocab[t.content], t.id, t.content);
    assert.equal(Object.keys(json.model.vocab).length, tok.vocabSize);
  });

  it('Python `tokenizers` loads the tokenizer.json we write and gives identical ids (where one is installed)', (t) => {
    const python = pythonWithTokenizers();
    if (!python) return t.skip('no Python with `tokenizers` (set DSV2_PYTHON to one); the recorded fixture is checked above');
    const texts = [...TRICKY, docs[3]!.slice(0, 3000)];
    const tokenizers = [tok.toJSON(), deepseekLayout(tok.toJSON())];
    const r = spawnSync(python, ['scripts/python-tokenizers.py'], { input: JSON.stringify({ tokenizers, texts }), encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const py = JSON.parse(r.stdout) as { ids: number[][][]; decoded: string[][] };
    tokenizers.forEach((json, k) => {
      const ours = Tokenizer.fromJSON(json);
      texts.forEach((text, i) => {
        assert.deepEqual(py.ids[k]![i], ours.encode(text), `tokenizer ${k}, ${JSON.stringify(text.slice(0, 40))}`);
        assert.equal(py.decoded[k]![i], text);
      });
    });
  });

  it('rejects malformed tokenizer.json with a clear message', () => {
    assert.throws(() => Tokenizer.fromJSON({} as TokenizerJson), /no "model" section/);
    assert.throws(() => Tokenizer.fromJSON({ model: { type: 'Unigram', vocab: {}, merges: [] } } as never), /only BPE/);
    assert.throws(() => Tokenizer.fromJSON({ model: { vocab: {}, merges: [42] } } as never), /merge 0 is malformed/);
    assert.throws(
      () => Tokenizer.fromJSON({ pre_tokenizer: { type: 'Whitespace' }, model: { vocab: {}, merges: [] } } as never),
      /pre-tokenizer type "Whitespace" is not supported/,
    );
  });

  it('the corpus split holds out whole chapters, deterministically', () => {
    const a = splitDocs(corpus, 0.05);
    const b = splitDocs(corpus, 0.05);
    assert.deepEqual(
      a.val.map((d) => d.name),
      b.val.map((d) => d.name),
    );
    assert.ok(a.val.length >= 5 && a.val.length <= 9, `${a.val.length} validation chapters`);
    const trainNames = new Set(a.train.map((d) => d.name));
    for (const d of a.val) assert.ok(!trainNames.has(d.name));
    assert.equal(a.train.length + a.val.length, corpus.docs.length);
  });

  it('tokenBytes: an id past the tokenizer (a padded model vocabulary) stands for no text', () => {
    const tok = trainBpe(['the whale the whale'], { vocabSize: 270, specials: ['<s>'] });
    assert.equal(tok.tokenBytes(tok.vocabSize + 5).length, 0);
    assert.deepEqual(
      Array.from(tok.tokenBytes(tok.encode('the')[0]!)),
      Array.from(new TextEncoder().encode('the')).slice(0, tok.tokenBytes(tok.encode('the')[0]!).length),
    );
  });
});
