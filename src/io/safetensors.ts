// safetensors reader and writer (spec §7.1). The header is validated against the file size (offsets in range,
// non-overlapping, byte length = numel × dtype size); tensors are read lazily, one at a time, so a checkpoint
// larger than memory can be opened and inspected. F32, BF16 and F16 are widened to float32 on read.
import { brief } from './brief.js';
import {
  closeSync,
  existsSync,
  fstatSync,
  lstatSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  realpathSync,
  statSync,
} from 'node:fs';
import { basename, dirname, join, sep } from 'node:path';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../tensor/dtype.js';
import { writeStreamAtomic } from './atomic.js';

export type StDType = 'F32' | 'BF16' | 'F16' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL' | 'F8_E4M3' | 'F8_E5M2';
const DTYPE_BYTES: Record<string, number> = {
  F64: 8,
  I64: 8,
  F32: 4,
  I32: 4,
  BF16: 2,
  F16: 2,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
};

export interface TensorInfo {
  name: string;
  dtype: StDType;
  shape: number[];
  /** Absolute byte offsets in the file. */
  begin: number;
  end: number;
  file: string;
}

export class CheckpointError extends Error {}

const MAX_HEADER = 100 * 1024 * 1024;

/** One .safetensors file: header parsed and validated at open, data read on demand. */
export class SafetensorsFile {
  readonly tensors = new Map<string, TensorInfo>();
  readonly metadata: Record<string, string> = {};
  private fd: number | null;

  constructor(readonly path: string) {
    if (!existsSync(path)) throw new CheckpointError(`${path}: no such file`);
    // a FIFO would block the open, a device read forever: regular files only
    if (!statSync(path).isFile()) throw new CheckpointError(`${path}: not a regular file`);
    this.fd = openSync(path, 'r');
    try {
      this.parseHeader();
    } catch (e) {
      this.close();
      throw e;
    }
  }

  private parseHeader(): void {
    const size = fstatSync(this.fd!).size;
    const bad = (msg: string): never => {
      throw new CheckpointError(`${this.path}: ${msg}`);
    };
    if (size < 8) bad(`file is ${size} bytes, too short for a safetensors header`);
    const lenBuf = Buffer.alloc(8);
    readSync(this.fd!, lenBuf, 0, 8, 0);
    const n = Number(lenBuf.readBigUInt64LE(0));
    if (n < 2 || n > MAX_HEADER || 8 + n > size)
      bad(`header length ${n} does not fit in a ${size}-byte file (truncated or not safetensors)`);
    const hb = Buffer.alloc(n);
    readSync(this.fd!, hb, 0, n, 8);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(hb.toString('utf8')) as Record<string, unknown>;
    } catch {
      return bad('header is not valid JSON (corrupt or not safetensors)');
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) bad('header is not a JSON object');
    const dataStart = 8 + n;
    const dataLen = size - dataStart;
    const spans: [number, number, string][] = [];
    for (const [name, v] of Object.entries(header)) {
      if (name === '__metadata__') {
        if (!v || typeof v !== 'object' || Array.isArray(v) || Object.values(v).some((x) => typeof x !== 'string'))
          bad('__metadata__ must map strings to strings');
        Object.assign(this.metadata, v);
        continue;
      }
      const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (typeof e?.dtype !== 'string' || !Object.prototype.hasOwnProperty.call(DTYPE_BYTES, e.dtype))
        bad(`tensor '${name}': unknown dtype ${brief(e?.dtype)}`);
      const dtype = e.dtype as StDType;
      if (!Array.isArray(e.shape) || e.shape.some((d) => !Number.isInteger(d) || d < 0)) bad(`tensor '${name}': invalid shape`);
      const shape = e.shape as number[];
      const off = e.data_offsets;
      if (!Array.isArray(off) || off.length !== 2 || !off.every((x) => Number.isInteger(x) && x >= 0) || off[0] > off[1]) {
        bad(`tensor '${name}': invalid data_offsets`);
      }
      const [b, en] = off as [number, number];
      const want = shape.reduce((p, d) => p * d, 1) * DTYPE_BYTES[dtype]!;
      if (en - b !== want) bad(`tensor '${name}': ${en - b} bytes of data for shape [${shape}] ${dtype} (needs ${want})`);
      if (en > dataLen) bad(`tensor '${name}': data ends at byte ${en} but the file has only ${dataLen} data bytes (truncated?)`);
      spans.push([b, en, name]);
      this.tensors.set(name, { name, dtype, shape, begin: dataStart + b, end: dataStart + en, file: this.path });
    }
    spans.sort((p, q) => p[0] - q[0]);
    for (let i = 1; i < spans.length; i++) {
      if (spans[i]![0] < spans[i - 1]![1]) bad(`tensors '${spans[i - 1]![2]}' and '${spans[i]![2]}' overlap`);
    }
    const end = spans.length ? spans[spans.length - 1]![1] : 0;
    if (end !== dataLen) bad(`${dataLen - end} bytes after the last tensor (the header and the file do not agree)`);
  }

  /** Read one tensor as float32 (F32, BF16 and F16 are supported). */
  read(name: string): Float32Array {
    const info = this.info(name);
    return this.readRange(info, info.begin, info.end);
  }

  /** Rows [r0, r1) of a tensor (along its first dim) as float32: a big tensor converted a slice at a time. */
  readRows(name: string, r0: number, r1: number): Float32Array {
    const info = this.info(name);
    const rows = info.shape[0] ?? 1;
    if (!(0 <= r0 && r0 <= r1 && r1 <= rows)) throw new CheckpointError(`${this.path}: rows [${r0}, ${r1}) of '${name}' (it has ${rows})`);
    const rowBytes = (info.end - info.begin) / Math.max(rows, 1);
    return this.readRange(info, info.begin + r0 * rowBytes, info.begin + r1 * rowBytes);
  }

  /** The stored bytes of a tensor, read into a new buffer. */
  readBytes(name: string): Uint8Array {
    const info = this.info(name);
    return new Uint8Array(this.readRaw(info, info.begin, info.end));
  }

  private info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new CheckpointError(`${this.path}: no tensor '${name}'`);
    return info;
  }

  private readRaw(info: TensorInfo, begin: number, end: number): ArrayBuffer {
    if (this.fd === null) this.fd = openSync(this.path, 'r');
    const bytes = new Uint8Array(end - begin); // its own ArrayBuffer: aligned for the typed views below
    let got = 0;
    while (got < bytes.length) {
      const r = readSync(this.fd, bytes, got, bytes.length - got, begin + got);
      if (r === 0) throw new CheckpointError(`${this.path}: unexpected end of file reading '${info.name}'`);
      got += r;
    }
    return bytes.buffer;
  }

  private readRange(info: TensorInfo, begin: number, end: number): Float32Array {
    const raw = this.readRaw(info, begin, end);
    const n = (end - begin) / DTYPE_BYTES[info.dtype]!;
    switch (info.dtype) {
      case 'F32':
        return new Float32Array(raw);
      case 'BF16':
        return bf16ToF32(new Uint16Array(raw), new Float32Array(n));
      case 'F16':
        return f16ToF32(new Uint16Array(raw), new Float32Array(n));
      default:
        throw new CheckpointError(`${this.path}: tensor '${info.name}' has dtype ${info.dtype}; only F32, BF16 and F16 can be loaded`);
    }
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/** A set of safetensors files addressed by tensor name: one file, or shards listed by an index.json weight_map. */
export class Checkpoint {
  readonly tensors = new Map<string, TensorInfo>();
  private files = new Map<string, SafetensorsFile>();

  private constructor() {}

  /**
   * Open a file, a `model.safetensors.index.json`, or a directory (which must hold an index.json,
   * `model.safetensors`, or exactly one `*.safetensors` file).
   */
  static open(path: string): Checkpoint {
    if (!existsSync(path)) throw new CheckpointError(`${path}: no such file or directory`);
    const ck = new Checkpoint();
    try {
      return ck.openPath(path);
    } catch (e) {
      ck.close(); // no file descriptor outlives a failed open
      throw e;
    }
  }

  private openPath(path: string): Checkpoint {
    if (path.endsWith('.json')) {
      this.openIndex(path);
      return this;
    }
    if (path.endsWith('.safetensors')) {
      this.add(path);
      return this;
    }
    const index = join(path, 'model.safetensors.index.json');
    if (existsSync(index)) this.openIndex(index);
    else if (existsSync(join(path, 'model.safetensors'))) this.add(join(path, 'model.safetensors'));
    else {
      const all = readdirSync(path).filter((f) => f.endsWith('.safetensors'));
      if (all.length !== 1) {
        throw new CheckpointError(
          `${path}: expected model.safetensors, model.safetensors.index.json or one *.safetensors file (found ${all.length})`,
        );
      }
      this.add(join(path, all[0]!));
    }
    return this;
  }

  private openIndex(indexPath: string): void {
    let idx: { weight_map?: Record<string, string> };
    try {
      idx = JSON.parse(readFileSync(indexPath, 'utf8')) as typeof idx;
    } catch {
      throw new CheckpointError(`${indexPath}: not valid JSON`);
    }
    if (!idx || typeof idx !== 'object' || !idx.weight_map || typeof idx.weight_map !== 'object' || Array.isArray(idx.weight_map))
      throw new CheckpointError(`${indexPath}: no "weight_map" object`);
    const dir = dirname(indexPath);
    for (const [name, shard] of Object.entries(idx.weight_map)) {
      // a shard is a plain file name beside the index: no folders, no '..', no absolute paths, no links out
      if (typeof shard !== 'string' || !/^[^/\\\0]{1,255}$/.test(shard) || shard === '.' || shard === '..')
        throw new CheckpointError(`${indexPath}: weight_map puts '${name}' in ${brief(shard)}, which is not a file name in ${dir}`);
    }
    for (const shard of new Set(Object.values(idx.weight_map))) {
      const p = join(dir, shard);
      if (existsSync(p) && lstatSync(p).isSymbolicLink() && !realpathSync(p).startsWith(realpathSync(dir) + sep))
        throw new CheckpointError(`${indexPath}: shard ${shard} is a link out of ${dir}`);
      this.add(p, false);
    }
    for (const [name, shard] of Object.entries(idx.weight_map)) {
      const info = this.files.get(join(dir, shard))!.tensors.get(name);
      if (!info) throw new CheckpointError(`${indexPath}: weight_map puts ${brief(name)} in ${brief(shard)}, which does not hold it`);
      this.tensors.set(name, info);
    }
  }

  private add(file: string, registerAll = true): void {
    const f = new SafetensorsFile(file);
    this.files.set(file, f);
    if (!registerAll) return;
    for (const [name, info] of f.tensors) {
      if (this.tensors.has(name)) throw new CheckpointError(`tensor '${name}' appears in two files (${basename(file)})`);
      this.tensors.set(name, info);
    }
  }

  read(name: string): Float32Array {
    return this.fileOf(name).read(name);
  }

  readRows(name: string, r0: number, r1: number): Float32Array {
    return this.fileOf(name).readRows(name, r0, r1);
  }

  readBytes(name: string): Uint8Array {
    return this.fileOf(name).readBytes(name);
  }

  /** The file that holds a tensor (for memory-mapping it). */
  fileOf(name: string): SafetensorsFile {
    const info = this.tensors.get(name);
    if (!info) throw new CheckpointError(`checkpoint has no tensor '${name}'`);
    return this.files.get(info.file)!;
  }

  close(): void {
    for (const f of this.files.values()) f.close();
  }
}

export interface TensorToWrite {
  name: string;
  shape: readonly number[];
  data: Float32Array;
}

/** Write tensors (sorted by name, header padded to 8 bytes) atomically, stored as F32, BF16 or F16. */
export function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  dtype: 'F32' | 'BF16' | 'F16' = 'F32',
  metadata: Record<string, string> = { format: 'pt' },
): void {
  writeSafetensorsStreaming(
    path,
    tensors.map((t) => ({ name: t.name, shape: t.shape, read: () => t.data })),
    dtype,
    metadata,
  );
}

/** A tensor to stream into a safetensors file: its shape and a reader called only when the writer reaches it. */
export interface TensorToStream {
  name: string;
  shape: readonly number[];
  read: () => Float32Array;
}

/**
 * writeSafetensors for models larger than memory: the header is computed from the shapes, then each tensor is read,
 * converted and written in turn, into a temporary file renamed over `path` when complete.
 */
export function writeSafetensorsStreaming(
  path: string,
  tensors: readonly TensorToStream[],
  dtype: 'F32' | 'BF16' | 'F16' = 'F32',
  metadata: Record<string, string> = { format: 'pt' },
): void {
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const width = dtype === 'F32' ? 4 : 2;
  const header: Record<string, unknown> = { __metadata__: metadata };
  let off = 0;
  for (const t of sorted) {
    const bytes = t.shape.reduce((p, d) => p * d, 1) * width;
    header[t.name] = { dtype, shape: [...t.shape], data_offsets: [off, off + bytes] };
    off += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const hb = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(hb.length));
  writeStreamAtomic(path, (put) => {
    put(len);
    put(hb);
    for (const t of sorted) {
      const data = t.read();
      const numel = t.shape.reduce((p, d) => p * d, 1);
      if (numel !== data.length) throw new Error(`writeSafetensors: '${t.name}' has ${data.length} values for shape [${t.shape}]`);
      put(
        dtype === 'F32'
          ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
          : new Uint8Array((dtype === 'BF16' ? f32ToBf16(data) : f32ToF16(data)).buffer),
      );
    }
  });
}
