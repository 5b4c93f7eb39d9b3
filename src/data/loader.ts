// Token streams and batches: documents are tokenized once (cached on disk by content hash), joined with EOS
// between documents, and cut into fixed-length windows of seq+1 tokens (input and shifted target). The order of
// windows is shuffled per epoch from the seed; the position (epoch, index) is saved in checkpoints so that a
// resumed run reads exactly the batches an uninterrupted run would have read.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { Rng } from '../tensor/random.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { Doc } from './corpus.js';

/** Tokens of the documents, EOS after each one. Reads / writes a cache file under cacheDir when given. */
export function tokenizeDocs(tok: Tokenizer, docs: readonly Doc[], eosId: number, cacheDir?: string): Int32Array {
  let file: string | undefined;
  if (cacheDir) {
    const h = createHash('sha256').update(JSON.stringify(tok.toJSON()));
    for (const d of docs) h.update(d.name).update('\0').update(d.text).update('\0');
    h.update(String(eosId));
    file = join(cacheDir, `tokens-${h.digest('hex').slice(0, 20)}.i32`);
    if (existsSync(file)) {
      const buf = readFileSync(file);
      if (buf.byteLength % 4 === 0) return new Int32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    }
  }
  const parts: number[] = [];
  for (const d of docs) {
    for (const id of tok.encode(d.text)) parts.push(id);
    parts.push(eosId);
  }
  const ids = Int32Array.from(parts);
  if (file) {
    mkdirSync(cacheDir!, { recursive: true });
    writeFileAtomic(file, Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength));
  }
  return ids;
}

export interface DataPosition {
  epoch: number;
  /** Windows of this epoch already served. */
  index: number;
}

/** Batches of [batch, seq+1] windows from one token stream, reshuffled each epoch. */
export class BatchStream {
  readonly windows: number;
  private order: Int32Array;
  pos: DataPosition = { epoch: 0, index: 0 };

  constructor(
    readonly tokens: Int32Array,
    readonly batch: number,
    readonly seq: number,
    readonly seed: number,
  ) {
    this.windows = Math.floor((tokens.length - 1) / seq);
    if (this.windows < 1) throw new Error(`the training text has ${tokens.length} tokens: too few for one sequence of ${seq + 1}`);
    this.order = this.shuffled(0);
  }

  private shuffled(epoch: number): Int32Array {
    const o = Int32Array.from({ length: this.windows }, (_, i) => i);
    const rng = new Rng(this.seed * 1_000_003 + epoch);
    for (let i = o.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [o[i], o[j]] = [o[j]!, o[i]!];
    }
    return o;
  }

  /** Jump to a saved position (resume). */
  seek(p: DataPosition): void {
    this.pos = { ...p };
    this.order = this.shuffled(p.epoch);
  }

  /** The next batch: row-major [batch, seq+1] token ids. */
  next(): Int32Array {
    const out = new Int32Array(this.batch * (this.seq + 1));
    for (let b = 0; b < this.batch; b++) {
      if (this.pos.index >= this.windows) {
        this.pos = { epoch: this.pos.epoch + 1, index: 0 };
        this.order = this.shuffled(this.pos.epoch);
      }
      const w = this.order[this.pos.index++]!;
      out.set(this.tokens.subarray(w * this.seq, w * this.seq + this.seq + 1), b * (this.seq + 1));
    }
    return out;
  }
}

/** Fixed evaluation batches covering the validation stream in order (at most maxBatches). */
export function evalBatches(tokens: Int32Array, batch: number, seq: number, maxBatches: number): Int32Array[] {
  const windows = Math.floor((tokens.length - 1) / seq);
  batch = Math.min(batch, windows); // a short validation text still gives one (smaller) batch
  const out: Int32Array[] = [];
  if (batch < 1) return out;
  for (let w = 0; w + batch <= windows && out.length < maxBatches; w += batch) {
    const b = new Int32Array(batch * (seq + 1));
    for (let r = 0; r < batch; r++) b.set(tokens.subarray((w + r) * seq, (w + r) * seq + seq + 1), r * (seq + 1));
    out.push(b);
  }
  return out;
}
