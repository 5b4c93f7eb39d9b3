// Byte-level BPE (GPT-2 / DeepSeek style) with Hugging Face tokenizer.json in and out.
// Pipeline, as HF runs it: split out special (added) tokens → pre-tokenize (regex Split steps, then ByteLevel's
// byte→char map) → BPE merges by rank inside each piece → ids. Decoding maps ids back to byte-level characters and
// the characters back to UTF-8 bytes, so encode/decode round-trips any text exactly.
import { brief } from '../io/brief.js';
import { byteLevelBytes, fromByteLevel, toByteLevel } from './bytes.js';

/** GPT-2's pre-tokenizer pattern (contractions, letters, numbers, punctuation, whitespace runs). */
export const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

export interface SpecialToken {
  id: number;
  content: string;
}

type Step = { kind: 'split'; re: RegExp; behavior: string } | { kind: 'bytelevel'; addPrefixSpace: boolean; useRegex: boolean };

export interface TokenizerJson {
  version?: string;
  added_tokens?: { id: number; content: string; special?: boolean; [k: string]: unknown }[];
  normalizer?: unknown;
  pre_tokenizer?: unknown;
  post_processor?: unknown;
  decoder?: unknown;
  model: { type?: string; vocab: Record<string, number>; merges: (string | [string, string])[]; [k: string]: unknown };
  [k: string]: unknown;
}

function bad(msg: string): never {
  throw new Error(`tokenizer.json: ${msg}`);
}

function parsePreTokenizer(pt: unknown, depth = 0): Step[] {
  if (pt === null || pt === undefined) return [];
  if (typeof pt !== 'object' || Array.isArray(pt) || depth > 8) bad(`pre_tokenizer ${brief(pt)} is not a pre-tokenizer object`);
  const o = pt as Record<string, unknown>;
  switch (o['type']) {
    case 'Sequence': {
      const list = o['pretokenizers'] ?? [];
      if (!Array.isArray(list)) bad('a Sequence pre-tokenizer needs a "pretokenizers" list');
      return list.flatMap((p) => parsePreTokenizer(p, depth + 1));
    }
    case 'Split': {
      const pat = o['pattern'] as { Regex?: unknown; String?: unknown } | undefined;
      if (pat !== undefined && (typeof pat !== 'object' || pat === null))
        bad(`Split pattern ${brief(pat)} is not {"Regex": …} or {"String": …}`);
      const raw = pat?.Regex ?? pat?.String;
      if (raw !== undefined && (typeof raw !== 'string' || raw.length > 10_000))
        bad(`Split pattern ${brief(raw)} is not a string of at most 10,000 characters`);
      const src =
        typeof pat?.Regex === 'string'
          ? pat.Regex
          : typeof pat?.String === 'string'
            ? pat.String.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
            : undefined;
      if (src === undefined) bad('a Split pre-tokenizer without a pattern');
      if (o['invert']) bad('inverted Split pre-tokenizers are not supported');
      let re: RegExp;
      try {
        re = new RegExp(src, 'gu');
      } catch (e) {
        bad(`Split pattern ${brief(src)} is not a valid regular expression here (${(e as Error).message})`);
      }
      const behavior = o['behavior'] ?? 'Isolated';
      if (!['Isolated', 'Removed', 'MergedWithPrevious'].includes(behavior as string))
        bad(`Split behavior ${brief(behavior)} is not supported (Isolated, Removed, MergedWithPrevious)`);
      return [{ kind: 'split', re, behavior: behavior as string }];
    }
    case 'ByteLevel':
      return [{ kind: 'bytelevel', addPrefixSpace: o['add_prefix_space'] === true, useRegex: o['use_regex'] !== false }];
    case 'Digits':
      return [{ kind: 'split', re: o['individual_digits'] ? /\p{N}/gu : /\p{N}+/gu, behavior: 'Isolated' }];
    default:
      return bad(`pre-tokenizer type ${brief(o['type'])} is not supported (supported: Sequence, Split, ByteLevel, Digits)`);
  }
}

/** Split `s` by a regex the way HF's Split does (Isolated: matches become their own pieces). */
function splitBy(s: string, re: RegExp, behavior: string): string[] {
  const out: string[] = [];
  let last = 0;
  re.lastIndex = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    if (m[0].length === 0) {
      // step over a whole code point: one UTF-16 unit into an emoji would find the same empty match again
      re.lastIndex = m.index + ((s.codePointAt(m.index) ?? 0) > 0xffff ? 2 : 1);
      continue;
    }
    if (m.index > last) out.push(s.slice(last, m.index));
    if (behavior === 'Removed') {
      // drop the match
    } else if (behavior === 'MergedWithPrevious' && out.length && m.index === last) out[out.length - 1] += m[0];
    else out.push(m[0]);
    last = m.index + m[0].length;
  }
  if (last < s.length) out.push(s.slice(last));
  return out;
}

/** Replace every adjacent (a, b) in syms, left to right, by a + b. */
export function mergePair(syms: readonly string[], a: string, b: string): string[] {
  const merged: string[] = [];
  for (let i = 0; i < syms.length; i++) {
    if (i < syms.length - 1 && syms[i] === a && syms[i + 1] === b) {
      merged.push(a + b);
      i++;
    } else merged.push(syms[i]!);
  }
  return merged;
}

export class Tokenizer {
  private readonly ranks = new Map<string, number>();
  private readonly idToToken: string[] = [];
  private readonly cache = new Map<string, number[]>();
  private readonly specialRe: RegExp | null;
  private readonly steps: Step[];

  constructor(
    readonly vocab: ReadonlyMap<string, number>,
    readonly merges: readonly [string, string][],
    readonly specials: readonly SpecialToken[],
    steps?: Step[],
  ) {
    merges.forEach(([a, b], i) => this.ranks.set(`${a} ${b}`, i));
    for (const [tok, id] of vocab) this.idToToken[id] = tok;
    for (const s of specials) this.idToToken[s.id] = s.content;
    const esc = specials.map((s) => s.content.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).sort((a, b) => b.length - a.length);
    this.specialRe = esc.length ? new RegExp(esc.join('|'), 'g') : null;
    this.steps = steps ?? [
      { kind: 'split', re: new RegExp(GPT2_PATTERN, 'gu'), behavior: 'Isolated' },
      { kind: 'bytelevel', addPrefixSpace: false, useRegex: false },
    ];
  }

  get vocabSize(): number {
    return this.idToToken.length;
  }

  idOf(token: string): number | undefined {
    return this.specials.find((s) => s.content === token)?.id ?? this.vocab.get(token);
  }

  /** Pre-tokenize: pieces of byte-level characters. */
  private pieces(text: string): string[] {
    let parts = [text];
    let byteLevel = false;
    for (const st of this.steps) {
      if (st.kind === 'split') parts = parts.flatMap((p) => splitBy(p, st.re, st.behavior));
      else {
        if (st.addPrefixSpace) parts = parts.map((p, i) => (i === 0 && !p.startsWith(' ') ? ' ' + p : p));
        if (st.useRegex) parts = parts.flatMap((p) => splitBy(p, new RegExp(GPT2_PATTERN, 'gu'), 'Isolated'));
        parts = parts.map(toByteLevel);
        byteLevel = true;
      }
    }
    return byteLevel ? parts : parts.map(toByteLevel);
  }

  /** BPE inside one piece: repeatedly merge the adjacent pair of lowest rank. */
  private bpe(piece: string): number[] {
    const hit = this.cache.get(piece);
    if (hit) return hit;
    let syms = Array.from(piece);
    while (syms.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i < syms.length - 1; i++) {
        const r = this.ranks.get(`${syms[i]} ${syms[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      syms = mergePair(syms, syms[best]!, syms[best + 1]!);
    }
    const ids = syms.map((s) => {
      const id = this.vocab.get(s);
      if (id === undefined) throw new Error(`tokenizer: no id for symbol ${brief(s)} (is the byte alphabet in the vocabulary?)`);
      return id;
    });
    if (this.cache.size < 200_000) this.cache.set(piece, ids);
    return ids;
  }

  /** Text → ids. Special-token strings in the text become their ids; `addBos` prepends the BOS id. */
  encode(text: string, opts: { addBos?: boolean; bosId?: number } = {}): number[] {
    const out: number[] = [];
    if (opts.addBos) {
      if (opts.bosId === undefined) throw new Error('tokenizer: addBos needs a bosId');
      out.push(opts.bosId);
    }
    const emit = (chunk: string): void => {
      if (!chunk) return;
      for (const p of this.pieces(chunk)) for (const id of this.bpe(p)) out.push(id);
    };
    if (!this.specialRe) {
      emit(text);
      return out;
    }
    let last = 0;
    this.specialRe.lastIndex = 0;
    for (let m = this.specialRe.exec(text); m; m = this.specialRe.exec(text)) {
      emit(text.slice(last, m.index));
      out.push(this.specials.find((s) => s.content === m![0])!.id);
      last = m.index + m[0].length;
    }
    emit(text.slice(last));
    return out;
  }

  /** ids → text; special tokens are kept unless skipSpecial. */
  decode(ids: readonly number[], opts: { skipSpecial?: boolean } = {}): string {
    let out = '';
    let run = '';
    for (const id of ids) {
      const special = this.specials.find((s) => s.id === id);
      if (special) {
        out += fromByteLevel(run);
        run = '';
        if (!opts.skipSpecial) out += special.content;
        continue;
      }
      const tok = this.idToToken[id];
      if (tok === undefined) throw new Error(`tokenizer: id ${id} is outside the vocabulary (size ${this.vocabSize})`);
      run += tok;
    }
    return out + fromByteLevel(run);
  }

  /** Whether id is a special (added) token. */
  isSpecial(id: number): boolean {
    return this.specials.some((s) => s.id === id);
  }

  /**
   * The raw bytes one id stands for (a special token: its content's UTF-8, or nothing with skipSpecial). A token's
   * bytes may end inside a UTF-8 character; streaming decoders (src/infer/text.ts) join them across tokens. An id
   * outside the tokenizer's vocabulary gives no bytes.
   */
  tokenBytes(id: number, opts: { skipSpecial?: boolean } = {}): Uint8Array {
    const special = this.specials.find((s) => s.id === id);
    if (special) return opts.skipSpecial ? new Uint8Array(0) : new TextEncoder().encode(special.content);
    // a model's vocabulary is often padded past the tokenizer's (DeepSeek-V2: 102,400 rows for ~100,000 tokens):
    // an id the tokenizer does not know stands for no text, rather than failing a stream
    const tok = this.idToToken[id];
    return tok === undefined ? new Uint8Array(0) : byteLevelBytes(tok);
  }

  /** The Hugging Face tokenizer.json form (loadable by `tokenizers` in Python and @huggingface/tokenizers). */
  toJSON(): TokenizerJson {
    // The special tokens go into the model's vocab as well as into added_tokens: Python `tokenizers` takes an added
    // token's id from the vocab and, for one missing there, appends it after the vocab (ignoring its "id"): ours
    // would have become 1022 and 1023, colliding with two merges.
    const vocab: Record<string, number> = {};
    const all = [...this.vocab, ...this.specials.filter((s) => !this.vocab.has(s.content)).map((s) => [s.content, s.id] as const)];
    for (const [t, id] of all.sort((a, b) => a[1] - b[1])) vocab[t] = id;
    const splits = this.steps.filter((s): s is Extract<Step, { kind: 'split' }> => s.kind === 'split');
    return {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: this.specials.map((s) => ({
        id: s.id,
        content: s.content,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: true,
        special: true,
      })),
      normalizer: null,
      pre_tokenizer: {
        type: 'Sequence',
        pretokenizers: [
          ...splits.map((s) => ({ type: 'Split', pattern: { Regex: s.re.source }, behavior: s.behavior, invert: false })),
          { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
        ],
      },
      post_processor: null,
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: null,
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: false,
        vocab,
        merges: this.merges.map(([a, b]) => [a, b]),
      },
    };
  }

  static fromJSON(j: TokenizerJson): Tokenizer {
    if (!j || typeof j !== 'object' || !j.model || typeof j.model !== 'object') bad('no "model" section');
    const type = j.model.type ?? 'BPE';
    if (type !== 'BPE') bad(`model type ${brief(type)} is not supported (only BPE)`);
    // fields dsv2 does not read must still have their format's types (a number where an object goes is a broken file)
    const obj = (v: unknown): boolean => v === undefined || v === null || (typeof v === 'object' && !Array.isArray(v));
    for (const k of ['truncation', 'padding', 'decoder', 'post_processor', 'pre_tokenizer', 'normalizer'] as const)
      if (!obj((j as Record<string, unknown>)[k])) bad(`"${k}" must be an object or null, got ${brief((j as Record<string, unknown>)[k])}`);
    if (j.version !== undefined && typeof j.version !== 'string') bad(`"version" must be a string, got ${brief(j.version)}`);
    const m = j.model as Record<string, unknown>;
    if (m['byte_fallback'] !== undefined && m['byte_fallback'] !== false && m['byte_fallback'] !== null)
      bad(`model.byte_fallback ${brief(m['byte_fallback'])} is not supported (byte-level BPE needs none)`);
    for (const k of ['continuing_subword_prefix', 'end_of_word_suffix'])
      if (m[k] !== undefined && m[k] !== null && m[k] !== '') bad(`model.${k} ${brief(m[k])} is not supported`);
    if (m['dropout'] !== undefined && m['dropout'] !== null && m['dropout'] !== 0)
      bad(`model.dropout ${brief(m['dropout'])} is not supported`);
    if (j.normalizer !== undefined && j.normalizer !== null) {
      const n = j.normalizer as { type?: string; normalizers?: unknown[] };
      if (!(n.type === 'Sequence' && (n.normalizers ?? []).length === 0)) bad(`normalizer ${brief(n.type)} is not supported`);
    }
    if (!j.model.vocab || typeof j.model.vocab !== 'object' || Array.isArray(j.model.vocab)) bad('model.vocab is missing');
    const vocab = new Map(Object.entries(j.model.vocab));
    const ids = new Set<number>();
    for (const [t, id] of vocab) {
      // ids index arrays: integers in a plausible range, each used once
      if (!Number.isInteger(id) || id < 0 || id >= 1 << 24) bad(`model.vocab[${brief(t)}] is ${brief(id)}, not a token id`);
      if (ids.has(id)) bad(`model.vocab gives id ${id} to two tokens`);
      ids.add(id);
    }
    if (j.model.merges !== undefined && !Array.isArray(j.model.merges)) bad('model.merges must be a list');
    const merges = (j.model.merges ?? []).map((m, i): [string, string] => {
      if (Array.isArray(m) && m.length === 2) return [m[0], m[1]];
      if (typeof m === 'string') {
        const sp = m.indexOf(' ', 1);
        if (sp > 0) return [m.slice(0, sp), m.slice(sp + 1)];
      }
      return bad(`merge ${i} is malformed: ${brief(m)}`);
    });
    if (j.added_tokens !== undefined && j.added_tokens !== null && !Array.isArray(j.added_tokens)) bad('added_tokens must be a list');
    const specials = (j.added_tokens ?? []).map((t, i) => {
      if (!t || typeof t !== 'object') bad(`added_tokens[${i}] is not an object`);
      if (!Number.isInteger(t.id) || t.id < 0 || t.id >= 1 << 24) bad(`added_tokens[${i}].id is ${brief(t.id)}, not a token id`);
      if (typeof t.content !== 'string' || t.content.length === 0 || t.content.length > 256)
        bad(`added_tokens[${i}].content must be a string of 1 to 256 characters, got ${brief(t.content)}`);
      const clash = vocab.get(t.content);
      if (ids.has(t.id) && clash !== t.id)
        bad(`added_tokens[${i}] (${brief(t.content)}) takes id ${t.id}, which the vocabulary gives another token`);
      return { id: t.id, content: t.content };
    });
    for (const [a, b] of merges)
      if (!vocab.has(a) || !vocab.has(b) || !vocab.has(a + b))
        bad(`merge ${brief(`${a} ${b}`)} joins symbols the vocabulary does not hold`);
    return new Tokenizer(vocab, merges, specials, parsePreTokenizer(j.pre_tokenizer));
  }
}
