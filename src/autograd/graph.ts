// Reverse-mode autodiff. Every op output that depends on a tensor with requiresGrad carries a GradNode (its
// inputs and a backward function). backward() walks those nodes in reverse topological order, calls each
// backward once with the summed upstream gradient, accumulates into the leaves' `.grad`, and frees each node
// after use (unless retainGraph) so saved activations are released as soon as possible.
import { Tensor, uninit } from '../tensor/tensor.js';
import { fmtShape, shapesEqual } from '../tensor/shape.js';
import { contiguous } from './ops/views.js';
import { addInto, cloneTensor, copyInto, onesLike, strided } from './ops/kernels.js';

/** How an op output was produced: its differentiable inputs and the function mapping dL/dy to dL/dinputs. */
/**
 * A gradient that is zero outside one slice of its input (the backward of narrow/split): `grad` belongs at
 * [start, start + grad.shape[axis]) along `axis`. The graph adds it into one shared buffer instead of
 * materialising a full-size zero tensor per slice.
 */
export interface SliceGrad {
  slice: Tensor;
  axis: number;
  start: number;
}

export interface GradNode {
  op: string;
  inputs: readonly Tensor[];
  backward: ((gy: Tensor) => readonly (Tensor | SliceGrad | null)[]) | null;
  /** The backward takes its gradient in any layout (a view op, or a kernel that reads strides); else contiguous. */
  stridedGrad?: boolean;
}

let gradDisabled = 0;
/**
 * A backward walk: its pending gradient sums; those it may add into in place (`owned`: allocated by the walk or
 * handed over fresh by a backward, and not yet passed on to a backward, which may return them or views of them
 * for other inputs); and the sums built from slices (narrow's SliceGrad) that start uninitialised: `partial`
 * records which ranges along one axis the slices have written, and the rest is zero-filled only when the sum is
 * used (`settle`), so a gradient assembled from disjoint slices (the key and value halves of kv_b_proj's output) needs no
 * clearing pass first.
 */
interface Walk {
  grads: Map<Tensor, Tensor>;
  owned: Set<Tensor>;
  partial: Map<Tensor, { axis: number; ranges: [number, number][] }>;
}
/** The backward walk in progress (innermost). */
let walk: Walk | null = null;
/** Gradients an op's backward allocated and handed over whole (freshGrad): the walk may add into them in place. */
const fresh = new WeakSet<Tensor>();

/** Mark a gradient a backward has just allocated and returns to nobody else, so the walk may accumulate into it. */
export function freshGrad<T extends Tensor | null>(t: T): T {
  if (t) fresh.add(t);
  return t;
}

/**
 * Inside a backward walk: where an op's backward may write (beta 0) or add (beta 1) the gradient of input `x`
 * itself, sparing a separate buffer and the pass that adds it to the rest of x's gradient — a GEMM then
 * accumulates with its beta. For a leaf that is its `.grad` buffer (beta 0 while it counts as zero after
 * zeroGrad(), else 1); for an op output, the gradient sum this walk already holds for it, when the walk owns it
 * (beta 1: e.g. the second of two projections reading the same input). Claiming means the caller writes the
 * whole gradient there and returns null for x. Null when there is no such buffer (the caller allocates one).
 */
export function gradTarget(x: Tensor): { out: Tensor; beta: 0 | 1 } | null {
  if (walk === null || !x.requiresGrad) return null;
  if (x.node === null) {
    const gb = x.gradBuffer();
    if (!gb || !gb.buf.isContiguous() || !shapesEqual(gb.buf.shape, x.shape)) return null;
    x.markGradWritten();
    return { out: gb.buf, beta: gb.zero ? 0 : 1 };
  }
  const prev = walk.grads.get(x);
  if (!prev || !walk.owned.has(prev) || !prev.isContiguous()) return null;
  settle(walk, prev);
  return { out: prev, beta: 1 };
}

export function isGradEnabled(): boolean {
  return gradDisabled === 0;
}

/** Run fn without recording any graph (inference, optimizer updates, gradient arithmetic). */
export function noGrad<T>(fn: () => T): T {
  gradDisabled++;
  try {
    return fn();
  } finally {
    gradDisabled--;
  }
}

/**
 * Attach a backward function to `out` when grad mode is on and any input requires grad. The backward gets dL/dout
 * (contiguous, shape of out; in any layout with `stridedGrad`) and returns dL/dinput for each input, or null
 * where an input needs none.
 */
export function record(
  out: Tensor,
  op: string,
  inputs: readonly Tensor[],
  backward: (gy: Tensor) => readonly (Tensor | SliceGrad | null)[],
  opts: { stridedGrad?: boolean } = {},
): Tensor {
  if (gradDisabled > 0) return out;
  let any = false;
  for (const t of inputs) if (t.requiresGrad) any = true;
  if (!any) return out;
  out.requiresGrad = true;
  out.node = { op, inputs, backward, stridedGrad: opts.stridedGrad };
  return out;
}

function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  const stack: [Tensor, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1]!;
    const [t, i] = top;
    const inputs = t.node?.inputs ?? [];
    if (i < inputs.length) {
      top[1]++;
      const next = inputs[i]!;
      if (next.requiresGrad && !seen.has(next)) {
        seen.add(next);
        stack.push([next, 0]);
      }
    } else {
      order.push(t);
      stack.pop();
    }
  }
  return order; // children before parents; reversed below
}

export function backward(root: Tensor, grad?: Tensor, opts: { retainGraph?: boolean } = {}): void {
  if (!root.requiresGrad) throw new Error('backward(): this tensor does not require grad (no input had requiresGrad)');
  if (!grad && root.size !== 1) {
    throw new Error(`backward(): a non-scalar output (shape ${fmtShape(root.shape)}) needs an explicit gradient`);
  }
  const seed = grad ?? onesLike(root);
  if (!shapesEqual(seed.shape, root.shape)) {
    throw new Error(`backward(): gradient shape ${fmtShape(seed.shape)} does not match output shape ${fmtShape(root.shape)}`);
  }
  const outer = walk;
  walk = { grads: new Map<Tensor, Tensor>([[root, seed]]), owned: new Set<Tensor>(), partial: new Map() };
  try {
    noGrad(() => run(root, walk!, opts));
  } finally {
    walk = outer;
  }
}

function run(root: Tensor, w: Walk, opts: { retainGraph?: boolean }): void {
  const { grads, owned } = w;
  const order = topoOrder(root);
  for (let n = order.length - 1; n >= 0; n--) {
    const t = order[n]!;
    const g = grads.get(t);
    if (!g) continue;
    grads.delete(t);
    settle(w, g);
    const mine = owned.delete(g);
    const node = t.node;
    if (!node) {
      // a leaf: accumulate into .grad, which this engine owns (a fresh copy the first time); a buffer that
      // counts as zero (zeroGrad()) is overwritten instead of cleared and added to
      const gb = t.gradBuffer();
      if (!gb) t.grad = mine ? g : cloneTensor(g);
      else if (gb.zero) {
        copyInto(gb.buf, g);
        t.markGradWritten();
      } else addInto(gb.buf, g);
      continue;
    }
    if (!node.backward) {
      throw new Error(`backward(): the graph through '${node.op}' was already freed; pass { retainGraph: true } to backward twice`);
    }
    const inputGrads = node.backward(node.stridedGrad ? g : contiguous(g));
    for (let i = 0; i < node.inputs.length; i++) {
      const x = node.inputs[i]!;
      const gx = inputGrads[i];
      if (!gx || !x.requiresGrad) continue;
      const prev = grads.get(x);
      if (gx instanceof Tensor) {
        if (!shapesEqual(gx.shape, x.shape)) {
          throw new Error(
            `internal: '${node.op}' produced a gradient of shape ${fmtShape(gx.shape)} for an input of shape ${fmtShape(x.shape)}`,
          );
        }
        if (!prev) {
          grads.set(x, gx);
          if (fresh.has(gx)) owned.add(gx);
        } else if (owned.has(prev)) {
          settle(w, prev);
          addInto(prev, gx);
        } else if (fresh.has(gx) && gx.isContiguous()) {
          addInto(gx, prev);
          grads.set(x, gx);
          owned.add(gx);
        } else {
          const sum = addOutOfPlace(prev, gx);
          owned.add(sum);
          grads.set(x, sum);
        }
      } else {
        const range: [number, number] = [gx.start, gx.start + gx.slice.shape[gx.axis]!];
        if (prev && owned.has(prev)) {
          const cover = w.partial.get(prev);
          if (cover && cover.axis === gx.axis && cover.ranges.every(([a, b]) => range[1] <= a || b <= range[0])) {
            putSlice(prev, gx, 'copy');
            cover.ranges.push(range);
          } else {
            settle(w, prev);
            putSlice(prev, gx, 'accumulate');
          }
        } else {
          const acc = uninit(x.backend, x.shape);
          if (prev) {
            copyInto(acc, prev);
            putSlice(acc, gx, 'accumulate');
          } else {
            putSlice(acc, gx, 'copy');
            w.partial.set(acc, { axis: gx.axis, ranges: [range] });
          }
          owned.add(acc);
          grads.set(x, acc);
        }
      }
    }
    if (!opts.retainGraph) t.node = { op: node.op, inputs: [], backward: null };
  }
}

/** acc[..., start:start+len, ...] = slice (or += slice), along axis (acc is contiguous). */
function putSlice(acc: Tensor, g: SliceGrad, how: 'copy' | 'accumulate'): void {
  const dst = strided(acc);
  acc.backend[how](strided(g.slice), { ...dst, offset: dst.offset + g.start * acc.strides[g.axis]! }, g.slice.shape);
}

const ZERO = new Float32Array(1);

/** Zero what no slice wrote of a slice-built sum (see Walk), making it an ordinary gradient. */
function settle(w: Walk, acc: Tensor): void {
  const cover = w.partial.get(acc);
  if (!cover) return;
  w.partial.delete(acc);
  const { axis } = cover;
  const size = acc.shape[axis]!;
  const dst = strided(acc);
  let pos = 0;
  for (const [a, b] of [...cover.ranges.sort((p, q) => p[0] - q[0]), [size, size] as [number, number]]) {
    if (a > pos) {
      const shape = [...acc.shape];
      shape[axis] = a - pos;
      const zeros = { buf: ZERO, offset: 0, strides: shape.map(() => 0) };
      acc.backend.copy(zeros, { ...dst, offset: dst.offset + pos * acc.strides[axis]! }, shape);
    }
    pos = Math.max(pos, b);
  }
}

/** a + b into a fresh contiguous tensor, in one pass. */
function addOutOfPlace(a: Tensor, b: Tensor): Tensor {
  const out = uninit(a.backend, a.shape);
  a.backend.binary('add', strided(a), strided(b), out.f32(), a.shape);
  return out;
}
