// The wasm kernels' memory, seen from JavaScript: operands are staged into it for one kernel call and copied back
// out. Backend buffers stay ordinary typed arrays (as for `ts` and `native`), so a tensor's lifetime is the garbage
// collector's business and nothing in linear memory can leak or be used after free; a call copies O(operands)
// bytes around O(work) arithmetic, which for the products and row kernels it serves is the small part.
//
// Operands that share a buffer are staged as one range (their union), so outputs that interleave in one buffer
// (dq, dk, dv rows of a fused projection) come back without overwriting each other.

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
/** The first 64 KiB are the module's own (static data); then one page of parameter blocks; then staging. */
export const PARAMS_AT = PAGE;
const STAGE_AT = 2 * PAGE;

export class Heap {
  private u8: Uint8Array;
  private top = STAGE_AT;
  private groups: { arr: View; byte: number; bytes: number; at: number; out: boolean }[] = [];
  /** Words of the parameter block (i32 and f32 views of the same bytes). */
  i32: Int32Array;
  f32: Float32Array;

  constructor(readonly memory: WebAssembly.Memory) {
    this.u8 = new Uint8Array(memory.buffer);
    this.i32 = new Int32Array(memory.buffer, PARAMS_AT, 1024);
    this.f32 = new Float32Array(memory.buffer, PARAMS_AT, 1024);
  }

  /** i32 and f32 views of n words at a staging address (for parameter blocks that do not fit the fixed page). */
  words(at: number, n: number): { i32: Int32Array; f32: Float32Array } {
    return { i32: new Int32Array(this.memory.buffer, at, n), f32: new Float32Array(this.memory.buffer, at, n) };
  }

  /** Start staging a call. */
  begin(): void {
    this.top = STAGE_AT;
    this.groups.length = 0;
  }

  /** Reserve `bytes` (64-byte aligned) in the staging area; returns its address. */
  reserve(bytes: number): number {
    const at = Math.ceil(this.top / 64) * 64;
    this.top = at + bytes;
    if (this.top > this.memory.buffer.byteLength) {
      const pages = Math.ceil((this.top - this.memory.buffer.byteLength) / PAGE);
      try {
        this.memory.grow(pages);
      } catch {
        throw new Error(
          `wasm backend: a kernel needs ${(this.top / 2 ** 20).toFixed(0)} MiB of staging memory, more than WebAssembly allows here`,
        );
      }
      // a grown memory has a new buffer (the old one detaches unless shared): new views
      this.u8 = new Uint8Array(this.memory.buffer);
      this.i32 = new Int32Array(this.memory.buffer, PARAMS_AT, 1024);
      this.f32 = new Float32Array(this.memory.buffer, PARAMS_AT, 1024);
    }
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
      let first = Infinity;
      let end = 0;
      for (const op of list) {
        const b = op.arr.byteOffset + op.lo * op.arr.BYTES_PER_ELEMENT;
        first = Math.min(first, b);
        end = Math.max(end, b + op.n * op.arr.BYTES_PER_ELEMENT);
      }
      if (end <= first) {
        for (const op of list) where.set(op, STAGE_AT);
        continue;
      }
      const at = this.reserve(end - first);
      const only = list.length === 1 ? list[0]! : null;
      // a lone write-only operand is overwritten entirely: nothing to copy in
      if (!(only && only.access === 'w')) this.u8.set(new Uint8Array(buffer, first, end - first), at);
      const out = list.some((op) => op.access !== 'r');
      this.groups.push({ arr: new Uint8Array(buffer, first, end - first), byte: first, bytes: end - first, at, out });
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
