// Shared by the tokenizer tests and scripts/python-tokenizers-fixture.js: texts that stress a byte-level BPE
// (CJK, emoji sequences, combining marks, whitespace runs, CRLF, digits, specials inline, contractions) and
// DeepSeek's own tokenizer.json pre-tokenizer layout.
import type { TokenizerJson } from '../src/tokenizer/tokenizer.js';

export const TOKENIZER_TEXTS = [
  'Call me Ishmael. Some years ago—never mind how long precisely—',
  '你好，世界！深度求索 DeepSeek-V2 模型。',
  'Emoji: 🐋🐳 👩‍👩‍👧 and flags 🇫🇷, naïve café, Ωμέγα, Ж',
  '  leading spaces, trailing spaces   \n\n\ttabs\r\nCRLF and 12345 678.9',
  'special tokens inline: <｜begin▁of▁sentence｜>Hello<｜end▁of▁sentence｜> done',
  '',
  "it's what we'll do, don't",
];

/** The same vocabulary and merges behind DeepSeek's pre-tokenizer: a Sequence of regex Splits, then ByteLevel. */
export function deepseekLayout(base: TokenizerJson): TokenizerJson {
  return {
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
}
