// The browser side, in a real browser: Debian's headless Chromium driven by playwright-core against `dsv2 web` (a real
// process on loopback). The page runs the wasm backend (threads: the server sends the cross-origin isolation
// headers); the golden `gen` case gives the reference's greedy tokens; the routing the page shows is the router's;
// training `tiny` in the page's worker lowers the loss and its downloaded checkpoint loads in Node. Screenshots of
// both views are written to test-artifacts/. Also: the library's browser entry bundles without any `node:` module.
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { build } from 'esbuild';
import { chromium, type Browser, type Page } from 'playwright-core';
import * as T from '../src/node.js';
import { CHROMIUM, CHROMIUM_ARGS, startDsv2 } from '../src/bench/browser.js';
import { modelFiles } from '../src/cli/commands/web.js';

const ARTIFACTS = 'test-artifacts';
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const cases = (name: string): any => JSON.parse(readFileSync(`test/golden/${name}/cases.json`, 'utf8'));

interface Shown {
  ready: boolean;
  info: unknown;
  generating: boolean;
  tokens: { id: number; text: string; experts: unknown }[];
  threads: number;
  errors: string[];
}
const shown = (page: Page): Promise<Shown> => page.evaluate(() => (window as unknown as { dsv2: Shown }).dsv2);

describe('the browser-safe entry', () => {
  it('bundles for the browser with no node: module and no Node built-in', async () => {
    const seen: string[] = [];
    const r = await build({
      entryPoints: ['src/index.ts'],
      bundle: true,
      write: false,
      metafile: true,
      platform: 'browser',
      format: 'esm',
      logLevel: 'silent',
      plugins: [
        {
          name: 'no-node',
          setup(b) {
            b.onResolve({ filter: /.*/ }, (a) => {
              if (a.path.startsWith('node:') || builtinModules.includes(a.path)) {
                seen.push(`${a.importer} imports ${a.path}`);
                return { path: a.path, external: true };
              }
              return undefined;
            });
          },
        },
      ],
    });
    assert.deepEqual(seen, []);
    assert.ok(
      Object.keys(r.metafile!.inputs).some((f) => f.includes('backend/wasm/index.ts')),
      'the wasm backend is in the bundle',
    );
    assert.ok(!Object.keys(r.metafile!.inputs).some((f) => f.includes('backend/native')), 'the native backend is not');
  });
});

describe('dsv2 web in Chromium', () => {
  let server: ChildProcess;
  let url = '';
  let browser: Browser;
  let page: Page;
  const errors: string[] = [];

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (.ci/run installs Debian's chromium; DSV2_CHROMIUM names another)`);
    mkdirSync(ARTIFACTS, { recursive: true });
    ({ proc: server, url } = await startDsv2(['web', '--model', 'test/golden/gen', '--port', '0'], /open (http:\/\/\S+)/));
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    page = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(url);
    await page.waitForFunction(() => (window as unknown as { dsv2?: { ready: boolean } }).dsv2?.ready, null, { timeout: 30_000 });
  });

  after(async () => {
    await browser?.close();
    server?.kill('SIGTERM');
  });

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const pageState = (): Promise<any> => page.evaluate(() => (window as unknown as { dsv2: unknown }).dsv2);

  it('loads with the wasm backend, on several threads (cross-origin isolated)', async () => {
    const s = await pageState();
    assert.equal(s.backend, 'wasm');
    assert.equal(await page.evaluate(() => crossOriginIsolated), true);
    assert.ok(s.threads >= 1);
    assert.deepEqual(errors, []);
  });

  it('the golden gen case: the served model gives the reference’s greedy tokens, and the router’s experts', async () => {
    const c = cases('gen');
    await page.click('#load');
    await page.waitForFunction(() => (window as unknown as { dsv2: { info: unknown } }).dsv2.info !== null, null, { timeout: 30_000 });
    const node = T.loadModel('test/golden/gen', { trainable: false, backend: T.loadBackend('ts') });
    for (const [b, prompt] of (c.prompt_ids as number[][]).entries()) {
      await page.fill('#prompt', JSON.stringify(prompt));
      await page.fill('#max-tokens', String(c.new_tokens));
      await page.fill('#temperature', '0');
      await page.click('#generate-btn');
      await page.waitForFunction(
        (n) => {
          const s = (window as unknown as { dsv2: { generating: boolean; tokens: unknown[] } }).dsv2;
          return !s.generating && s.tokens.length === n;
        },
        prompt.length + c.new_tokens,
        { timeout: 60_000 },
      );
      const s = await pageState();
      const ids = (s.tokens as { id: number }[]).map((t) => t.id);
      assert.deepEqual(ids.slice(0, prompt.length), prompt);
      assert.deepEqual(ids.slice(prompt.length), c.generated_ids[b], `prompt ${b}: greedy tokens`);
      // what the page coloured the prompt by is what the router chose for those tokens (sets per token and layer)
      const out = T.noGrad(() => node.forward(T.intTensor([prompt], undefined, { backend: node.backend })));
      const K = node.config.num_experts_per_tok!;
      for (const r of out.router)
        prompt.forEach((_, t) => {
          const shown = (s.tokens[t].experts as T.RoutedExperts[]).find((x) => x.layer === r.layer)!;
          assert.deepEqual([...shown.experts].sort(), [...r.chosen.slice(t * K, t * K + K)].sort(), `token ${t} layer ${r.layer}`);
        });
      // every generated token but the last has been read by the model: its routing came with the next token's event
      assert.ok((s.tokens as { experts: unknown }[]).slice(0, -1).every((t) => t.experts !== null));
    }
    const span = page.locator('.tok').nth(4);
    await span.hover();
    assert.match((await page.textContent('#tooltip'))!, /layer \d+: /);
    await page.screenshot({ path: join(ARTIFACTS, 'web-generate.png'), fullPage: true });
  });

  it('trains tiny in a worker: pause holds it, resume goes on, the loss falls, and the checkpoint loads in Node', async () => {
    await page.click('button[data-tab=train]');
    await page.check('input[name=corpus][value=math]');
    await page.fill('#steps', '25');
    await page.fill('#seq', '64');
    await page.click('#train-btn');
    const steps = async (): Promise<number> => ((await pageState()).losses as number[]).length;
    await page.waitForFunction(() => (window as unknown as { dsv2: { losses: number[] } }).dsv2.losses.length >= 3, null, {
      timeout: 60_000,
    });
    await page.click('#pause-btn');
    await new Promise((r) => setTimeout(r, 300)); // a step in flight when the click came may still finish
    const held = await steps();
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(await steps(), held, 'no step while paused');
    assert.ok(held < 25, `paused at step ${held}`);
    // generating while training runs (paused here): the model of this tab answers now, not once training ends, and a
    // second click while the generation runs is ignored
    await page.click('button[data-tab=generate]');
    await page.check('input[name=source][value=trained]');
    await page.fill('#prompt', '[3, 4, 5]');
    await page.fill('#max-tokens', '6');
    await page.evaluate(() => {
      const b = document.querySelector<HTMLButtonElement>('#generate-btn')!;
      b.click();
      b.click();
    });
    await page.waitForFunction(() => !(window as unknown as { dsv2: Shown }).dsv2.generating, null, { timeout: 30_000 });
    const g = await pageState();
    assert.deepEqual(g.errors, []);
    assert.equal(g.trained, false, 'training still runs');
    assert.ok(g.tokens.length > 3 && g.tokens.length <= 9, `${g.tokens.length} tokens: the prompt's 3 and at most 6 new`);
    assert.equal(await page.isDisabled('#generate-btn'), false, 'Generate is back');
    assert.equal(await steps(), held, 'still paused');
    await page.click('button[data-tab=train]');
    await page.click('#resume-btn');
    await page.waitForFunction(
      () => {
        const s = (window as unknown as { dsv2: { trained: boolean; errors: string[] } }).dsv2;
        return s.trained || s.errors.length > 0;
      },
      null,
      { timeout: 120_000 },
    );
    const s = await pageState();
    assert.deepEqual(s.errors, []);
    assert.equal(s.losses.length, 25);
    const first = s.losses.slice(0, 3).reduce((a: number, b: number) => a + b, 0) / 3;
    const last = s.losses.slice(-3).reduce((a: number, b: number) => a + b, 0) / 3;
    assert.ok(last < first - 0.5, `loss ${first.toFixed(3)} → ${last.toFixed(3)}`);
    await page.screenshot({ path: join(ARTIFACTS, 'web-train.png'), fullPage: true });
    await page.click('#download-btn');
    await page.waitForFunction(() => (window as unknown as { dsv2: { files: string[] } }).dsv2.files.length > 0, null, { timeout: 30_000 });
    const files: [string, number[]][] = await page.evaluate(async () =>
      Promise.all(
        [...document.querySelectorAll<HTMLAnchorElement>('#downloads a')].map(async (a) => [
          a.download,
          [...new Uint8Array(await (await fetch(a.href)).arrayBuffer())],
        ]),
      ),
    );
    const dir = mkdtempSync(join(tmpdir(), 'dsv2-web-'));
    for (const [name, bytes] of files) writeFileSync(join(dir, name), Uint8Array.from(bytes));
    assert.deepEqual(files.map(([n]) => n).sort(), ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    const model = T.loadModel(dir, { trainable: false });
    assert.equal(model.config.num_hidden_layers, 2);
    assert.ok(T.Tokenizer.fromJSON(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'))).vocabSize <= model.config.vocab_size);
  });
});

describe('dsv2 web: other ways to run the page', () => {
  let browser: Browser;
  const procs: ChildProcess[] = [];
  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });
  after(async () => {
    await browser?.close();
    for (const p of procs) p.kill('SIGTERM');
  });

  it('without cross-origin isolation the page runs the unshared build on one thread, with the same greedy tokens', async () => {
    const { proc, url } = await startDsv2(['web', '--model', 'test/golden/gen', '--port', '0', '--no-isolation'], /open (http:\/\/\S+)/);
    procs.push(proc);
    const page = await browser.newPage();
    await page.goto(url);
    await page.waitForFunction(() => (window as unknown as { dsv2?: Shown }).dsv2?.ready, null, { timeout: 30_000 });
    assert.equal(await page.evaluate(() => crossOriginIsolated), false);
    assert.equal((await shown(page)).threads, 1);
    await page.click('#load');
    await page.waitForFunction(() => (window as unknown as { dsv2: Shown }).dsv2.info !== null, null, { timeout: 30_000 });
    const c = cases('gen');
    await page.fill('#prompt', JSON.stringify(c.prompt_ids[0]));
    await page.fill('#max-tokens', String(c.new_tokens));
    await page.click('#generate-btn');
    await page.waitForFunction(
      (n) => (window as unknown as { dsv2: Shown }).dsv2.tokens.length === n && !(window as unknown as { dsv2: Shown }).dsv2.generating,
      c.prompt_ids[0].length + c.new_tokens,
      { timeout: 60_000 },
    );
    assert.deepEqual(
      (await shown(page)).tokens.slice(c.prompt_ids[0].length).map((t) => t.id),
      c.generated_ids[0],
    );
  });

  it('a running dsv2 serve behind --api: the page streams its tokens with the routed experts', async () => {
    // a tiny model with a tokenizer (dsv2 serve needs one)
    const dir = mkdtempSync(join(tmpdir(), 'dsv2-web-api-'));
    const tok = T.trainBpe(['the whale and the sea, the ship and the crew'], {
      vocabSize: 300,
      specials: ['<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>'],
    });
    const cfg = T.parseConfig({
      ...T.configToJson(T.preset('tiny')),
      vocab_size: 300,
      bos_token_id: 0,
      eos_token_id: 1,
      max_position_embeddings: 4096, // room for a long generation to be cut off
    });
    for (const [n, b] of T.modelToFiles(T.DeepseekV2ForCausalLM.init(cfg, { seed: 1 }), tok)) writeFileSync(join(dir, n), b);
    const serve = await startDsv2(['serve', '--model', dir, '--port', '0'], /listening on (http:\/\/\S+)/);
    procs.push(serve.proc);
    const web = await startDsv2(['web', '--api', serve.url, '--port', '0'], /open (http:\/\/\S+)/);
    procs.push(web.proc);
    // wait until the server has loaded its model
    for (let i = 0; i < 100 && (await fetch(`${serve.url}v1/models`).catch(() => null))?.status !== 200; i++)
      await new Promise((r) => setTimeout(r, 100));
    const page = await browser.newPage();
    await page.goto(web.url);
    await page.waitForFunction(() => (window as unknown as { dsv2?: Shown }).dsv2?.ready, null, { timeout: 30_000 });
    await page.check('input[name=source][value=api]');
    await page.click('#load');
    await page.fill('#prompt', 'the whale');
    await page.fill('#max-tokens', '8');
    let done = false;
    for (let attempt = 0; attempt < 50 && !done; attempt++) {
      await page.click('#generate-btn');
      await page.waitForFunction(() => !(window as unknown as { dsv2: Shown }).dsv2.generating, null, { timeout: 30_000 });
      done = (await shown(page)).tokens.length > 1;
      if (!done) await new Promise((r) => setTimeout(r, 200)); // the engine may still be loading (503)
    }
    const s = await shown(page);
    assert.ok(s.tokens.length >= 2, `tokens: ${JSON.stringify(s.tokens)}`);
    // every streamed token but the last has its routing (it came with the next token's chunk); the prompt's too
    const routed = s.tokens.slice(0, -1).filter((t) => Array.isArray(t.experts));
    assert.equal(routed.length, s.tokens.length - 1);
    assert.match(JSON.stringify(routed[0]!.experts), /"layer":1,"experts":\[\d+,\d+\]/);
    // a request dsv2 serve refuses (more new tokens than the context holds): one error on the page, Generate is back
    const errorsBefore = s.errors.length;
    await page.fill('#max-tokens', '100000');
    await page.click('#generate-btn');
    await page.waitForFunction(() => !(window as unknown as { dsv2: Shown }).dsv2.generating, null, { timeout: 30_000 });
    const refused = await shown(page);
    assert.equal(refused.errors.length, errorsBefore + 1, JSON.stringify(refused.errors));
    assert.match(refused.errors.at(-1)!, /HTTP 400.*max_tokens/);
    assert.equal(await page.isDisabled('#generate-btn'), false);
    // the proxy forwards paths under /v1/ of that server only: not a request target naming another host (a raw
    // socket, as no browser sends it), not dot segments that climb out of /v1/
    const { createConnection } = await import('node:net');
    const web0 = new URL(web.url);
    const rawStatus = (target: string): Promise<number> =>
      new Promise((resolve, reject) => {
        const sock = createConnection({ host: web0.hostname, port: Number(web0.port) }, () =>
          sock.write(`GET ${target} HTTP/1.1\r\nHost: ${web0.host}\r\nConnection: close\r\n\r\n`),
        );
        let got = '';
        sock.on('data', (d) => (got += d.toString()));
        sock.on('end', () => resolve(Number(/^HTTP\/1\.1 (\d+)/.exec(got)?.[1] ?? 0)));
        sock.on('error', reject);
      });
    assert.equal(await rawStatus('http://127.0.0.1:1/v1/models'), 400);
    assert.equal(await rawStatus('/v1/%2e%2e/health'), 400);
    assert.equal(await rawStatus('/v1/models'), 200);
    // a client of the proxy that goes away mid-stream: dsv2 serve's generation stops too (its blocks are freed); the
    // proxy's fetch is also aborted when the client leaves before dsv2 serve has answered (queued, prefilling)
    const metric = async (name: string): Promise<number> =>
      Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(await (await fetch(`${serve.url}metrics`)).text())?.[1]);
    const before = await metric('dsv2_generation_tokens_total');
    const { request } = await import('node:http');
    await new Promise<void>((resolve, reject) => {
      const body = JSON.stringify({ prompt: 'the whale', max_tokens: 4000, ignore_eos: true, stream: true });
      const rq = request(`${web.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
        res.once('data', () => {
          rq.destroy(); // the first chunk came: hang up
          resolve();
        });
      });
      rq.on('error', (e) => ((e as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(e)));
      rq.end(body);
    });
    let running = 1;
    for (let i = 0; i < 100 && running !== 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      running = await metric('dsv2_num_requests_running');
    }
    assert.equal(running, 0, 'the generation was cancelled');
    const made = (await metric('dsv2_generation_tokens_total')) - before;
    assert.ok(made < 4000, `${made} tokens generated of the 4000 asked`);
  });

  it('serves only the app and the model files, and --export writes both for any static server', async () => {
    const { proc, url } = await startDsv2(['web', '--model', 'test/golden/gen', '--port', '0'], /open (http:\/\/\S+)/);
    procs.push(proc);
    const status = async (path: string): Promise<number> => (await fetch(url + path)).status;
    assert.equal(await status('model/config.json'), 200);
    assert.equal(await status('app.js'), 200);
    assert.equal((await fetch(url + 'app.js', { method: 'HEAD' })).status, 200, 'HEAD of an app file');
    // a folder where the index names a shard is not a file to serve (it was a 500)
    const odd = mkdtempSync(join(tmpdir(), 'dsv2-web-odd-'));
    writeFileSync(join(odd, 'config.json'), readFileSync('test/golden/gen/config.json'));
    writeFileSync(join(odd, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: 'x.safetensors', b: 'y.safetensors' } }));
    mkdirSync(join(odd, 'x.safetensors'));
    writeFileSync(join(odd, 'y.safetensors'), 'y');
    assert.deepEqual([...modelFiles(odd).keys()].sort(), ['config.json', 'model.safetensors.index.json', 'y.safetensors']);
    for (const bad of ['model/..%2Fcases.json', '..%2F..%2Fpackage.json', 'model/cases.json', '%2e%2e/package.json', '%E0%A4%A', 'model/'])
      assert.ok([400, 404].includes(await status(bad)), bad);
    const r = await fetch(url);
    assert.equal(r.headers.get('cross-origin-embedder-policy'), 'require-corp');
    const out = mkdtempSync(join(tmpdir(), 'dsv2-web-export-'));
    const ex = spawnSync(process.execPath, ['bin/dsv2.js', 'web', '--export', out, '--model', 'test/golden/gen'], { encoding: 'utf8' });
    assert.equal(ex.status, 0, ex.stderr);
    for (const f of [
      'index.html',
      'app.js',
      'worker.js',
      'wasm-worker.js',
      'wasm/kernels-shared.wasm',
      'model/config.json',
      'model/model.safetensors',
    ])
      assert.ok(existsSync(join(out, f)), f);
    const bad = spawnSync(process.execPath, ['bin/dsv2.js', 'web', '--model', '/nonexistent'], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--model: .*nonexistent/);
    assert.doesNotMatch(bad.stderr, /at .*\.js:\d+/);
  });
});
