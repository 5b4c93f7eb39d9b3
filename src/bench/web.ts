// Tokens/s of the web app in headless Chromium (the wasm backend in the page's worker) for generation and training of
// `small`, next to the same work in Node on the wasm and native backends, measured in one run. Needs Chromium and
// playwright-core (a development dependency); `dsv2 bench web [--model DIR]`.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { Engine } from '../infer/engine.js';
import { modelToFiles } from '../model/from-files.js';
import { loadModel } from '../model/load.js';
import { DeepseekV2ForCausalLM } from '../model/model.js';
import { preset } from '../model/presets.js';
import { CHROMIUM, CHROMIUM_ARGS, startDsv2 } from './browser.js';
import { median } from './timing.js';
import { trainStepper } from './train.js';

export interface WebBenchRecord {
  bench: 'web';
  what: string;
  chromium_tok_s: number;
  node_wasm_tok_s: number;
  node_native_tok_s: number | null;
  /** Chromium ÷ Node on the same (wasm) kernels, and Chromium ÷ native. */
  vs_node_wasm: number;
  vs_native: number | null;
  threads: number;
}

const PROMPT = Array.from({ length: 16 }, (_, i) => 2 + i);
const NEW_TOKENS = 128;

function nodeDecodeTokS(b: Backend, dir: string): number {
  const model = loadModel(dir, { trainable: false, backend: b });
  const run = (): number => {
    const engine = new Engine(model, { maxNumSeqs: 1, kvCacheMiB: 64 });
    engine.add('b', PROMPT, { maxTokens: NEW_TOKENS, temperature: 0, ignoreEos: true });
    const t0 = performance.now();
    let n = 0;
    while (engine.stats().running + engine.stats().waiting > 0) n += engine.step().filter((e) => e.id >= 0).length;
    return n / ((performance.now() - t0) / 1000);
  };
  run();
  return median([run(), run(), run()]);
}

function nodeTrainTokS(b: Backend): number {
  const s = trainStepper(b, 'small');
  s.warmUp();
  return median(
    Array.from({ length: 5 }, () => {
      const t = s.step();
      return (s.batch * s.seq) / ((t.forward + t.backward + t.optimizer) / 1000);
    }),
  );
}

export async function benchWeb(
  wasm: Backend,
  native: Backend | null,
  opts: { model?: string; chromium?: string } = {},
): Promise<WebBenchRecord[]> {
  let pw: typeof import('playwright-core');
  try {
    pw = await import('playwright-core');
  } catch {
    throw new Error('dsv2 bench web needs playwright-core (a development dependency: npm ci installs it)');
  }
  let dir = opts.model;
  if (!dir) {
    dir = mkdtempSync(join(tmpdir(), 'dsv2-bench-web-'));
    const m = DeepseekV2ForCausalLM.init(preset('small'), { seed: 0, backend: wasm });
    for (const [name, bytes] of modelToFiles(m, null)) writeFileSync(join(dir, name), bytes);
  }
  const { proc: server, url } = await startDsv2(['web', '--model', dir, '--port', '0'], /open (http:\/\/\S+)/);
  const browser = await pw.chromium.launch({ executablePath: opts.chromium ?? CHROMIUM, args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage();
    await page.goto(url);
    type S = {
      ready: boolean;
      info: unknown;
      generating: boolean;
      genTokS: number;
      trained: boolean;
      trainTokS: number[];
      errors: string[];
      threads: number;
    };
    const st = (): Promise<S> => page.evaluate(() => (window as unknown as { dsv2: S }).dsv2);
    await page.waitForFunction(() => (window as unknown as { dsv2?: S }).dsv2?.ready, null, { timeout: 60_000 });
    await page.click('#load');
    await page.waitForFunction(() => (window as unknown as { dsv2: S }).dsv2.info !== null, null, { timeout: 120_000 });
    await page.fill('#prompt', JSON.stringify(PROMPT));
    await page.fill('#max-tokens', String(NEW_TOKENS));
    await page.fill('#temperature', '0');
    const gens: number[] = [];
    for (let i = 0; i < 4; i++) {
      await page.click('#generate-btn');
      await page.waitForFunction(() => !(window as unknown as { dsv2: S }).dsv2.generating, null, { timeout: 300_000 });
      if (i > 0) gens.push((await st()).genTokS); // the first is the warm-up (compilation, first touches)
    }
    await page.click('button[data-tab=train]');
    await page.check('input[name=preset][value=small]');
    await page.check('input[name=corpus][value=moby-dick]');
    for (const [id, v] of [
      ['vocab', 4096],
      ['steps', 6],
      ['batch', 8],
      ['seq', 256],
      ['lr', 0.0003],
    ] as const)
      await page.fill(`#${id}`, String(v));
    await page.click('#train-btn');
    await page.waitForFunction(
      () => (window as unknown as { dsv2: S }).dsv2.trained || (window as unknown as { dsv2: S }).dsv2.errors.length > 0,
      null,
      {
        timeout: 600_000,
      },
    );
    const s = await st();
    if (s.errors.length) throw new Error(`the page failed: ${s.errors.join('; ')}`);
    const chromeTrain = median(s.trainTokS.slice(1));
    const chromeGen = median(gens);
    const nodeGen = nodeDecodeTokS(wasm, dir);
    const nativeGen = native ? nodeDecodeTokS(native, dir) : null;
    const nodeTrain = nodeTrainTokS(wasm);
    const nativeTrain = native ? nodeTrainTokS(native) : null;
    const rec = (what: string, c: number, w: number, n: number | null): WebBenchRecord => ({
      bench: 'web',
      what,
      chromium_tok_s: c,
      node_wasm_tok_s: w,
      node_native_tok_s: n,
      vs_node_wasm: c / w,
      vs_native: n ? c / n : null,
      threads: s.threads,
    });
    return [
      rec(`generate small (batch 1, ${NEW_TOKENS} tokens after ${PROMPT.length})`, chromeGen, nodeGen, nativeGen),
      rec('train small (8×256, forward + backward + AdamW)', chromeTrain, nodeTrain, nativeTrain),
    ];
  } finally {
    await browser.close();
    server.kill('SIGTERM');
  }
}
