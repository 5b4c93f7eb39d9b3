// safetensors (spec §7.1), browser-safe: the reader over a ByteSource and the encoder. The header is validated
// against the file size (offsets in range, non-overlapping, byte length = numel × dtype size); tensors are read
// lazily, one at a time, so a checkpoint larger than memory can be opened and inspected. F32, BF16 and F16 are
// widened to float32 on read. Files on disk, shards and atomic writes are src/io/safetensors.ts (Node).
import { brief } from './brief.js';
import { readFully, type ByteSource } from './bytes.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../tensor/dtype.js';

export type StDType = 'F32' | 'BF16' | 'F16' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL' | 'F8_E4M3' | 'F8_E5M2';
export const DTYPE_BYTES: Record<string, number> = {
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

/** An index.json's "metadata", when there, is an object (transformers writes {"total_size": …}). */
export function checkIndexMetadata(idx: object, where: string): void {
  const m = (idx as { metadata?: unknown }).metadata;
  if (m !== undefined && m !== null && (typeof m !== 'object' || Array.isArray(m)))
    throw new CheckpointError(`${where}: "metadata" must be an object, got ${brief(m)}`);
}

const MAX_HEADER = 100 * 1024 * 1024;

/** One safetensors file read through a ByteSource: header parsed and validated at open, data read on demand. */
export class SafetensorsReader {
  readonly tensors = new Map<string, TensorInfo>();
  readonly metadata: Record<string, string> = {};

  /** `path` names the file in errors and in each TensorInfo. */
  constructor(
    readonly path: string,
    private readonly src: ByteSource,
  ) {
    try {
      this.parseHeader();
    } catch (e) {
      this.close();
      throw e;
    }
  }

  private parseHeader(): void {
    const size = this.src.size;
    const bad = (msg: string): never => {
      throw new CheckpointError(`${this.path}: ${msg}`);
    };
    if (size < 8) bad(`file is ${size} bytes, too short for a safetensors header`);
    const lenBuf = new Uint8Array(8);
    this.src.read(lenBuf, 0, 8, 0);
    const n = Number(new DataView(lenBuf.buffer).getBigUint64(0, true));
    if (n < 2 || n > MAX_HEADER || 8 + n > size)
      bad(`header length ${n} does not fit in a ${size}-byte file (truncated or not safetensors)`);
    const hb = new Uint8Array(n);
    this.src.read(hb, 0, n, 8);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(new TextDecoder().decode(hb)) as Record<string, unknown>;
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
    // the format packs the tensors tightly from byte 0 (as the reference implementation checks): no overlaps, no holes
    if (spans.length && spans[0]![0] !== 0) bad(`the first tensor '${spans[0]![2]}' starts at data byte ${spans[0]![0]}, not 0`);
    for (let i = 1; i < spans.length; i++) {
      if (spans[i]![0] < spans[i - 1]![1]) bad(`tensors '${spans[i - 1]![2]}' and '${spans[i]![2]}' overlap`);
      if (spans[i]![0] > spans[i - 1]![1])
        bad(`${spans[i]![0] - spans[i - 1]![1]} bytes between tensors '${spans[i - 1]![2]}' and '${spans[i]![2]}' belong to none`);
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
    const bytes = new Uint8Array(end - begin); // its own ArrayBuffer: aligned for the typed views below
    if (readFully(this.src, bytes, begin) < bytes.length)
      throw new CheckpointError(`${this.path}: unexpected end of file reading '${info.name}'`);
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
    this.src.close();
  }
}

export interface TensorToWrite {
  name: string;
  shape: readonly number[];
  data: Float32Array;
}

/** A tensor to stream into a safetensors file: its shape and a reader called only when the writer reaches it. */
export interface TensorToStream {
  name: string;
  shape: readonly number[];
  read: () => Float32Array;
}

/**
 * The bytes of a safetensors file, in order, as a generator: the 8-byte header length and the header (tensors sorted
 * by name, padded to 8 bytes), then each tensor, read (`read()`) and converted only when reached.
 */
export function* safetensorsChunks(
  tensors: readonly TensorToStream[],
  dtype: 'F32' | 'BF16' | 'F16' = 'F32',
  metadata: Record<string, string> = { format: 'pt' },
): Generator<Uint8Array> {
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const width = dtype === 'F32' ? 4 : 2;
  const header: Record<string, unknown> = { __metadata__: metadata };
  let off = 0;
  for (const t of sorted) {
    const bytes = t.shape.reduce((p, d) => p * d, 1) * width;
    header[t.name] = { dtype, shape: [...t.shape], data_offsets: [off, off + bytes] };
    off += bytes;
  }
  const enc = new TextEncoder();
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + enc.encode(json).length) % 8)) % 8);
  const hb = enc.encode(json);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(hb.length), true);
  yield len;
  yield hb;
  for (const t of sorted) {
    const data = t.read();
    const numel = t.shape.reduce((p, d) => p * d, 1);
    if (numel !== data.length) throw new Error(`writeSafetensors: '${t.name}' has ${data.length} values for shape [${t.shape}]`);
    yield dtype === 'F32'
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      : new Uint8Array((dtype === 'BF16' ? f32ToBf16(data) : f32ToF16(data)).buffer);
  }
}

/** A whole safetensors file in memory (what a page downloads). */
export function encodeSafetensors(
  tensors: readonly TensorToWrite[],
  dtype: 'F32' | 'BF16' | 'F16' = 'F32',
  metadata: Record<string, string> = { format: 'pt' },
): Uint8Array {
  const parts = [
    ...safetensorsChunks(
      tensors.map((t) => ({ name: t.name, shape: t.shape, read: () => t.data })),
      dtype,
      metadata,
    ),
  ];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
