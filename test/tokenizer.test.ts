import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { loadCorpus, splitDocs } from '../src/data/corpus.js';
import { Tokenizer, type TokenizerJson } from '../src/tokenizer/tokenizer.js';
import { trainBpe } from '../src/tokenizer/train.js';

const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';
const TRICKY = [
  'Call me Ishmael. Some years ago—never mind how long precisely—',
  '你好，世界！深度求索 DeepSeek-V2 模型。',
  'Emoji: 🐋🐳 👩‍👩‍👧 and flags 🇫🇷, naïve café, Ωμέγα, Ж',
  '  leading spaces, trailing spaces   \n\n\ttabs\r\nCRLF and 12345 678.9',
  `special tokens inline: ${BOS}Hello${EOS} done`,
  '',
  "it's what we'll do, don't",
];

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
    const base = tok.toJSON();
    const deepseekStyle = {
      ...base,
      pre_tokenizer: {
        type: 'Sequence',
        pretokenizers: [
          { type: 'Split', pattern: { Regex: '[\r\n]' }, behavior: 'Isolated', invert: false },
          {
            type: 'Split',
            pattern: { Regex: '\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-Ֆ]+' },
            behavior: 'Isolated',
            invert: false,
          },
          { type: 'Split', pattern: { Regex: '\\s?[!-/:-~！-／：-～‘-‟　-。]+' }, behavior: 'Isolated', invert: false },
          { type: 'Split', pattern: { Regex: '\\s+$' }, behavior: 'Isolated', invert: false },
          { type: 'Split', pattern: { Regex: '[一-龥ࠀ-一가-퟿]+' }, behavior: 'Isolated', invert: false },
          { type: 'Split', pattern: { Regex: '\\p{N}+' }, behavior: 'Isolated', invert: false },
          { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
        ],
      },
    } as TokenizerJson;
    const ds = Tokenizer.fromJSON(deepseekStyle);
    const hf = new HfTokenizer(deepseekStyle as never, {} as never);
    for (const s of TRICKY) {
      assert.equal(ds.decode(ds.encode(s)), s);
      assert.deepEqual(hf.encode(s, { add_special_tokens: false } as never).ids, ds.encode(s), JSON.stringify(s));
    }
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
});
