// Async access to the engine: a request becomes a stream of token events (an async iterator) that the caller can
// cancel. LocalEngine drives an Engine on this thread, one step per macrotask so that I/O and new requests get in
// between steps; the server runs the same Engine in a worker thread behind the same interface (src/server/worker-client.ts).
import type { Engine, EngineStats, TokenEvent } from './engine.js';
import type { SamplingParams } from './sampler.js';

export interface GenerateRequest {
  prompt: readonly number[];
  params?: Partial<SamplingParams>;
  /** Choices (sequences) for this prompt; default 1. */
  n?: number;
}

/** A request's token events in order; ends after the last choice's finish event. */
export interface EventStream extends AsyncIterable<TokenEvent> {
  readonly requestId: string;
  /** Stop generating and free the request's cache blocks; the iterator ends. */
  cancel(): void;
}

export interface EngineClient {
  generate(req: GenerateRequest): EventStream;
  stats(): EngineStats;
  /** The longest prompt + output the engine accepts. */
  readonly maxModelLen: number;
  /** Why the engine stopped working, or null while it works (the server then answers 503). */
  readonly failure: string | null;
  close(): Promise<void>;
}

/** A push-driven async queue of events: the producer pushes and ends, one consumer iterates. */
export class EventQueue implements AsyncIterable<TokenEvent> {
  private readonly items: TokenEvent[] = [];
  private waiter: ((r: IteratorResult<TokenEvent>) => void) | null = null;
  private failWaiter: ((e: Error) => void) | null = null;
  private done = false;
  private error: Error | null = null;

  push(e: TokenEvent): void {
    if (this.done) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = this.failWaiter = null;
      w({ value: e, done: false });
    } else this.items.push(e);
  }

  end(error?: Error): void {
    if (this.done) return;
    this.done = true;
    this.error = error ?? null;
    if (this.waiter) {
      const [w, f] = [this.waiter, this.failWaiter];
      this.waiter = this.failWaiter = null;
      if (error) f!(error);
      else w({ value: undefined, done: true });
    }
  }

  /** Called when the consumer stops iterating early (break, return, throw): the request is cancelled. */
  onAbandon: (() => void) | null = null;

  [Symbol.asyncIterator](): AsyncIterator<TokenEvent> {
    return {
      next: () => {
        const item = this.items.shift();
        if (item) return Promise.resolve({ value: item, done: false });
        if (this.done) return this.error ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => {
          this.waiter = resolve;
          this.failWaiter = reject;
        });
      },
      return: () => {
        const early = !this.done;
        this.done = true;
        if (early) this.onAbandon?.();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}

/** Yield to the event loop (a macrotask, so timers and I/O callbacks run). */
export const nextTick = (): Promise<void> => new Promise((r) => (typeof setImmediate === 'function' ? setImmediate(r) : setTimeout(r, 0)));

/** Routes a step's events to their requests' queues; a queue ends when all n of its choices have finished. */
export class EventRouter {
  private readonly open = new Map<string, { queue: EventQueue; remaining: number }>();

  openQueue(requestId: string, n: number): EventQueue {
    const queue = new EventQueue();
    this.open.set(requestId, { queue, remaining: n });
    return queue;
  }

  dispatch(events: readonly TokenEvent[]): void {
    for (const e of events) {
      const r = this.open.get(e.requestId);
      if (!r) continue;
      r.queue.push(e);
      if (e.finishReason !== null && --r.remaining === 0) {
        r.queue.end();
        this.open.delete(e.requestId);
      }
    }
  }

  close(requestId: string, error?: Error): void {
    this.open.get(requestId)?.queue.end(error);
    this.open.delete(requestId);
  }

  closeAll(error?: Error): void {
    for (const id of [...this.open.keys()]) this.close(id, error);
  }
}

let requestCounter = 0;
export function newRequestId(): string {
  return `req-${Date.now().toString(36)}-${(requestCounter++).toString(36)}`;
}

/** The engine on this thread. */
export class LocalEngine implements EngineClient {
  private readonly router = new EventRouter();
  private running = false;
  private closed = false;
  readonly failure = null;

  constructor(readonly engine: Engine) {}

  get maxModelLen(): number {
    return this.engine.maxModelLen;
  }

  generate(req: GenerateRequest): EventStream {
    if (this.closed) throw new Error('the engine is closed');
    const requestId = newRequestId();
    const n = req.n ?? 1;
    this.engine.add(requestId, req.prompt, req.params ?? {}, n); // throws on a bad request, before anything is queued
    const queue = this.router.openQueue(requestId, n);
    void this.loop();
    const cancel = (): void => {
      this.engine.abort(requestId);
      this.router.close(requestId);
    };
    queue.onAbandon = cancel;
    return {
      requestId,
      cancel,
      [Symbol.asyncIterator]: () => queue[Symbol.asyncIterator](),
    };
  }

  stats(): EngineStats {
    return this.engine.stats();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.router.closeAll();
  }

  private async loop(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.engine.hasWork && !this.closed) {
        this.router.dispatch(this.engine.step());
        await nextTick();
      }
    } catch (e) {
      this.engine.abortAll(); // no sequence may keep its blocks (or compute) for a stream that has ended
      this.router.closeAll(e as Error);
    } finally {
      this.running = false;
    }
  }
}
