// Seeded mutation fuzzing of every parser that reads a user's files: safetensors headers, config.json,
// tokenizer.json and model.safetensors.index.json (GGUF has its own in gguf.test.ts). Each mutant must load or be
// refused with one error of the parser's own kind — never a TypeError/RangeError from deep inside, never a hang,
// never a file opened outside the model folder. Bounded: a few hundred inputs each, a few seconds in all.
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Checkpoint, CheckpointError, SafetensorsFile } from '../src/io/safetensors.js';
import { ConfigError, parseConfig } from '../src/model/config.js';
import { Rng } from '../src/tensor/random.js';
import { Tokenizer, type TokenizerJson } from '../src/tokenizer/tokenizer.js';
import { trainBpe } from '../src/tokenizer/train.js';
import { mutateJson } from './mutate.js';

const tmp = mkdtempSync(join(tmpdir(), 'dsv2-fuzz-'));
const G = 'test/golden';

/** Crashes are errors whose class says a parser did not check something: TypeError, RangeError, SyntaxError… */
function assertClean(e: unknown, kinds: (abstract new (...a: never[]) => Error)[], what: string): void {
  if (e === null) return;
  const ok = kinds.some((k) => e instanceof k) || (e instanceof Error && e.constructor === Error);
  assert.ok(ok, `${what}: ${(e as Error).constructor?.name}: ${(e as Error).message}`);
  assert.ok((e as Error).message.length > 0 && (e as Error).message.length < 600, `${what}: message length`);
}

function attempt(f: () => unknown): unknown {
  try {
    f();
    return null;
  } catch (e) {
    return e;
  }
}

describe('parser fuzzing', () => {
  it('config.json: 1,500 mutants of the golden configs parse or give one ConfigError', () => {
    const rng = new Rng(1);
    const bases = ['lite', 'full'].map((n) => JSON.parse(readFileSync(`${G}/${n}/config.json`, 'utf8')) as unknown);
    const t0 = Date.now();
    for (let i = 0; i < 1500; i++) {
      const j = mutateJson(bases[i % 2], rng);
      assertClean(
        attempt(() => parseConfig(j)),
        [ConfigError],
        `mutant ${i}`,
      );
    }
    assert.ok(Date.now() - t0 < 10_000, 'no mutant is slow');
  });

  it('safetensors headers: 600 byte and JSON mutants load or give one CheckpointError', () => {
    const rng = new Rng(2);
    const file = readFileSync(`${G}/lite/model.safetensors`);
    const n = Number(file.readBigUInt64LE(0));
    const header = JSON.parse(file.subarray(8, 8 + n).toString('utf8')) as unknown;
    const path = join(tmp, 'm.safetensors');
    for (let i = 0; i < 600; i++) {
      let bytes: Buffer;
      if (i % 2 === 0) {
        // raw bytes of the header region changed
        bytes = Buffer.from(file);
        for (let k = 0; k < 1 + Math.floor(rng.uniform() * 6); k++)
          bytes[Math.floor(rng.uniform() * (8 + n))] = Math.floor(rng.uniform() * 256);
      } else {
        const h = Buffer.from(JSON.stringify(mutateJson(header, rng)), 'utf8');
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(h.length));
        bytes = Buffer.concat([len, h, file.subarray(8 + n)]);
      }
      writeFileSync(path, bytes);
      assertClean(
        attempt(() => {
          const f = new SafetensorsFile(path);
          for (const t of f.tensors.keys()) f.read(t);
          f.close();
        }),
        [CheckpointError],
        `mutant ${i}`,
      );
    }
  });

  it('index.json: 400 mutants never open a file outside the model folder and give one CheckpointError', () => {
    const rng = new Rng(3);
    const dir = join(tmp, 'sharded');
    mkdirSync(dir, { recursive: true });
    copyFileSync(`${G}/lite/model.safetensors`, join(dir, 'model-00001-of-00001.safetensors'));
    const names = Object.keys(
      JSON.parse(
        readFileSync(`${G}/lite/model.safetensors`)
          .subarray(8, 8 + Number(readFileSync(`${G}/lite/model.safetensors`).readBigUInt64LE(0)))
          .toString(),
      ) as object,
    ).filter((k) => k !== '__metadata__');
    const base = { metadata: {}, weight_map: Object.fromEntries(names.map((k) => [k, 'model-00001-of-00001.safetensors'])) };
    const outside = ['../lite/model.safetensors', '/etc/passwd', `${process.cwd()}/${G}/lite/model.safetensors`, 'sub/../../x', '..'];
    for (let i = 0; i < 400; i++) {
      const j = mutateJson(base, rng) as { weight_map?: Record<string, unknown> };
      if (i % 3 === 0 && j && typeof j === 'object' && j.weight_map && typeof j.weight_map === 'object') {
        const wm = { ...j.weight_map };
        wm[names[i % names.length]!] = outside[i % outside.length];
        j.weight_map = wm;
      }
      writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify(j));
      const e = attempt(() => Checkpoint.open(join(dir, 'model.safetensors.index.json')).close());
      assertClean(e, [CheckpointError], `mutant ${i}`);
      if (i % 3 === 0 && e === null) assert.fail(`mutant ${i}: a shard outside the folder was accepted`);
    }
  });

  it('tokenizer.json: 800 mutants load or give one error, and a loaded one encodes and decodes', () => {
    const rng = new Rng(4);
    const tok = trainBpe(['Call me Ishmael. Some years ago — never mind how long precisely 🐋 — having little money.'.repeat(4)], {
      vocabSize: 300,
      specials: ['<|bos|>', '<|eos|>'],
    });
    const base = tok.toJSON();
    const t0 = Date.now();
    for (let i = 0; i < 800; i++) {
      const j = mutateJson(base, rng) as TokenizerJson;
      const e = attempt(() => {
        const t = Tokenizer.fromJSON(j);
        t.decode(t.encode('Call me 🐋 ok <|eos|>'));
      });
      assertClean(e, [], `mutant ${i}`);
    }
    assert.ok(Date.now() - t0 < 20_000, `no mutant hangs (${Date.now() - t0} ms)`);
  });
});

describe('refusals found by the hostile-input probe (scripts/hostile-probe.mjs)', () => {
  it('a safetensors file with bytes between its tensors, or before the first, is refused naming them', () => {
    const file = readFileSync(`${G}/lite/model.safetensors`);
    const n = Number(file.readBigUInt64LE(0));
    const header = JSON.parse(file.subarray(8, 8 + n).toString('utf8')) as Record<string, { data_offsets?: [number, number] }>;
    const names = Object.keys(header).filter((k) => k !== '__metadata__');
    const data = file.subarray(8 + n);
    const write = (h: unknown, body: Uint8Array): string => {
      const hb = Buffer.from(JSON.stringify(h), 'utf8');
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(hb.length));
      const path = join(tmp, `hole-${Math.random()}.safetensors`);
      writeFileSync(path, Buffer.concat([len, hb, body]));
      return path;
    };
    // every tensor moved 4 bytes later: a hole before the first
    const shifted = Object.fromEntries(
      Object.entries(header).map(([k, v]) => [k, k === '__metadata__' ? v : { ...v, data_offsets: v.data_offsets!.map((o) => o + 4) }]),
    );
    assert.throws(() => new SafetensorsFile(write(shifted, Buffer.concat([Buffer.alloc(4), data]))), /starts at data byte 4, not 0/);
    // the second tensor (by offset) dropped from the header: its bytes, between the first and the third, belong to none
    const byOffset = [...names].sort((a, b) => header[a]!.data_offsets![0] - header[b]!.data_offsets![0]);
    const dropped = Object.fromEntries(Object.entries(header).filter(([k]) => k !== byOffset[1]));
    assert.throws(
      () => new SafetensorsFile(write(dropped, data)),
      new RegExp(`\\d+ bytes between tensors '${byOffset[0]}' and '${byOffset[2]}' belong to none`),
    );
  });

  it('config.json fields dsv2 reads past still need their types; aux_loss_alpha must be ≥ 0', () => {
    const base = JSON.parse(readFileSync(`${G}/lite/config.json`, 'utf8')) as Record<string, unknown>;
    for (const [k, v, msg] of [
      ['architectures', -1, /'architectures' must be a list of strings/],
      ['attention_bias', true, /'attention_bias' must be false/],
      ['use_cache', 'yes', /'use_cache' must be true or false/],
      ['ep_size', 0, /'ep_size' must be an integer ≥ 1/],
      ['aux_loss_alpha', -0.5, /'aux_loss_alpha' must be ≥ 0/],
    ] as const)
      assert.throws(() => parseConfig({ ...base, [k]: v }), msg, k);
  });

  it('tokenizer.json sections of the wrong type and BPE options dsv2 does not implement are refused', () => {
    const base = trainBpe(['hello world, hello experts'], { vocabSize: 280 }).toJSON() as unknown as Record<string, unknown>;
    const model = base['model'] as Record<string, unknown>;
    for (const [j, msg] of [
      [{ ...base, padding: 5 }, /"padding" must be an object or null/],
      [{ ...base, version: 1 }, /"version" must be a string/],
      [{ ...base, model: { ...model, byte_fallback: true } }, /byte_fallback .* is not supported/],
      [{ ...base, model: { ...model, end_of_word_suffix: '</w>' } }, /end_of_word_suffix .* is not supported/],
    ] as const)
      assert.throws(() => Tokenizer.fromJSON(j as unknown as TokenizerJson), msg);
  });
});
