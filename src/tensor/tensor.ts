// The Tensor: a typed-array storage plus shape, strides and offset. Views (reshape, permute, narrow, expand)
// share storage; `contiguous()` copies only when the layout requires it. Autograd state (requiresGrad, grad,
// node) lives here too; the graph itself, its node types and the ops are src/autograd, which this module does not
// import (reading values copies through the backend, not through an op). The fluent methods (`x.reshape(…)`,
// `loss.backward()`) are installed by src/autograd/methods.ts, for users; src/ calls the functions.
//
// Memory rule (docs/engine.md): storage is owned by reachability. There is no global tape: each op output
// points to the node that made it, and `backward()` releases every node (and so every saved activation) as
// soon as its gradient has been propagated. A training step therefore leaves nothing behind but parameters,
// their `.grad` buffers (reused across steps) and optimizer state. `dispose()` releases a large buffer early.
import type { Backend, F32, I32 } from '../backend/backend.js';
import { defaultBackend, loadBackend } from '../backend/registry.js';
import { activeArena } from './arena.js';
import type { DType } from './dtype.js';
import { Rng } from './random.js';
import { dequantize, rowBytes, type QuantType } from '../quant/formats.js';
import { checkShape, contiguousStrides, fmtShape, isContiguous, sizeOf, type Shape } from './shape.js';
import type { GradNode } from '../autograd/graph.js';

export type { GradNode, SliceGrad } from '../autograd/graph.js';

export class Tensor {
  requiresGrad = false;
  node: GradNode | null = null;
  name: string | undefined;
  private disposed = false;

  constructor(
    readonly backend: Backend,
    readonly data: F32 | I32 | Uint8Array,
    readonly shape: Shape,
    readonly strides: readonly number[],
    readonly offset: number,
    readonly dtype: DType,
    /** The tensor whose storage this view shares, or null when this tensor owns its storage. */
    readonly base: Tensor | null = null,
  ) {}

  // The gradient buffer, and whether its contents are stale and count as zero (after zeroGrad()): a training
  // step then overwrites the buffer instead of filling it with zeros and adding (what PyTorch's set_to_none buys,
  // without giving the memory up). Readers of `.grad` always see the true values.
  private gradBuf: Tensor | null = null;
  private gradIsZero = false;

  /** The accumulated gradient of a leaf (null before the first backward). */
  get grad(): Tensor | null {
    if (this.gradIsZero) {
      const g = this.gradBuf!;
      g.backend.fill(g.data as F32, g.size, 0);
      this.gradIsZero = false;
    }
    return this.gradBuf;
  }

  set grad(g: Tensor | null) {
    this.gradBuf = g;
    this.gradIsZero = false;
  }

  /** Zero the gradient in O(1): the buffer is kept, and the next backward writes it instead of adding to it. */
  zeroGrad(): void {
    if (this.gradBuf) this.gradIsZero = true;
  }

  /**
   * The gradient buffer without bringing it up to date: its storage, for memory bookkeeping (arena keeps), and
   * `zero`, true while its contents are stale and count as zero. Used by the autograd engine to write leaf
   * gradients in place; everything else reads `.grad`.
   */
  gradBuffer(): { buf: Tensor; zero: boolean } | null {
    return this.gradBuf ? { buf: this.gradBuf, zero: this.gradIsZero } : null;
  }

  /** The engine has written the gradient buffer in full (see gradBuffer()): its contents are current again. */
  markGradWritten(): void {
    this.gradIsZero = false;
  }

  get size(): number {
    return sizeOf(this.shape);
  }

  get ndim(): number {
    return this.shape.length;
  }

  isContiguous(): boolean {
    return isContiguous(this.shape, this.strides);
  }

  isDisposed(): boolean {
    return this.disposed || (this.base !== null && this.base.isDisposed());
  }

  /** The contiguous float data of this tensor as a zero-copy subarray. Throws if it is not contiguous. */
  f32(): F32 {
    // the common case first: a fresh op output owns exactly its storage (no view object to make)
    if (this.offset === 0 && this.dtype === 'f32' && this.data.length === this.size && this.data.length > 0 && !this.isDisposed())
      return this.data as F32;
    this.check('f32');
    if (this.dtype !== 'f32') throw new Error(`expected a float32 tensor, got ${this.dtype}`);
    if (!this.isContiguous()) throw new Error('internal: f32() on a non-contiguous tensor; call contiguous() first');
    return (this.data as F32).subarray(this.offset, this.offset + this.size);
  }

  /** The contiguous index data of an int32 tensor as a zero-copy subarray. */
  i32(): I32 {
    this.check('i32');
    if (this.dtype !== 'i32') throw new Error(`expected an int32 tensor, got ${this.dtype}`);
    if (!this.isContiguous()) throw new Error('internal: i32() on a non-contiguous tensor; call contiguous() first');
    return (this.data as I32).subarray(this.offset, this.offset + this.size);
  }

  /** Throws if the storage is gone: disposed, or taken back by a BufferArena at its reset. */
  check(what: string): void {
    if (this.isDisposed()) throw new Error(`${what}: this tensor (shape ${fmtShape(this.shape)}) was disposed`);
    if (this.data.length === 0 && this.size > 0) {
      throw new Error(
        `${what}: this tensor (shape ${fmtShape(this.shape)}) belongs to an earlier step; its arena took the storage back at reset`,
      );
    }
  }

  /** The float values of a float32 tensor (its contiguous data) or of a stored weight (decoded into a new array). */
  floats(): F32 {
    if (this.isStored()) return dequantize(this.dtype as QuantType, this.bytes(), this.shape[0]!, this.shape[1]!);
    if (this.dtype !== 'f32') throw new Error(`expected a float32 tensor, got ${this.dtype}`);
    return this.values() as F32;
  }

  /** Values in row-major order as a plain array (a stored weight's decoded values). */
  toArray(): number[] {
    return Array.from(this.isStored() ? this.floats() : this.values());
  }

  /** The values in row-major order: the storage itself when contiguous, else a copy (no graph: reading is not an op). */
  private values(): F32 | I32 {
    this.check('read');
    if (this.isContiguous()) return this.dtype === 'i32' ? this.i32() : this.f32();
    const dense = { offset: 0, strides: contiguousStrides(this.shape) };
    if (this.dtype === 'f32') {
      const out = new Float32Array(this.size);
      this.backend.copy({ buf: this.data as F32, offset: this.offset, strides: this.strides }, { buf: out, ...dense }, this.shape);
      return out;
    }
    // int32 views are rare (indices are made contiguous): an odometer in place of a kernel
    const out = new Int32Array(this.size);
    const src = this.data as I32;
    const idx = new Array<number>(this.ndim).fill(0);
    for (let n = 0; n < this.size; n++) {
      let at = this.offset;
      for (let d = 0; d < this.ndim; d++) at += idx[d]! * this.strides[d]!;
      out[n] = src[at]!;
      for (let d = this.ndim - 1; d >= 0 && ++idx[d]! === this.shape[d]!; d--) idx[d] = 0;
    }
    return out;
  }

  /** Values as nested arrays following the shape. */
  toNested(): unknown {
    const flat = this.toArray();
    const build = (dim: number, start: number): unknown => {
      if (dim === this.ndim) return flat[start];
      const step = sizeOf(this.shape.slice(dim + 1));
      return Array.from({ length: this.shape[dim]! }, (_, i) => build(dim + 1, start + i * step));
    };
    return build(0, 0);
  }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw new Error(`item() needs a one-element tensor, got shape ${fmtShape(this.shape)}`);
    return this.data[this.offset]!;
  }

  /** Release the storage now (the owner's buffer goes back to the backend). Views of it become unusable. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.node = null;
    this.grad = null;
    if (this.base === null && !(this.data instanceof Uint8Array)) this.backend.free(this.data);
  }

  /** Whether this is a weight kept in a stored type (bf16, f16, quantized): only products can read it. */
  isStored(): boolean {
    return this.dtype !== 'f32' && this.dtype !== 'i32';
  }

  /** The raw bytes of a stored weight (rows of rowBytes(dtype, in) bytes). */
  bytes(): Uint8Array {
    this.check('bytes');
    if (!(this.data instanceof Uint8Array)) throw new Error(`bytes() needs a stored weight, got a ${this.dtype} tensor`);
    return this.data;
  }

  /** Mark as a leaf that accumulates gradient. Returns this. */
  requireGrad(on = true): this {
    if (on && this.dtype !== 'f32') throw new Error('only float32 tensors can require gradients');
    this.requiresGrad = on;
    return this;
  }

  /** A new leaf sharing storage with this tensor, cut off from the graph. */
  detach(): Tensor {
    return new Tensor(this.backend, this.data, this.shape, this.strides, this.offset, this.dtype, this.base ?? this);
  }

  toString(): string {
    return `Tensor(${fmtShape(this.shape)}, ${this.dtype}, ${this.backend.name})`;
  }
}

// ---- factories ----------------------------------------------------------------------------------------------

export interface CreateOptions {
  backend?: Backend | string;
  requiresGrad?: boolean;
}

function pickBackend(b: Backend | string | undefined): Backend {
  if (b === undefined) return defaultBackend();
  return typeof b === 'string' ? loadBackend(b) : b;
}

/** A fresh, owning, contiguous tensor around a backend buffer. */
export function wrap(backend: Backend, data: F32 | I32, shape: Shape, dtype: DType = data instanceof Int32Array ? 'i32' : 'f32'): Tensor {
  if (data.length !== sizeOf(shape)) {
    throw new Error(`internal: buffer of ${data.length} elements for shape ${fmtShape(shape)}`);
  }
  return new Tensor(backend, data, [...shape], contiguousStrides(shape), 0, dtype);
}

/** A new zero-filled float tensor on `backend`. */
/**
 * A weight [out, in] kept in a stored type: `bytes` holds its rows in that type's layout (src/quant/formats.ts), used
 * in place (a memory-mapped file's bytes, say). Products read it; nothing can differentiate through it.
 */
export function storedWeight(backend: Backend, type: QuantType, bytes: Uint8Array, shape: Shape): Tensor {
  if (shape.length !== 2) throw new Error(`a ${type} weight must be [out, in], got ${fmtShape(shape)}`);
  const need = shape[0]! * rowBytes(type, shape[1]!);
  if (bytes.length !== need) throw new Error(`a ${type} weight ${fmtShape(shape)} needs ${need} bytes, got ${bytes.length}`);
  return new Tensor(backend, bytes, shape, contiguousStrides(shape), 0, type);
}

export function empty(backend: Backend, shape: Shape): Tensor {
  const n = sizeOf(shape);
  const arena = activeArena(backend);
  return wrap(backend, arena ? arena.f32(n, false) : backend.alloc(n), shape, 'f32');
}

/** A new float tensor with unspecified contents: only for outputs that a kernel then writes in full. */
export function uninit(backend: Backend, shape: Shape): Tensor {
  const n = sizeOf(shape);
  const arena = activeArena(backend);
  return wrap(backend, arena ? arena.f32(n, true) : backend.allocUninit ? backend.allocUninit(n) : backend.alloc(n), shape, 'f32');
}

export function emptyInt(backend: Backend, shape: Shape): Tensor {
  const n = sizeOf(shape);
  const arena = activeArena(backend);
  return wrap(backend, arena ? arena.i32(n) : backend.allocInt(n), shape, 'i32');
}

type Nested = number | readonly Nested[];

function inferShape(v: Nested): number[] {
  const shape: number[] = [];
  let cur: Nested = v;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    cur = cur[0] as Nested;
  }
  return shape;
}

function flatten(v: Nested, out: number[]): void {
  if (Array.isArray(v)) for (const x of v) flatten(x as Nested, out);
  else out.push(v as number);
}

function fromValues(values: Nested | ArrayLike<number>, shape: Shape | undefined, dtype: DType, opts: CreateOptions): Tensor {
  const backend = pickBackend(opts.backend);
  let flat: ArrayLike<number>;
  let shp: Shape;
  if (ArrayBuffer.isView(values)) {
    flat = values as unknown as ArrayLike<number>;
    shp = shape ?? [flat.length];
  } else {
    const list: number[] = [];
    flatten(values as Nested, list);
    flat = list;
    shp = shape ?? inferShape(values as Nested);
  }
  checkShape(shp);
  if (flat.length !== sizeOf(shp)) {
    throw new Error(`${flat.length} values do not fill shape ${fmtShape(shp)} (${sizeOf(shp)} elements)`);
  }
  const t = dtype === 'f32' ? empty(backend, shp) : emptyInt(backend, shp);
  for (let i = 0; i < flat.length; i++) {
    const x = flat[i]!;
    if (dtype === 'i32' && !Number.isInteger(x)) throw new Error(`int32 tensor values must be integers, got ${x}`);
    t.data[i] = x;
  }
  if (opts.requiresGrad) t.requireGrad();
  return t;
}

/** A float32 tensor from nested arrays or a flat typed array (with an explicit shape). */
export function tensor(values: Nested | ArrayLike<number>, shape?: Shape, opts: CreateOptions = {}): Tensor {
  return fromValues(values, shape, 'f32', opts);
}

/** An int32 tensor (token ids, indices). */
export function intTensor(values: Nested | ArrayLike<number>, shape?: Shape, opts: CreateOptions = {}): Tensor {
  return fromValues(values, shape, 'i32', opts);
}

export function scalar(value: number, opts: CreateOptions = {}): Tensor {
  return fromValues([value], [], 'f32', opts);
}

export function zeros(shape: Shape, opts: CreateOptions = {}): Tensor {
  checkShape(shape);
  const t = empty(pickBackend(opts.backend), shape);
  if (opts.requiresGrad) t.requireGrad();
  return t;
}

export function full(shape: Shape, value: number, opts: CreateOptions = {}): Tensor {
  const t = zeros(shape, opts);
  t.backend.fill(t.data as F32, t.size, value);
  return t;
}

export function ones(shape: Shape, opts: CreateOptions = {}): Tensor {
  return full(shape, 1, opts);
}

/** 0, 1, …, n−1 as int32. */
export function arange(n: number, opts: CreateOptions = {}): Tensor {
  const t = emptyInt(pickBackend(opts.backend), [n]);
  for (let i = 0; i < n; i++) t.data[i] = i;
  return t;
}

export interface RandomOptions extends CreateOptions {
  rng?: Rng;
  seed?: number;
}

/** Normal(mean, std²) samples from a seeded generator. */
export function randn(shape: Shape, opts: RandomOptions & { mean?: number; std?: number } = {}): Tensor {
  const rng = opts.rng ?? new Rng(opts.seed ?? 0);
  const t = zeros(shape, opts);
  const { mean = 0, std = 1 } = opts;
  for (let i = 0; i < t.size; i++) t.data[i] = mean + std * rng.normal();
  return t;
}

/** Uniform samples in [low, high) from a seeded generator. */
export function rand(shape: Shape, opts: RandomOptions & { low?: number; high?: number } = {}): Tensor {
  const rng = opts.rng ?? new Rng(opts.seed ?? 0);
  const t = zeros(shape, opts);
  const { low = 0, high = 1 } = opts;
  for (let i = 0; i < t.size; i++) t.data[i] = low + (high - low) * rng.uniform();
  return t;
}
