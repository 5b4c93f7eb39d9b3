// Threads for the wasm kernels: workers that share the kernels' memory (a shared WebAssembly.Memory, so a
// SharedArrayBuffer: Node always, a page only when cross-origin isolated). The calling thread fills a parameter
// block, wakes the workers that are ready and runs its own share; the kernels split the work through an atomic
// counter in the block, so a worker that wakes late finds less to do, never a wrong share.
//
// Each worker has its own mailbox word: the caller stores a new task number there and notifies, the worker runs the
// task the control words name, adds one to DONE and notifies. A worker is never woken for a task it is not part of,
// so no task is run twice and DONE counts only the workers the caller chose. A share that traps (a kernel bug, or
// memory the kernel could not reach) still counts as done and sets ERROR, so the caller raises it instead of waiting
// forever, and the worker goes on serving.

/** Control words (Int32Array over a SharedArrayBuffer of its own). */
export const CTL = { KERNEL: 0, PB: 1, DONE: 2, READY: 3, ERROR: 4, MAILBOX: 8 } as const;
export const MAX_WORKERS = 31; // READY is a bit mask of one 32-bit word

/** The message that starts a worker (src/backend/wasm/worker.ts). */
export interface WorkerInit {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  ctl: SharedArrayBuffer;
  index: number;
}

/** What the pool needs of a Web Worker or a Node worker thread. */
export interface WorkerHandle {
  postMessage(m: WorkerInit): void;
  terminate(): unknown;
}

/** Whether this thread may block in Atomics.wait (a page's main thread may not: it spins instead). */
function canBlock(): boolean {
  try {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0);
    return true;
  } catch {
    return false;
  }
}

export class ThreadPool {
  readonly ctl = new Int32Array(new SharedArrayBuffer(4 * (CTL.MAILBOX + MAX_WORKERS + 1)));
  private readonly workers: WorkerHandle[] = [];
  private readonly block = canBlock();
  private task = 0;

  /** Start `n` workers (they attach when ready; until then the caller runs alone). */
  constructor(spawn: () => WorkerHandle, n: number, module: WebAssembly.Module, memory: WebAssembly.Memory) {
    for (let i = 1; i <= Math.min(n, MAX_WORKERS); i++) {
      const w = spawn();
      w.postMessage({ module, memory, ctl: this.ctl.buffer as SharedArrayBuffer, index: i });
      this.workers.push(w);
    }
  }

  /** Workers started (ready or not). */
  get size(): number {
    return this.workers.length;
  }

  /** Workers ready now. */
  ready(): number {
    let n = 0;
    for (let i = 1; i <= this.workers.length; i++) if (this.isReady(i)) n++;
    return n;
  }

  /**
   * Block until every worker is ready or `ms` have passed (where this thread may block: Node, a worker); returns
   * the workers ready. Workers start on threads of their own, so a synchronous caller (Node's loadBackend) would
   * otherwise run its first calls alone, for as long as it never yields (measured: a GEMM loop stayed on one
   * thread for over a second).
   */
  awaitReady(ms: number): number {
    if (!this.block) return this.ready();
    const all = (1 << this.workers.length) - 1;
    const until = performance.now() + ms;
    for (;;) {
      const r = Atomics.load(this.ctl, CTL.READY);
      const left = until - performance.now();
      if ((r & all) === all || left <= 0) break;
      Atomics.wait(this.ctl, CTL.READY, r, left);
    }
    return this.ready();
  }

  private isReady(i: number): boolean {
    return (Atomics.load(this.ctl, CTL.READY) & (1 << (i - 1))) !== 0;
  }

  /**
   * Run kernel number `kernel` with parameter block `pb` on up to `threads` threads (the caller is thread 0):
   * `self` runs the caller's share. Returns when every chosen thread has finished.
   */
  run(kernel: number, pb: number, threads: number, self: (tid: number) => void): void {
    const chosen: number[] = [];
    for (let i = 1; i <= this.workers.length && chosen.length < threads - 1; i++) if (this.isReady(i)) chosen.push(i);
    if (chosen.length === 0) return self(0);
    const ctl = this.ctl;
    ctl[CTL.KERNEL] = kernel;
    ctl[CTL.PB] = pb;
    Atomics.store(ctl, CTL.DONE, 0);
    Atomics.store(ctl, CTL.ERROR, 0);
    this.task++;
    // thread ids are 1..chosen.length (each owns a scratch region), whatever the workers' own numbers
    chosen.forEach((w, k) => {
      Atomics.store(ctl, CTL.MAILBOX + w, (this.task << 6) | (k + 1));
      Atomics.notify(ctl, CTL.MAILBOX + w);
    });
    // the caller's own share may trap too: the workers are still waited for, so no call overlaps this one
    let failed = false;
    let trapped: unknown;
    try {
      self(0);
    } catch (e) {
      failed = true;
      trapped = e;
    }
    const want = chosen.length;
    for (;;) {
      const d = Atomics.load(ctl, CTL.DONE);
      if (d >= want) break;
      if (this.block) Atomics.wait(ctl, CTL.DONE, d, 50);
    }
    if (failed) throw trapped;
    if (Atomics.load(ctl, CTL.ERROR)) throw new Error(`wasm kernel ${kernel} trapped in a worker thread`);
  }

  terminate(): void {
    for (const w of this.workers) void w.terminate();
    this.workers.length = 0;
  }
}

/** The worker side: instantiate the kernels on the shared memory, then serve tasks until the thread is ended. */
export function serveTasks(init: WorkerInit): void {
  const inst = new WebAssembly.Instance(init.module, { env: { memory: init.memory, abort: wasmAbort } });
  const run = inst.exports['run'] as (kernel: number, pb: number, tid: number) => void;
  const ctl = new Int32Array(init.ctl);
  const box = CTL.MAILBOX + init.index;
  let seen = Atomics.load(ctl, box);
  Atomics.or(ctl, CTL.READY, 1 << (init.index - 1));
  Atomics.notify(ctl, CTL.READY);
  for (;;) {
    Atomics.wait(ctl, box, seen);
    const v = Atomics.load(ctl, box);
    if (v === seen) continue;
    seen = v;
    try {
      run(ctl[CTL.KERNEL]!, ctl[CTL.PB]!, v & 63);
    } catch {
      Atomics.store(ctl, CTL.ERROR, 1);
    }
    Atomics.add(ctl, CTL.DONE, 1);
    Atomics.notify(ctl, CTL.DONE);
  }
}

/** AssemblyScript's abort import (the kernels are built with --noAssert, so only a bug reaches it). */
export function wasmAbort(_msg: number, _file: number, line: number, col: number): never {
  throw new Error(`wasm kernel aborted at ${line}:${col}`);
}
