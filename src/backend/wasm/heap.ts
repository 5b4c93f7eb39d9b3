// The wasm kernels' memory, seen from JavaScript: operands are staged into it for one kernel call and copied back
// out. Backend buffers stay ordinary typed arrays (as for `ts` and `native`), so a tensor's lifetime is the garbage
// collector's business and nothing in linear memory can leak or be used after free; a call copies O(operands)
// bytes around O(work) arithmetic, which for the products and row kernels it serves is the small part.
//
// Operands that share a buffer are staged as one range (their union), so outputs that interleave in one buffer
// (dq, dk, dv rows of a fused projection) come back without overwriting each other.
//
// Resident buffers (`pin`: the weights) keep a copy in linear memory for as long as their ArrayBuffer lives, so the
// products read them in place instead of copying every weight for every call (decode reads each weight once a
// token). The copy is the one the kernels use and write: a resident operand is never copied in, and an output in a
// resident buffer is copied back out to the JavaScript array after the call, so both stay equal as long as nothing
// but the backend's kernels writes the buffer (what `Backend.pin` asks of its callers).

export type Access = 'r' | 'w' | 'rw';
type View = Float32Array | Int32Array | Uint8Array;

export interface Operand {
  arr: View;
  /** First element used, and how many from there (the operand's extent). */
  lo: number;
  n: number;
  access: Access;
}

const PAGE = 65536;
/** The first 64 KiB are the module's own (static data); then one page of parameter blocks; then resident buffers and staging. */
export const PARAMS_AT = PAGE;
const HEAP_AT = 2 * PAGE;
const ALIGN = 64;

interface Resident {
  at: number;
  bytes: number;
}

export class Heap {
  private u8: Uint8Array;
  /** Staging starts above the resident buffers, fresh for every call. */
  private stageBase = HEAP_AT;
  private top = HEAP_AT;
  private groups: { arr: Uint8Array; at: number; bytes: number; out: boolean }[] = [];
  /** Resident copies by the ArrayBuffer they mirror, and the free ranges between them (address → bytes). */
  private readonly resident = new WeakMap<ArrayBufferLike, Resident>();
  private readonly holes = new Map<number, number>();
  /** The same holes by their end (address + bytes → address), to merge a freed range with the hole before it. */
  private readonly holeEnds = new Map<number, number>();
  private residentTop = HEAP_AT;
  private readonly collected = new FinalizationRegistry<Resident>((r) => this.release(r));
  /** Words of the parameter block (i32 and f32 views of the same bytes). */
  i32: Int32Array;
  f32: Float32Array;

  constructor(readonly memory: WebAssembly.Memory) {
    this.u8 = new Uint8Array(memory.buffer);
    this.i32 = new Int32Array(memory.buffer, PARAMS_AT, 1024);
    this.f32 = new Float32Array(memory.buffer, PARAMS_AT, 1024);
  }

  /** Memory up to `end` bytes, growing it if needed (a grown memory has a new buffer: new views). */
  private ensure(end: number): void {
    if (end <= this.memory.buffer.byteLength) return;
    const pages = Math.ceil((end - this.memory.buffer.byteLength) / PAGE);
    try {
      this.memory.grow(pages);
    } catch {
      throw new Error(`wasm backend: the kernels need ${(end / 2 ** 20).toFixed(0)} MiB of memory, more than WebAssembly allows here`);
    }
    this.u8 = new Uint8Array(this.memory.buffer);
    this.i32 = new Int32Array(this.memory.buffer, PARAMS_AT, 1024);
    this.f32 = new Float32Array(this.memory.buffer, PARAMS_AT, 1024);
  }

  /** i32 and f32 views of n words at a staging address (for parameter blocks that do not fit the fixed page). */
  words(at: number, n: number): { i32: Int32Array; f32: Float32Array } {
    return { i32: new Int32Array(this.memory.buffer, at, n), f32: new Float32Array(this.memory.buffer, at, n) };
  }

  /**
   * Keep a resident copy of `arr`'s whole ArrayBuffer (between calls only). Buffers of other memories only: a view
   * of part of a larger buffer is pinned whole, so pin buffers that are one tensor's storage.
   */
  pin(arr: View): void {
    const buffer = arr.buffer;
    if (this.resident.has(buffer) || buffer.byteLength === 0) return;
    const bytes = Math.ceil(buffer.byteLength / ALIGN) * ALIGN;
    let at = -1;
    for (const [h, size] of this.holes)
      if (size >= bytes) {
        at = h;
        this.holes.delete(h);
        this.holeEnds.delete(h + size);
        if (size > bytes) {
          this.holes.set(h + bytes, size - bytes);
          this.holeEnds.set(h + size, h + bytes);
        }
        break;
      }
    if (at < 0) {
      at = this.residentTop;
      this.ensure(at + bytes); // first: a memory that cannot grow leaves the heap as it was
      this.residentTop += bytes;
      this.stageBase = this.residentTop;
    }
    this.u8.set(new Uint8Array(buffer), at);
    const r = { at, bytes };
    this.resident.set(buffer, r);
    this.collected.register(buffer, r, r);
  }

  /** Drop a buffer's resident copy (Backend.free, or the garbage collector through the registry). */
  unpin(arr: View): void {
    const r = this.resident.get(arr.buffer);
    if (!r) return;
    this.resident.delete(arr.buffer);
    this.collected.unregister(r);
    this.release(r);
  }

  /** Free a resident range: merged with the holes on either side, and given back to staging when it ends at the top. */
  private release(r: Resident): void {
    let { at, bytes } = r;
    const next = this.holes.get(at + bytes);
    if (next !== undefined) {
      this.holes.delete(at + bytes);
      this.holeEnds.delete(at + bytes + next);
      bytes += next;
    }
    const prev = this.holeEnds.get(at);
    if (prev !== undefined) {
      this.holeEnds.delete(at);
      this.holes.delete(prev);
      bytes += at - prev;
      at = prev;
    }
    if (at + bytes === this.residentTop) {
      this.residentTop = at; // holes always merge, so no other hole ends here
      this.stageBase = at;
    } else {
      this.holes.set(at, bytes);
      this.holeEnds.set(at + bytes, at);
    }
  }

  /** End of the resident area (staging starts there); with residentBytes, what fragmentation costs. */
  residentEnd(): number {
    return this.residentTop;
  }

  /** Bytes held by resident copies (for tests and notes). */
  residentBytes(): number {
    let holes = 0;
    for (const size of this.holes.values()) holes += size;
    return this.residentTop - HEAP_AT - holes;
  }

  /** Start staging a call. */
  begin(): void {
    this.top = this.stageBase;
    this.groups.length = 0;
  }

  /** Reserve `bytes` (64-byte aligned) in the staging area; returns its address. */
  reserve(bytes: number): number {
    const at = Math.ceil(this.top / ALIGN) * ALIGN;
    this.top = at + bytes;
    this.ensure(this.top);
    return at;
  }

  /** Stage operands; returns each one's address (of its element `lo`). */
  stage(ops: readonly Operand[]): number[] {
    const byBuffer = new Map<ArrayBufferLike, Operand[]>();
    for (const op of ops) {
      const list = byBuffer.get(op.arr.buffer);
      if (list) list.push(op);
      else byBuffer.set(op.arr.buffer, [op]);
    }
    const where = new Map<Operand, number>();
    for (const [buffer, list] of byBuffer) {
      const res = this.resident.get(buffer);
      let first = Infinity;
      let end = 0;
      for (const op of list) {
        const b = op.arr.byteOffset + op.lo * op.arr.BYTES_PER_ELEMENT;
        first = Math.min(first, b);
        end = Math.max(end, b + op.n * op.arr.BYTES_PER_ELEMENT);
      }
      const out = list.some((op) => op.access !== 'r');
      if (res) {
        // in place in the resident copy: nothing to copy in; outputs go back out to the array after the call
        if (out && end > first)
          this.groups.push({ arr: new Uint8Array(buffer, first, end - first), at: res.at + first, bytes: end - first, out });
        for (const op of list) where.set(op, res.at + op.arr.byteOffset + op.lo * op.arr.BYTES_PER_ELEMENT);
        continue;
      }
      if (end <= first) {
        for (const op of list) where.set(op, this.stageBase);
        continue;
      }
      const at = this.reserve(end - first);
      const only = list.length === 1 ? list[0]! : null;
      // a lone write-only operand is overwritten entirely: nothing to copy in
      if (!(only && only.access === 'w')) this.u8.set(new Uint8Array(buffer, first, end - first), at);
      this.groups.push({ arr: new Uint8Array(buffer, first, end - first), at, bytes: end - first, out });
      for (const op of list) where.set(op, at + op.arr.byteOffset + op.lo * op.arr.BYTES_PER_ELEMENT - first);
    }
    return ops.map((op) => where.get(op)!);
  }

  /** Copy the staged outputs back into their buffers. */
  finish(): void {
    for (const g of this.groups) if (g.out) g.arr.set(this.u8.subarray(g.at, g.at + g.bytes));
    this.groups.length = 0;
  }
}

/** An operand of n elements from the start of a buffer. */
export const whole = (arr: View, n: number, access: Access): Operand => ({ arr, lo: 0, n, access });
