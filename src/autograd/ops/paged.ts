// Inference-only ops over the engine's paged KV cache (no gradient: the cache is written in place). The cache of
// one layer is a [slots, W] tensor; which slots a sequence owns is the engine's business (src/infer), the ops only
// read and write the slots they are given.
import { uninit, type Tensor } from '../../tensor/tensor.js';
import { fmtShape } from '../../tensor/shape.js';
import { contiguous } from './views.js';

function noGradInput(t: Tensor, what: string): void {
  if (t.requiresGrad || t.node) throw new Error(`${what}: inference only (run under noGrad)`);
}

/** cache [slots, W][slots[m], :] ← rows [M, W] (or [..., W] flattened). */
export function writeRows(cache: Tensor, slots: Tensor, rowsIn: Tensor): void {
  noGradInput(rowsIn, 'write_rows');
  const rows = contiguous(rowsIn);
  const W = cache.shape[1]!;
  if (cache.ndim !== 2 || !cache.isContiguous() || rows.size !== slots.size * W)
    throw new Error(`write_rows: ${fmtShape(rows.shape)} rows do not fit ${slots.size} slots of a ${fmtShape(cache.shape)} cache`);
  cache.backend.scatterRows(rows.f32(), contiguous(slots).i32(), cache.f32(), slots.size, cache.shape[0]!, W);
}

/** Rows of the cache at `slots` [S] → [S, W] (a sequence's cached entries, for prefill on the naive path). */
export function readRows(cache: Tensor, slots: Tensor): Tensor {
  const W = cache.shape[1]!;
  const out = uninit(cache.backend, [slots.size, W]);
  cache.backend.gatherRows(cache.f32(), contiguous(slots).i32(), out.f32(), slots.size, cache.shape[0]!, W);
  return out;
}

export interface PagedAttentionOptions {
  scale: number;
  blockSize: number;
  /** [N, maxBlocks] int32 */
  blockTables: Tensor;
  /** [N] int32 */
  contextLens: Tensor;
  /** KV heads and where each one's key and value sit in a cache row. */
  Hkv: number;
  Dv: number;
  kOffset: number;
  kHeadStride: number;
  vOffset: number;
  vHeadStride: number;
}

/** q [N, H, Dk] over the paged cache [slots, W] → [N, H, Dv] (see Backend.pagedAttention). */
export function pagedAttention(qIn: Tensor, cache: Tensor, o: PagedAttentionOptions): Tensor {
  noGradInput(qIn, 'paged_attention');
  const q = contiguous(qIn);
  const [N, H, Dk] = q.shape as [number, number, number];
  const [slots, W] = cache.shape as [number, number];
  const maxBlocks = o.blockTables.shape[1]!;
  if (o.blockTables.shape[0] !== N || o.contextLens.size !== N || slots % o.blockSize !== 0)
    throw new Error(
      `paged_attention: q ${fmtShape(q.shape)}, block tables ${fmtShape(o.blockTables.shape)} and context lengths do not fit`,
    );
  const out = uninit(q.backend, [N, H, o.Dv]);
  q.backend.pagedAttention(
    {
      N,
      H,
      Hkv: o.Hkv,
      Dk,
      Dv: o.Dv,
      scale: o.scale,
      q: q.f32(),
      cache: cache.f32(),
      W,
      kOffset: o.kOffset,
      kHeadStride: o.kHeadStride,
      vOffset: o.vOffset,
      vHeadStride: o.vHeadStride,
      blockSize: o.blockSize,
      numBlocks: slots / o.blockSize,
      blockTables: contiguous(o.blockTables).i32(),
      maxBlocks,
      contextLens: contiguous(o.contextLens).i32(),
    },
    out.f32(),
  );
  return out;
}
