// Step-scoped buffer recycling (tidy-style scopes, as tfjs' tf.tidy). A training step allocates about a
// gigabyte of activations and gradients (`small`: ~1,700 buffers) that are all dead once the optimizer has
// stepped. Left to the garbage collector, every buffer is a fresh allocation (page faults on first touch) and
// the external-memory churn triggers full collections; together that cost ~25% of a step. An arena lends the
// buffers of one step and takes them all back at the next `reset`, so step N+1 reuses step N's warm memory.
//
// Safety: `reset(keep)` returns every lent buffer except those behind `keep` (e.g. the parameters' `.grad`,
// which then belong to their tensors for good). Returned buffers are *detached* (their ArrayBuffer is
// transferred to a fresh handle), so a tensor that wrongly outlives its step fails loudly on its next use
// (zero-length storage, a shape error) instead of reading another step's numbers.
import type { Backend, F32, I32 } from '../backend/backend.js';

/** Buffers below this many elements are left to the ordinary allocator (V8 keeps them on its heap). */
const MIN_POOLED = 4096;
/** Size classes per doubling: a buffer is at most 1/8 larger than asked for. */
const CLASSES_PER_OCTAVE = 8;

let current: BufferArena | null = null;

/** The arena allocations of `backend` are served from right now, if any (used by tensor allocation). */
export function activeArena(backend: Backend): BufferArena | null {
  return current !== null && current.backend === backend ? current : null;
}

/** Run fn with `arena` serving the allocations of its backend; nests, and restores the previous arena. */
export function withArena<T>(arena: BufferArena, fn: () => T): T {
  const prev = current;
  current = arena;
  try {
    return fn();
  } finally {
    current = prev;
  }
}

function sizeClass(n: number): number {
  const octave = 2 ** Math.floor(Math.log2(n));
  const step = Math.max(1, octave / CLASSES_PER_OCTAVE);
  return Math.ceil(n / step) * step;
}

export class BufferArena {
  private readonly idle = new Map<number, ArrayBuffer[]>(); // size class (elements) → free buffers
  private lent: ArrayBuffer[] = [];
  private heldBytes = 0;

  private readonly hugePages: boolean;
  private readonly minPooled: number;
  private readonly detach: boolean;

  constructor(
    readonly backend: Backend,
    opts: {
      /** Advise huge pages over the heap at each reset (training's gigabyte of activations); default on. */
      hugePages?: boolean;
      /** Buffers below this many elements go to the ordinary allocator (default 4,096). */
      minPooled?: number;
      /** Detach taken-back buffers so stale views fail loudly (default on); the inference engine, whose steps never
       * leak a tensor, turns it off: at ~3.5 µs a buffer it costs more than a small decode step's kernels. */
      detach?: boolean;
    } = {},
  ) {
    this.hugePages = opts.hugePages ?? true;
    this.minPooled = opts.minPooled ?? MIN_POOLED;
    this.detach = opts.detach ?? true;
  }

  /** Bytes this arena holds, lent and idle. */
  get bytes(): number {
    return this.heldBytes;
  }

  /** A float buffer of n elements, zero-filled unless `uninit`. */
  f32(n: number, uninit: boolean): F32 {
    const ab = this.take(n);
    if (!ab) return uninit && this.backend.allocUninit ? this.backend.allocUninit(n) : this.backend.alloc(n);
    const out = new Float32Array(ab, 0, n);
    if (!uninit) this.backend.fill(out, n, 0);
    return out;
  }

  /** A zero-filled int32 buffer of n elements. */
  i32(n: number): I32 {
    const ab = this.take(n);
    if (!ab) return this.backend.allocInt(n);
    const out = new Int32Array(ab, 0, n);
    out.fill(0);
    return out;
  }

  /**
   * Take back every buffer lent since the last reset, except those whose storage a tensor in `keep` uses (null entries are skipped, so `params.map((p) => p.grad)` works) (they
   * leave the arena for good). Buffers no step asked for since the previous reset are released to the allocator,
   * so the arena holds about one step's worth. Taken-back buffers are detached from the views still pointing at them.
   */
  reset(keep: Iterable<{ data: F32 | I32 | Uint8Array } | null> = []): void {
    const kept = new Set<ArrayBufferLike>();
    for (const t of keep) if (t) kept.add(t.data.buffer);
    const returned = new Map<number, ArrayBuffer[]>();
    for (const ab of this.lent) {
      if (kept.has(ab)) {
        this.heldBytes -= ab.byteLength;
        continue;
      }
      const fresh = this.detach ? structuredClone(ab, { transfer: [ab] }) : ab; // same memory, new handle: old views go dead
      const cls = fresh.byteLength / 4;
      let list = returned.get(cls);
      if (!list) returned.set(cls, (list = []));
      list.push(fresh);
    }
    this.lent = [];
    for (const list of this.idle.values()) for (const ab of list) this.heldBytes -= ab.byteLength;
    this.idle.clear();
    for (const [cls, list] of returned) this.idle.set(cls, list);
    // A step's buffers are all in place now (the heap stops growing after the first step): ask for huge pages
    // over them. The backend collapses only heap it has not collapsed before, so later steps pay one syscall.
    if (this.hugePages) this.backend.adviseHugePages?.(true);
  }

  /** A pooled buffer of at least n elements, or null for small buffers and backends whose buffers cannot be pooled. */
  private take(n: number): ArrayBuffer | null {
    if (n < this.minPooled || n === 0) return null;
    const cls = sizeClass(n);
    let ab = this.idle.get(cls)?.pop();
    if (!ab) {
      const fresh = this.backend.allocUninit ? this.backend.allocUninit(cls) : this.backend.alloc(cls);
      if (fresh.byteOffset !== 0 || fresh.buffer.byteLength !== cls * 4) return null; // views into a shared memory (wasm)
      ab = fresh.buffer as ArrayBuffer;
      this.heldBytes += ab.byteLength;
    }
    this.lent.push(ab);
    return ab;
  }
}
