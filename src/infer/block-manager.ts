// The paged KV cache's bookkeeping (nano-vllm's BlockManager, vLLM's paged attention): a fixed pool of blocks of
// `blockSize` token slots, reference-counted, handed to sequences through their block tables. Prefix caching: a
// full block is known by the hash of its tokens chained with its prefix's hash, so a later sequence that starts
// with the same tokens (a shared system prompt) takes the computed block instead of prefilling it again. A freed
// block keeps its contents and hash until it is handed out again (oldest-freed first), so it can still be hit.

/**
 * FNV-1a-style mixing of the previous block's hash and this block's ids (64 bits in two lanes). A hit also compares
 * the block's own ids, so a collision can alias only if two different prefixes hash alike and end in the same block.
 */
export function blockHash(prev: string, ids: readonly number[]): string {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ prev.length;
  const mix = (v: number): void => {
    a = Math.imul(a ^ (v & 0xffff), 0x01000193) >>> 0;
    a = Math.imul(a ^ (v >>> 16), 0x01000193) >>> 0;
    b = Math.imul(b ^ v, 0x5bd1e995) >>> 0;
    b ^= b >>> 15;
  };
  for (let i = 0; i < prev.length; i++) mix(prev.charCodeAt(i));
  for (const id of ids) mix(id);
  return a.toString(16).padStart(8, '0') + b.toString(16).padStart(8, '0');
}

export class BlockManager {
  private readonly refs: Int32Array;
  private readonly hashes: (string | null)[];
  private readonly tokens: (number[] | null)[];
  private readonly byHash = new Map<string, number>();
  /** Blocks with no reference, oldest-freed first (a Map keeps insertion order and deletes in O(1)). */
  private readonly free = new Map<number, true>();
  /** Prompt tokens served from the prefix cache, and prompt tokens looked up (for /metrics). */
  prefixHitTokens = 0;
  prefixQueryTokens = 0;

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
    readonly prefixCaching = true,
  ) {
    if (!(Number.isInteger(numBlocks) && numBlocks >= 1)) throw new Error(`KV cache: ${numBlocks} blocks is not a positive count`);
    this.refs = new Int32Array(numBlocks);
    this.hashes = new Array<string | null>(numBlocks).fill(null);
    this.tokens = new Array<number[] | null>(numBlocks).fill(null);
    for (let i = 0; i < numBlocks; i++) this.free.set(i, true);
  }

  get freeBlocks(): number {
    return this.free.size;
  }

  get usedBlocks(): number {
    return this.numBlocks - this.free.size;
  }

  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.blockSize);
  }

  /**
   * The cached blocks that hold a prefix of `ids`: whole blocks only, and never the last token (its logits are
   * needed, so at least one token is always computed). Nothing is taken yet.
   */
  lookup(ids: readonly number[]): number[] {
    if (!this.prefixCaching) return [];
    const out: number[] = [];
    let prev = '';
    for (let b = 0; (b + 1) * this.blockSize <= ids.length - 1; b++) {
      const chunk = ids.slice(b * this.blockSize, (b + 1) * this.blockSize);
      const h = blockHash(prev, chunk);
      const id = this.byHash.get(h);
      if (id === undefined || !sameIds(this.tokens[id]!, chunk)) break;
      out.push(id);
      prev = h;
    }
    return out;
  }

  /** Take a reference on each of `blocks` (found by lookup) for a sequence's table. */
  share(blocks: readonly number[], table: number[]): void {
    for (const id of blocks) {
      if (this.refs[id]++ === 0) this.free.delete(id);
      table.push(id);
    }
  }

  /** Extend `table` to cover `tokens` slots; false (and nothing taken) when the free blocks do not suffice. */
  ensure(table: number[], tokens: number): boolean {
    const need = this.blocksFor(tokens) - table.length;
    if (need <= 0) return true;
    if (need > this.free.size) return false;
    for (let i = 0; i < need; i++) table.push(this.take());
    return true;
  }

  /** Drop a sequence's references; blocks nobody holds go back to the pool (keeping their hash for later hits). */
  release(table: number[]): void {
    for (let i = table.length - 1; i >= 0; i--) {
      const id = table[i]!;
      if (--this.refs[id]! === 0) this.free.set(id, true);
      if (this.refs[id]! < 0) throw new Error(`KV cache: block ${id} released twice`);
    }
    table.length = 0;
  }

  /**
   * Record that block `index` of a sequence's table now holds computed entries for ids[index·bs … +bs), so that
   * later sequences can share it. `prev` is the hash of block index−1 ('' for the first); returns this block's hash.
   */
  register(table: readonly number[], index: number, ids: readonly number[], prev: string): string {
    const chunk = ids.slice(index * this.blockSize, (index + 1) * this.blockSize);
    const h = blockHash(prev, chunk);
    if (!this.prefixCaching) return h;
    const id = table[index]!;
    if (this.hashes[id] === null && !this.byHash.has(h)) {
      this.hashes[id] = h;
      this.tokens[id] = chunk;
      this.byHash.set(h, id);
    }
    return h;
  }

  refCount(id: number): number {
    return this.refs[id]!;
  }

  private take(): number {
    const id = this.free.keys().next().value as number;
    this.free.delete(id);
    this.refs[id] = 1;
    const h = this.hashes[id];
    if (h !== null) {
      // its old contents are about to be overwritten: forget them
      if (this.byHash.get(h!) === id) this.byHash.delete(h!);
      this.hashes[id] = null;
      this.tokens[id] = null;
    }
    return id;
  }
}

function sameIds(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
