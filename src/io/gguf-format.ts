// GGUF, llama.cpp's model file (version 3, little-endian): a header, typed metadata, tensor infos, then the tensor
// data, each tensor at an offset aligned to `general.alignment` (default 32) from the data section's start. This
// module (browser-safe: it reads through a ByteSource) parses the container and encodes headers; src/io/gguf.ts
// opens files and writes them; src/io/gguf-deepseek2.ts maps DeepSeek-V2 onto it. The reader checks
// every count, length, type and offset against the file before it allocates anything, and names the file and the
// field in its one error. The writer streams: tensor infos first (sizes are known from shapes and types), then each
// tensor's bytes as its producer yields them, into a temporary file renamed over the target at the end.
import { readFully, type ByteSource } from './bytes.js';
import { QUANT_FORMATS, type QuantType } from '../quant/formats.js';

export class GgufError extends Error {}

/** GGML tensor types this project reads (f32 plus the stored types). */
export type GgmlType = 'f32' | QuantType;
const GGML_BY_ID = new Map<number, GgmlType>([
  [0, 'f32'],
  ...Object.entries(QUANT_FORMATS).map(([t, f]) => [f.ggml, t as QuantType] as [number, GgmlType]),
]);
/** Names of the GGML types we do not read, for the error message. */
const OTHER_GGML: Record<number, string> = {
  9: 'q8_1', 10: 'q2_k', 11: 'q3_k', 15: 'q8_k', 16: 'iq2_xxs', 17: 'iq2_xs', 18: 'iq3_xxs', 19: 'iq1_s', 20: 'iq4_nl',
  21: 'iq3_s', 22: 'iq2_s', 23: 'iq4_xs', 24: 'i8', 25: 'i16', 26: 'i32', 27: 'i64', 28: 'f64', 29: 'iq1_m', 34: 'tq1_0',
  35: 'tq2_0', 39: 'mxfp4',
}; // prettier-ignore

export function ggmlId(t: GgmlType): number {
  return t === 'f32' ? 0 : QUANT_FORMATS[t].ggml;
}
function blockOf(t: GgmlType): [number, number] {
  return t === 'f32' ? [1, 4] : [QUANT_FORMATS[t].blockElems, QUANT_FORMATS[t].blockBytes];
}
/** Bytes of a tensor of `type` with dims ne (ne[0] the row length). */
export function tensorBytes(type: GgmlType, ne: readonly number[]): number {
  const [be, bb] = blockOf(type);
  const n = ne.reduce((a, b) => a * b, 1);
  return (n / be) * bb;
}

/** Metadata value types (gguf.h). */
export const enum VT {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
}
const SCALAR_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

/** A metadata value with its GGUF type (arrays carry their element type). */
export type GgufValue =
  | { type: Exclude<VT, VT.STRING | VT.ARRAY>; value: number | boolean }
  | { type: VT.STRING; value: string }
  | { type: VT.ARRAY; elem: VT; value: (number | boolean | string)[] };

export interface GgufTensorInfo {
  name: string;
  /** Dims, row length first (GGUF's ne). */
  ne: number[];
  type: GgmlType;
  /** Absolute offset of the data in the file, and its length. */
  offset: number;
  bytes: number;
}

const MAX_STRING = 1 << 30;
const MAX_ARRAY = 1 << 30;
const MAX_COUNT = 1 << 24;

/** A reader over a byte source, in chunks, that refuses to go past the end. */
class Cursor {
  private buf = new Uint8Array(1 << 16);
  private start = 0; // file offset of buf[0]
  private len = 0;
  pos = 0;
  readonly size: number;
  constructor(
    private readonly src: ByteSource,
    private readonly path: string,
  ) {
    this.size = src.size;
  }
  private need(n: number, what: string): number {
    if (this.pos + n > this.size)
      throw new GgufError(`${this.path}: truncated in ${what} (needs ${n} bytes at offset ${this.pos}, the file has ${this.size})`);
    if (this.pos < this.start || this.pos + n > this.start + this.len) {
      if (n > this.buf.length) this.buf = new Uint8Array(Math.max(n, 2 * this.buf.length));
      this.start = this.pos;
      this.len = this.src.read(this.buf, 0, Math.min(this.buf.length, this.size - this.pos), this.pos);
    }
    const at = this.pos - this.start;
    this.pos += n;
    return at;
  }
  private view(n: number, what: string): DataView {
    const at = this.need(n, what);
    return new DataView(this.buf.buffer, this.buf.byteOffset + at, n);
  }
  u32(what: string): number {
    return this.view(4, what).getUint32(0, true);
  }
  u64(what: string): number {
    const v = this.view(8, what).getBigUint64(0, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new GgufError(`${this.path}: ${what} is ${v}, too large`);
    return Number(v);
  }
  scalar(t: VT, what: string): number | boolean {
    const d = this.view(SCALAR_BYTES[t]!, what);
    switch (t) {
      case VT.U8: return d.getUint8(0);
      case VT.I8: return d.getInt8(0);
      case VT.U16: return d.getUint16(0, true);
      case VT.I16: return d.getInt16(0, true);
      case VT.U32: return d.getUint32(0, true);
      case VT.I32: return d.getInt32(0, true);
      case VT.F32: return d.getFloat32(0, true);
      case VT.BOOL: return d.getUint8(0) !== 0;
      case VT.U64: return Number(d.getBigUint64(0, true));
      case VT.I64: return Number(d.getBigInt64(0, true));
      default: return d.getFloat64(0, true);
    }
  } // prettier-ignore
  string(what: string): string {
    const n = this.u64(`${what} (length)`);
    if (n > MAX_STRING || this.pos + n > this.size)
      throw new GgufError(`${this.path}: ${what} claims ${n} bytes, past the end of the file`);
    const at = this.need(n, what);
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(this.buf.subarray(at, at + n));
    } catch {
      throw new GgufError(`${this.path}: ${what} is not valid UTF-8`);
    }
  }
}

/** A parsed header (GgufReader.headerState); readers built from it share its values, which nothing modifies. */
export interface GgufHeaderState {
  size: number;
  version: number;
  alignment: number;
  dataOffset: number;
  metadata: ReadonlyMap<string, GgufValue>;
  tensors: ReadonlyMap<string, GgufTensorInfo>;
}

export class GgufReader {
  readonly version: number;
  readonly metadata = new Map<string, GgufValue>();
  readonly tensors = new Map<string, GgufTensorInfo>();
  readonly alignment: number;
  readonly dataOffset: number;
  readonly size: number;
  private mapped: Uint8Array | null = null;

  /**
   * Parse and validate the header, metadata and tensor infos of `src` (`path` names it in errors); the data stays in
   * the source until asked for. `mapped`, the whole file mapped into memory, lets data() return views.
   */
  constructor(
    readonly path: string,
    private readonly src: ByteSource,
    mapped: Uint8Array | null = src.bytes,
    parsed: GgufHeaderState | null = null,
  ) {
    if (parsed && parsed.size === src.size) {
      // the same file's header, parsed before (a V2-Lite tokenizer is ~200k strings: a quarter second a parse)
      this.size = parsed.size;
      this.version = parsed.version;
      this.alignment = parsed.alignment;
      this.dataOffset = parsed.dataOffset;
      for (const [k, v] of parsed.metadata) this.metadata.set(k, v);
      for (const [k, v] of parsed.tensors) this.tensors.set(k, v);
      this.mapped = mapped && mapped.length === this.size ? mapped : null;
      return;
    }
    try {
      this.size = src.size;
      const c = new Cursor(src, path);
      const magic = c.u32('the magic number');
      if (magic !== 0x46554747) throw new GgufError(`${path}: not a GGUF file (it does not start with "GGUF")`);
      this.version = c.u32('the version');
      if (this.version !== 2 && this.version !== 3)
        throw new GgufError(`${path}: GGUF version ${this.version} is not supported (2 and 3 are)`);
      const nTensors = c.u64('the tensor count');
      const nKv = c.u64('the metadata count');
      if (nTensors > MAX_COUNT || nKv > MAX_COUNT)
        throw new GgufError(`${path}: ${nTensors} tensors and ${nKv} metadata entries is not plausible`);
      for (let i = 0; i < nKv; i++) {
        const key = c.string(`metadata key ${i}`);
        if (!key) throw new GgufError(`${path}: metadata key ${i} is empty`);
        if (this.metadata.has(key)) throw new GgufError(`${path}: metadata key '${key}' appears twice`);
        this.metadata.set(key, this.readValue(c, key));
      }
      const align = this.metadata.get('general.alignment');
      if (align && (align.type !== VT.U32 || !isPow2(align.value as number)))
        throw new GgufError(`${path}: general.alignment must be a power-of-two u32, got ${JSON.stringify(align.value)}`);
      this.alignment = align ? (align.value as number) : 32;
      const infos: { name: string; ne: number[]; type: GgmlType; rel: number }[] = [];
      for (let i = 0; i < nTensors; i++) {
        const name = c.string(`tensor ${i}'s name`);
        if (this.tensors.has(name) || infos.some((t) => t.name === name)) throw new GgufError(`${path}: tensor '${name}' appears twice`);
        const nd = c.u32(`tensor '${name}' dims`);
        if (nd < 1 || nd > 4) throw new GgufError(`${path}: tensor '${name}' has ${nd} dims (1 to 4 allowed)`);
        const ne: number[] = [];
        for (let d = 0; d < nd; d++) ne.push(c.u64(`tensor '${name}' dim ${d}`));
        const id = c.u32(`tensor '${name}' type`);
        const type = GGML_BY_ID.get(id);
        if (!type) {
          throw new GgufError(
            `${path}: tensor '${name}' is stored as ${OTHER_GGML[id] ?? `GGML type ${id}`}, which dsv2 does not read (it reads f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k)`,
          );
        }
        if (ne.some((n) => n < 1)) throw new GgufError(`${path}: tensor '${name}' has a zero dim [${ne}]`);
        if (ne[0]! % blockOf(type)[0] !== 0)
          throw new GgufError(`${path}: tensor '${name}' rows of ${ne[0]} values do not fill ${type} blocks of ${blockOf(type)[0]}`);
        const rel = c.u64(`tensor '${name}' offset`);
        if (rel % this.alignment !== 0)
          throw new GgufError(`${path}: tensor '${name}' offset ${rel} is not a multiple of the alignment ${this.alignment}`);
        infos.push({ name, ne, type, rel });
      }
      this.dataOffset = Math.ceil(c.pos / this.alignment) * this.alignment;
      const spans: [number, number, string][] = [];
      for (const t of infos) {
        const bytes = tensorBytes(t.type, t.ne);
        const offset = this.dataOffset + t.rel;
        if (offset + bytes > this.size)
          throw new GgufError(
            `${path}: tensor '${t.name}' (${bytes} bytes at ${offset}) runs past the end of the file (${this.size} bytes); the file is truncated`,
          );
        spans.push([t.rel, t.rel + bytes, t.name]);
        this.tensors.set(t.name, { name: t.name, ne: t.ne, type: t.type, offset, bytes });
      }
      spans.sort((a, b) => a[0] - b[0]);
      for (let i = 1; i < spans.length; i++)
        if (spans[i]![0] < spans[i - 1]![1]) throw new GgufError(`${path}: tensors '${spans[i - 1]![2]}' and '${spans[i]![2]}' overlap`);
      this.mapped = mapped && mapped.length === this.size ? mapped : null;
    } catch (e) {
      src.close();
      throw e;
    }
  }

  /** What the constructor parsed, to build another reader of the same file without parsing it again. */
  headerState(): GgufHeaderState {
    const { size, version, alignment, dataOffset, metadata, tensors } = this;
    return { size, version, alignment, dataOffset, metadata, tensors };
  }

  private readValue(c: Cursor, key: string): GgufValue {
    const t = c.u32(`the type of '${key}'`) as VT;
    if (t === VT.STRING) return { type: t, value: c.string(`'${key}'`) };
    if (t === VT.ARRAY) {
      const elem = c.u32(`the element type of '${key}'`) as VT;
      const n = c.u64(`the length of '${key}'`);
      if (elem === VT.ARRAY) throw new GgufError(`${this.path}: '${key}' is an array of arrays (GGUF allows none)`);
      if (elem !== VT.STRING && !(elem in SCALAR_BYTES)) throw new GgufError(`${this.path}: '${key}' has elements of unknown type ${elem}`);
      const min = elem === VT.STRING ? 8 : SCALAR_BYTES[elem]!;
      if (n > MAX_ARRAY || c.pos + n * min > c.size)
        throw new GgufError(`${this.path}: '${key}' claims ${n} elements, past the end of the file`);
      const value: (number | boolean | string)[] = new Array(n);
      for (let i = 0; i < n; i++) value[i] = elem === VT.STRING ? c.string(`'${key}'[${i}]`) : c.scalar(elem, `'${key}'[${i}]`);
      return { type: VT.ARRAY, elem, value };
    }
    if (!(t in SCALAR_BYTES)) throw new GgufError(`${this.path}: '${key}' has unknown value type ${t}`);
    return { type: t, value: c.scalar(t, `'${key}'`) } as GgufValue;
  }

  /** Whether the data is memory-mapped (read in place) rather than read into memory tensor by tensor. */
  get isMapped(): boolean {
    return this.mapped !== null;
  }

  /** A tensor's bytes: a view of the mapping (no copy), or read from the file into a new buffer. */
  data(name: string): Uint8Array {
    const t = this.tensors.get(name);
    if (!t) throw new GgufError(`${this.path}: no tensor '${name}'`);
    if (this.mapped) return this.mapped.subarray(t.offset, t.offset + t.bytes);
    if (this.closed) throw new GgufError(`${this.path}: read after close`);
    const out = new Uint8Array(t.bytes);
    if (readFully(this.src, out, t.offset) < t.bytes) throw new GgufError(`${this.path}: tensor '${name}' could not be read in full`);
    return out;
  }

  /** A metadata value, checked to be a number (any numeric type), string, bool or array. */
  num(key: string): number | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type === VT.STRING || v.type === VT.ARRAY || v.type === VT.BOOL)
      throw new GgufError(`${this.path}: '${key}' must be a number, got ${describe(v)}`);
    return v.value as number;
  }
  str(key: string): string | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== VT.STRING) throw new GgufError(`${this.path}: '${key}' must be a string, got ${describe(v)}`);
    return v.value;
  }
  bool(key: string): boolean | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== VT.BOOL) throw new GgufError(`${this.path}: '${key}' must be a bool, got ${describe(v)}`);
    return v.value as boolean;
  }
  array(key: string): (number | boolean | string)[] | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== VT.ARRAY) throw new GgufError(`${this.path}: '${key}' must be an array, got ${describe(v)}`);
    return v.value;
  }

  private closed = false;

  /** Close the source (a mapping stays valid until garbage-collected with the tensors that view it). */
  close(): void {
    this.src.close();
    this.closed = true;
  }
}

function describe(v: GgufValue): string {
  return v.type === VT.ARRAY ? `an array of ${v.value.length}` : JSON.stringify(v.value);
}
function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

// ---- writing ----------------------------------------------------------------------------------------------------

/** A tensor to write: its info, and a producer of its bytes in order (chunks that add up to the tensor's size). */
export interface GgufTensorOut {
  name: string;
  ne: readonly number[];
  type: GgmlType;
  chunks: () => Iterable<Uint8Array>;
}

class ByteWriter {
  private parts: Uint8Array[] = [];
  length = 0;
  private push(b: Uint8Array): void {
    this.parts.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    this.push(b);
  }
  u64(v: number): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
    this.push(b);
  }
  string(s: string): void {
    const e = new TextEncoder().encode(s);
    this.u64(e.length);
    this.push(e);
  }
  scalar(t: VT, v: number | boolean): void {
    const b = new Uint8Array(SCALAR_BYTES[t]!);
    const d = new DataView(b.buffer);
    const n = typeof v === 'boolean' ? Number(v) : v;
    switch (t) {
      case VT.U8: d.setUint8(0, n); break;
      case VT.I8: d.setInt8(0, n); break;
      case VT.U16: d.setUint16(0, n, true); break;
      case VT.I16: d.setInt16(0, n, true); break;
      case VT.U32: d.setUint32(0, n, true); break;
      case VT.I32: d.setInt32(0, n, true); break;
      case VT.F32: d.setFloat32(0, n, true); break;
      case VT.BOOL: d.setUint8(0, n ? 1 : 0); break;
      case VT.U64: d.setBigUint64(0, BigInt(n), true); break;
      case VT.I64: d.setBigInt64(0, BigInt(n), true); break;
      default: d.setFloat64(0, n, true);
    }
    this.push(b);
  } // prettier-ignore
  pad(to: number): void {
    const n = (to - (this.length % to)) % to;
    if (n) this.push(new Uint8Array(n));
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.parts) out.set(p, (at += p.length) - p.length);
    return out;
  }
}

/**
 * The header of a GGUF (version 3, alignment 32) with these metadata (in order) and tensor infos: what precedes the
 * tensor data, padded to the alignment; each tensor's bytes follow, padded likewise. `where` names it in errors.
 */
export function ggufHeader(
  where: string,
  metadata: readonly [string, GgufValue][],
  tensors: readonly Pick<GgufTensorOut, 'name' | 'ne' | 'type'>[],
): { header: Uint8Array; sizes: number[]; align: number } {
  const align = 32;
  const h = new ByteWriter();
  h.u32(0x46554747);
  h.u32(3);
  h.u64(tensors.length);
  h.u64(metadata.length);
  for (const [key, v] of metadata) {
    h.string(key);
    h.u32(v.type);
    if (v.type === VT.STRING) h.string(v.value);
    else if (v.type === VT.ARRAY) {
      h.u32(v.elem);
      h.u64(v.value.length);
      for (const x of v.value) {
        if (v.elem === VT.STRING) h.string(String(x));
        else h.scalar(v.elem, x as number | boolean);
      }
    } else h.scalar(v.type, v.value);
  }
  let rel = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    const bytes = tensorBytes(t.type, t.ne);
    if (!Number.isInteger(bytes)) throw new GgufError(`${where}: tensor '${t.name}' [${t.ne}] does not fill ${t.type} blocks`);
    h.string(t.name);
    h.u32(t.ne.length);
    for (const n of t.ne) h.u64(n);
    h.u32(ggmlId(t.type));
    h.u64(rel);
    sizes.push(bytes);
    rel += Math.ceil(bytes / align) * align;
  }
  h.pad(align);
  return { header: h.bytes(), sizes, align };
}

// ---- metadata helpers -----------------------------------------------------------------------------------------
export const u32 = (value: number): GgufValue => ({ type: VT.U32, value });
export const f32 = (value: number): GgufValue => ({ type: VT.F32, value });
export const bool = (value: boolean): GgufValue => ({ type: VT.BOOL, value });
export const str = (value: string): GgufValue => ({ type: VT.STRING, value });
export const strs = (value: string[]): GgufValue => ({ type: VT.ARRAY, elem: VT.STRING, value });
export const i32s = (value: number[]): GgufValue => ({ type: VT.ARRAY, elem: VT.I32, value });
