#!/usr/bin/env node
// The hostile-input probe of issue 12, rerun at its scale (outside the suite, which runs a few thousand of these):
// seeded mutants of every parser's input — safetensors header and body 14,000, config.json 12,000, tokenizer.json
// 12,000, sharded index.json 10,000 — each loaded as dsv2 loads it. Every outcome is counted as a clear error (one
// error of the parser's own kind, a message under 600 characters), a crash (any other error class: TypeError,
// RangeError…), slow (over 10 s), or accepted; a file opened outside the model folder is counted apart. For the
// accepted mutants it lists what was changed, most frequent first, to say which the format itself allows.
// Usage: npm run build && node scripts/hostile-probe.mjs [--scale 1]   (--scale 0.1: a tenth of the inputs)
import fs, { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { Buffer } from 'node:buffer';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const { Checkpoint, CheckpointError, SafetensorsFile } = await import(`${root}dist/src/io/safetensors.js`);
const { ConfigError, parseConfig } = await import(`${root}dist/src/model/config.js`);
const { Rng } = await import(`${root}dist/src/tensor/random.js`);
const { Tokenizer } = await import(`${root}dist/src/tokenizer/tokenizer.js`);
const { trainBpe } = await import(`${root}dist/src/tokenizer/train.js`);
const { mutateJson } = await import(`${root}dist/test/mutate.js`);

const scaleAt = process.argv.indexOf('--scale');
const scale = scaleAt > 0 ? Number(process.argv[scaleAt + 1]) : 1;
const G = join(root, 'test/golden');
const tmp = mkdtempSync(join(tmpdir(), 'dsv2-probe-'));

// every file the parsers open, to catch one outside the folder they were given
const opened = [];
const realOpen = fs.openSync;
fs.openSync = (p, ...rest) => {
  opened.push(resolve(String(p)));
  return realOpen(p, ...rest);
};
const realRead = fs.readFileSync;
fs.readFileSync = (p, ...rest) => {
  if (typeof p === 'string') opened.push(resolve(p));
  return realRead(p, ...rest);
};
syncBuiltinESMExports();

function run(name, n, kinds, make, load, folder) {
  const rng = new Rng(name.length * 7919);
  const row = { input: name, tried: 0, clear: 0, crash: 0, slow: 0, accepted: 0, outside: 0 };
  const accepted = new Map();
  const crashes = new Map();
  for (let i = 0; i < n; i++) {
    const log = [];
    const input = make(rng, log, i);
    opened.length = 0;
    const t0 = performance.now();
    let err = null;
    try {
      load(input);
    } catch (e) {
      err = e;
    }
    row.tried++;
    if (performance.now() - t0 > 10_000) row.slow++;
    if (folder && opened.some((p) => !p.startsWith(folder + '/') && !p.startsWith(tmp))) row.outside++;
    if (err === null) {
      row.accepted++;
      for (const l of log.length ? log : ['(bytes changed)'])
        accepted.set(l.replace(/\d+/g, 'N'), (accepted.get(l.replace(/\d+/g, 'N')) ?? 0) + 1);
    } else if ((kinds.some((k) => err instanceof k) || err?.constructor === Error) && err.message.length > 0 && err.message.length < 600)
      row.clear++;
    else {
      row.crash++;
      const key = `${err?.constructor?.name}: ${String(err?.message).slice(0, 120)}`;
      crashes.set(key, (crashes.get(key) ?? 0) + 1);
    }
  }
  return { row, accepted, crashes };
}

const results = [];
const n = (k) => Math.round(k * scale);

// config.json
const configs = ['lite', 'full'].map((c) => JSON.parse(readFileSync(`${G}/${c}/config.json`, 'utf8')));
results.push(
  run(
    'config.json',
    n(12000),
    [ConfigError],
    (rng, log, i) => mutateJson(configs[i % 2], rng, 0, log),
    (j) => parseConfig(j),
  ),
);

// safetensors header and body: raw bytes of the header region, the header's JSON, or the data region cut/extended
const file = readFileSync(`${G}/lite/model.safetensors`);
const hlen = Number(file.readBigUInt64LE(0));
const header = JSON.parse(file.subarray(8, 8 + hlen).toString('utf8'));
const stPath = join(tmp, 'm.safetensors');
// which header bytes lie inside a JSON string (quotes in tensor names are escaped, so counting them is enough)
const inString = [];
for (let k = 0, q = false; k < hlen; k++) {
  const ch = file[8 + k];
  if (ch === 0x22 && file[8 + k - 1] !== 0x5c) q = !q;
  inString.push(q && ch !== 0x22);
}
results.push(
  run(
    'safetensors header/body',
    n(14000),
    [CheckpointError],
    (rng, log, i) => {
      if (i % 3 === 0) {
        const b = Buffer.from(file);
        for (let k = 0; k < 1 + Math.floor(rng.uniform() * 6); k++) {
          const at = Math.floor(rng.uniform() * (8 + hlen));
          b[at] = Math.floor(rng.uniform() * 256);
          log.push(
            at < 8
              ? 'a byte of the length prefix'
              : inString[at - 8]
                ? 'a byte inside a JSON string (a name, dtype or metadata)'
                : 'a byte of JSON structure or padding',
          );
        }
        return b;
      }
      if (i % 3 === 1) {
        const h = Buffer.from(JSON.stringify(mutateJson(header, rng, 0, log)), 'utf8');
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(h.length));
        return Buffer.concat([len, h, file.subarray(8 + hlen)]);
      }
      const cut = Math.floor(rng.uniform() * 64) - 32; // data region 32 bytes short … 32 long
      log.push(cut < 0 ? 'data cut short' : 'bytes after the data');
      return cut < 0 ? file.subarray(0, file.length + cut) : Buffer.concat([file, Buffer.alloc(cut + 1)]);
    },
    (bytes) => {
      writeFileSync(stPath, bytes);
      const f = new SafetensorsFile(stPath);
      for (const t of f.tensors.keys()) f.read(t);
      f.close();
    },
  ),
);

// sharded index.json, a third of the mutants pointing a shard outside the folder
const dir = join(tmp, 'sharded');
mkdirSync(dir, { recursive: true });
copyFileSync(`${G}/lite/model.safetensors`, join(dir, 'model-00001-of-00001.safetensors'));
const names = Object.keys(header).filter((k) => k !== '__metadata__');
const base = { metadata: {}, weight_map: Object.fromEntries(names.map((k) => [k, 'model-00001-of-00001.safetensors'])) };
const outside = [
  '../lite/model.safetensors',
  '/etc/passwd',
  `${G}/lite/model.safetensors`,
  'sub/../../x',
  '..',
  '../../../../etc/hostname',
];
results.push(
  run(
    'sharded index.json',
    n(10000),
    [CheckpointError],
    (rng, log, i) => {
      const j = mutateJson(base, rng, 0, log);
      if (i % 3 === 0 && j && typeof j === 'object' && j.weight_map && typeof j.weight_map === 'object') {
        j.weight_map = { ...j.weight_map, [names[i % names.length]]: outside[i % outside.length] };
        log.push('a shard outside the folder');
      }
      return j;
    },
    (j) => {
      writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify(j));
      Checkpoint.open(join(dir, 'model.safetensors.index.json')).close();
    },
    dir,
  ),
);

// tokenizer.json (a BPE trained here), each loaded one encoding and decoding a string
const tok = trainBpe(['Call me Ishmael. Some years ago — never mind how long precisely 🐋 — having little money.'.repeat(4)], {
  vocabSize: 300,
  specials: ['<|bos|>', '<|eos|>'],
});
const tj = tok.toJSON();
results.push(
  run(
    'tokenizer.json',
    n(12000),
    [],
    (rng, log) => mutateJson(tj, rng, 0, log),
    (j) => {
      const t = Tokenizer.fromJSON(j);
      t.decode(t.encode('Call me 🐋 ok <|eos|>'));
    },
  ),
);

console.log('| input | tried | clear error | crash | slow > 10 s | opened outside the folder | accepted |');
console.log('|---|---|---|---|---|---|---|');
for (const { row } of results)
  console.log(`| ${row.input} | ${row.tried} | ${row.clear} | ${row.crash} | ${row.slow} | ${row.outside} | ${row.accepted} |`);
for (const { row, accepted, crashes } of results) {
  if (crashes.size) console.log(`\n${row.input}: crashes\n${[...crashes].map(([k, v]) => `  ${v}× ${k}`).join('\n')}`);
  console.log(`\n${row.input}: what the accepted mutants changed (most frequent first)`);
  for (const [k, v] of [...accepted].sort((a, b) => b[1] - a[1]).slice(0, 14)) console.log(`  ${String(v).padStart(5)}× ${k}`);
}
