// The server under load, in this process (its engine in a worker thread, as `dsv2 serve` runs it): /health answers
// within 50 ms while a long prefill runs, and requests beyond --max-queue get 429 while the earlier ones finish.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadChatTemplate, loadTokenizer } from '../src/io/model-dir.js';
import { saveModel } from '../src/model/load.js';
import { DeepseekV2ForCausalLM } from '../src/model/model.js';
import { preset } from '../src/model/presets.js';
import { defaultBackend } from '../src/backend/registry.js';
import { DsvServer } from '../src/server/http.js';
import { WorkerEngine } from '../src/server/worker-client.js';
import { makeServeModel } from './serve-model.js';

const dir = join(mkdtempSync(join(tmpdir(), 'dsv2-load-')), 'm');
let server: DsvServer;
let base = '';

before(async () => {
  // the tokenizer and template of the small chat fixture, with weights of the `small` preset's shapes (its vocabulary
  // cut to the tokenizer's): a 1,000-token prompt then takes a few hundred milliseconds to prefill
  makeServeModel(dir);
  const tok = loadTokenizer(dir);
  const config = { ...preset('small'), vocab_size: tok.vocabSize };
  saveModel(DeepseekV2ForCausalLM.init(config, { seed: 1, std: 0.02, backend: defaultBackend() }), dir);
  server = new DsvServer({ modelName: 'm', tokenizer: tok, template: loadChatTemplate(dir, tok, 0, 1), bosId: 0, maxQueue: 2 });
  base = await server.listen('127.0.0.1', 0);
  server.setEngine(await WorkerEngine.start({ dir, engine: { kvCacheMiB: 16, maxBatchedTokens: 1024 } }, tok.vocabSize));
});

after(() => server.shutdown());

const complete = (prompt: number[], maxTokens: number): Promise<Response> =>
  fetch(`${base}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'm', prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true }),
  });

describe('server under load', () => {
  it('/health answers within 50 ms while a 1,000-token prompt prefills', async () => {
    const long = Array.from({ length: 1000 }, (_, i) => 2 + (i % 300));
    await fetch(`${base}/health`); // a warm connection and route, as a health checker has
    const started = performance.now();
    const req = complete(long, 1);
    await new Promise((r) => setTimeout(r, 30)); // the request is parsed and in the worker: its prefill has begun
    const lat: number[] = [];
    let done = false;
    void req.then(() => (done = true));
    while (!done) {
      const t0 = performance.now();
      assert.equal((await fetch(`${base}/health`)).status, 200);
      lat.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 5));
    }
    const took = performance.now() - started;
    assert.equal((await req).status, 200);
    assert.ok(lat.length >= 3, `the prefill took ${took.toFixed(0)} ms: too short to poll /health during it`);
    assert.ok(Math.max(...lat) < 50, `/health latencies during a ${took.toFixed(0)} ms prefill: max ${Math.max(...lat).toFixed(1)} ms`);
  });

  it('beyond --max-queue requests in flight, a new one gets 429 with OpenAI’s error object; the others finish', async () => {
    const running = [complete([5, 6, 7], 60), complete([8, 9], 60)];
    await new Promise((r) => setTimeout(r, 20));
    const r = await complete([1, 2], 2);
    assert.equal(r.status, 429);
    const body = (await r.json()) as { error: { type: string; code: string } };
    assert.equal(body.error.code, 'queue_full');
    for (const x of await Promise.all(running)) assert.equal(x.status, 200);
    assert.equal((await complete([1, 2], 2)).status, 200, 'room again once they finished');
  });
});
