// The engine's worker thread: loads the model and tokenizer, then steps the engine while it has work, posting
// each step's token events. Between steps it yields to its own event loop, so new requests and cancellations
// are taken in at every step boundary.
import '../backend/node.js'; // registers the native and wasm backends (Node)
import { parentPort, workerData } from 'node:worker_threads';
import { loadBackend, defaultBackend } from '../backend/registry.js';
import { Engine } from '../infer/engine.js';
import { nextTick } from '../infer/runner.js';
import { loadTokenizer } from '../io/model-dir.js';
import { loadModel } from '../model/load.js';
import type { FromWorker, ToWorker, WorkerInit } from './protocol.js';

const port = parentPort!;
const post = (m: FromWorker): void => port.postMessage(m);
const init = workerData as WorkerInit;

let engine: Engine;
try {
  const backend = init.backend ? loadBackend(init.backend) : defaultBackend();
  if (init.threads) backend.setThreads?.(init.threads);
  // compute yields to the HTTP thread: /health and streaming writes stay prompt while every core computes
  backend.lowerPriority?.(10);
  const model = loadModel(init.dir, { backend, trainable: false });
  const tokenizer = loadTokenizer(init.dir);
  engine = new Engine(model, { ...init.engine, tokenizer });
  post({ t: 'ready', maxModelLen: engine.maxModelLen, stats: engine.stats(), backend: backend.name, threads: backend.threads?.() ?? 1 });
} catch (e) {
  post({ t: 'failed', message: (e as Error).message });
  process.exit(0);
}

const trace = process.env['DSV2_TRACE'] === '1';
let traceMs = 0;
let traceSteps = 0;
let looping = false;
let stopping = false;

async function loop(): Promise<void> {
  if (looping) return;
  looping = true;
  try {
    while (engine.hasWork && !stopping) {
      const t0 = performance.now();
      const events = engine.step();
      if (trace) {
        traceMs += performance.now() - t0;
        if (++traceSteps % 100 === 0) {
          console.error(`engine worker: ${(traceMs / 100).toFixed(2)} ms a step over the last 100`);
          traceMs = 0;
        }
      }
      post({ t: 'events', events, stats: engine.stats() });
      await nextTick();
    }
  } catch (e) {
    engine.abortAll(); // nothing keeps computing, or holding blocks, for streams that end here
    post({ t: 'crashed', message: (e as Error).message });
  } finally {
    looping = false;
  }
}

port.on('message', (m: ToWorker) => {
  switch (m.t) {
    case 'add':
      try {
        engine.add(m.id, m.prompt, m.params, m.n);
      } catch (e) {
        post({ t: 'rejected', id: m.id, param: (e as { param?: string }).param ?? 'prompt', message: (e as Error).message });
        return;
      }
      void loop();
      return;
    case 'abort':
      engine.abort(m.id);
      post({ t: 'events', events: [], stats: engine.stats() });
      return;
    case 'stop':
      stopping = true;
      port.close();
      return;
  }
});
