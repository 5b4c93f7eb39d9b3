// The main thread's side of the engine worker: the EngineClient interface (src/infer/runner.ts) over messages.
// Requests are validated here first (sampling fields, prompt ids and length), so a bad one fails synchronously
// with the field named instead of round-tripping to the worker.
import { Worker } from 'node:worker_threads';
import type { EngineStats } from '../infer/engine.js';
import { checkRequest, EngineError, EngineUnavailable } from '../infer/engine.js';
import { EventRouter, newRequestId, type EngineClient, type EventStream, type GenerateRequest } from '../infer/runner.js';
import { samplingParams } from '../infer/sampler.js';
import type { FromWorker, ToWorker, WorkerInit } from './protocol.js';

export class WorkerEngine implements EngineClient {
  private readonly router = new EventRouter();
  private last: EngineStats | null = null;
  private maxLen = 0;
  private closed = false;

  private constructor(
    private readonly worker: Worker,
    readonly vocabSize: number,
    readonly backend: string,
    readonly threads: number,
  ) {}

  /** Start the worker and wait until the model is loaded (rejects with the loader's message). */
  static start(init: WorkerInit, vocabSize: number): Promise<WorkerEngine> {
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: init });
    return new Promise((resolve, reject) => {
      const onError = (e: Error): void => reject(new Error(`the engine worker failed: ${e.message}`));
      worker.once('error', onError);
      worker.once('message', (m: FromWorker) => {
        worker.off('error', onError);
        if (m.t === 'failed') {
          void worker.terminate();
          return reject(new Error(m.message));
        }
        if (m.t !== 'ready') return reject(new Error(`the engine worker said ${m.t} before ready`));
        const client = new WorkerEngine(worker, vocabSize, m.backend, m.threads);
        client.maxLen = m.maxModelLen;
        client.last = m.stats;
        worker.on('message', (msg: FromWorker) => client.receive(msg));
        worker.on('error', (e) => client.fail(`the engine worker failed: ${e.message}`));
        worker.on('exit', () => client.fail('the engine worker exited'));
        resolve(client);
      });
    });
  }

  /** Why the engine stopped working (null while it works): requests then get 503 and /health reports it. */
  failure: string | null = null;

  private fail(why: string): void {
    if (this.closed) return;
    this.failure = why;
    this.closed = true;
    this.router.closeAll(new Error(why));
  }

  get maxModelLen(): number {
    return this.maxLen;
  }

  generate(req: GenerateRequest): EventStream {
    if (this.closed) throw new EngineUnavailable(this.failure ?? 'the engine is shutting down');
    const params = samplingParams(req.params);
    const n = req.n ?? 1;
    checkRequest(req.prompt, n, this.vocabSize, this.maxLen);
    const id = newRequestId();
    const queue = this.router.openQueue(id, n);
    this.send({ t: 'add', id, prompt: [...req.prompt], params, n });
    const cancel = (): void => {
      this.send({ t: 'abort', id });
      this.router.close(id);
    };
    queue.onAbandon = cancel;
    return {
      requestId: id,
      cancel,
      [Symbol.asyncIterator]: () => queue[Symbol.asyncIterator](),
    };
  }

  stats(): EngineStats {
    return this.last!;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.router.closeAll(new Error('the engine shut down'));
    this.send({ t: 'stop' });
    await this.worker.terminate();
  }

  private send(m: ToWorker): void {
    this.worker.postMessage(m);
  }

  private receive(m: FromWorker): void {
    switch (m.t) {
      case 'events':
        this.last = m.stats;
        this.router.dispatch(m.events);
        return;
      case 'rejected':
        this.router.close(m.id, new EngineError(m.param, m.message));
        return;
      case 'crashed':
        // the worker aborted every request; the engine takes new ones again
        this.router.closeAll(new Error(`the engine failed: ${m.message}`));
        return;
      default:
        return;
    }
  }
}
