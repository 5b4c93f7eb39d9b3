#!/usr/bin/env node
// Outside the test suite: does llama.cpp load the GGUFs dsv2 writes, generate the same greedy tokens, and how fast
// does it decode them next to us? llama.cpp comes from the node-llama-cpp npm package's prebuilt CPU binaries,
// installed in a folder of your choice (not a dependency of this project):
//
//   mkdir -p /tmp/nlc && (cd /tmp/nlc && npm init -y && npm install node-llama-cpp)
//   npm run build && node scripts/llama-cpp-check.mjs /tmp/nlc FILE.gguf [FILE.gguf …]
//
// For each file: greedy continuations of three prompts (16 tokens) from both, and batch-1 decode tok/s of 128 tokens
// after a 16-token prompt, the two engines timed alternately, 2 threads each.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { defaultBackend } from '../dist/src/backend/registry.js';
import { generate } from '../dist/src/infer/generate.js';
import { loadModel } from '../dist/src/model/load.js';

const [nlcDir, ...files] = process.argv.slice(2);
if (!nlcDir || files.length === 0) {
  console.error('usage: node scripts/llama-cpp-check.mjs NODE_LLAMA_CPP_DIR FILE.gguf …');
  process.exit(2);
}
const req = createRequire(join(nlcDir, 'package.json'));
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(req.resolve('node-llama-cpp')).href);
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });

async function theirs(model, prompt, n) {
  const ctx = await model.createContext({ contextSize: 512, threads: 2 });
  const seq = ctx.getSequence();
  const out = [];
  const t0 = performance.now();
  let t1 = 0;
  for await (const t of seq.evaluate(prompt, { temperature: 0 })) {
    if (out.length === 0) t1 = performance.now();
    out.push(t);
    if (out.length >= n) break;
  }
  const ms = performance.now() - t1;
  await ctx.dispose();
  return { ids: out, tokS: (n - 1) / (ms / 1000), ttft: t1 - t0 };
}

function ours(model, prompt, n) {
  const t0 = performance.now();
  let t1 = 0;
  let k = 0;
  const [ids] = generate(model, [prompt], {
    maxNewTokens: n,
    params: { temperature: 0, maxTokens: n },
    onEvent: () => {
      if (k++ === 0) t1 = performance.now();
    },
  });
  return { ids, tokS: (n - 1) / ((performance.now() - t1) / 1000), ttft: t1 - t0 };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const file of files) {
  const theirModel = await llama.loadModel({ modelPath: file });
  const ourModel = loadModel(file, { trainable: false, backend: defaultBackend() });
  const V = ourModel.config.vocab_size;
  const prompts = [
    [1, 50, 60, 70, 80],
    [1, 300 % V, 200 % V, 100 % V],
    [1, 7, 8, 9, 10, 11, 12],
  ];
  let same = 0;
  for (const p of prompts) {
    const a = ours(ourModel, p, 16).ids;
    const b = (await theirs(theirModel, p, 16)).ids;
    const ok = JSON.stringify(a) === JSON.stringify(b);
    same += ok ? 1 : 0;
    if (!ok) console.log(`${file}: prompt ${JSON.stringify(p)}: ours ${JSON.stringify(a)}, llama.cpp ${JSON.stringify(b)}`);
  }
  const speedPrompt = Array.from({ length: 16 }, (_, i) => (i * 37 + 5) % V);
  const us = [];
  const them = [];
  for (let r = 0; r < 5; r++) {
    us.push(ours(ourModel, speedPrompt, 128).tokS);
    them.push((await theirs(theirModel, speedPrompt, 128)).tokS);
  }
  console.log(
    JSON.stringify({
      file,
      greedy_same: `${same}/${prompts.length}`,
      decode_tok_s: { dsv2: +median(us).toFixed(1), llama_cpp: +median(them).toFixed(1) },
      ratio: +(median(us) / median(them)).toFixed(2),
    }),
  );
  await theirModel.dispose();
}
