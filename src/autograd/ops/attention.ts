// Fused scaled-dot-product attention with d_qk ≠ d_v, grouped KV heads, an explicit softmax scale, causal
// masking relative to the end of the key sequence (so a KV cache works), an optional additive mask, and an fp32
// softmax. The forward saves only the row log-sum-exp; the backward recomputes probabilities row by row.
import { denseAttentionLayout, type AttentionParams, type Backend, type F32, type RowStrides } from '../../backend/backend.js';
import { uninit, type Tensor } from '../../tensor/tensor.js';
import { fmtShape } from '../../tensor/shape.js';
import { record } from '../graph.js';
import { contiguous, permute } from './views.js';

export interface AttentionOptions {
  /** Multiplies q·k before the softmax (spec §2.4: 192^-0.5·m² for DeepSeek-V2). */
  scale: number;
  /** Query row t (absolute position S−T+t) sees keys j ≤ S−T+t. */
  causal?: boolean;
  /** Additive mask [T, S] or [B, T, S] (−Infinity hides a key); carries no gradient. */
  mask?: Tensor;
}

/** q [B,H,T,Dk], k [B,Hkv,S,Dk], v [B,Hkv,S,Dv] → [B,H,T,Dv] */
export function attention(qIn: Tensor, kIn: Tensor, vIn: Tensor, opts: AttentionOptions): Tensor {
  if (qIn.ndim !== 4 || kIn.ndim !== 4 || vIn.ndim !== 4) {
    throw new Error(`attention: q, k, v must be 4-D, got ${fmtShape(qIn.shape)}, ${fmtShape(kIn.shape)}, ${fmtShape(vIn.shape)}`);
  }
  const [B, H, T, Dk] = qIn.shape as [number, number, number, number];
  const [Bk, Hkv, S, Dk2] = kIn.shape as [number, number, number, number];
  const [Bv, Hv, Sv, Dv] = vIn.shape as [number, number, number, number];
  if (Bk !== B || Bv !== B || Hv !== Hkv || Sv !== S || Dk2 !== Dk || H % Hkv !== 0) {
    throw new Error(`attention: shapes do not fit: q ${fmtShape(qIn.shape)}, k ${fmtShape(kIn.shape)}, v ${fmtShape(vIn.shape)}`);
  }
  if (opts.causal && T > S) throw new Error(`attention: causal with more queries (${T}) than keys (${S})`);
  let mask: Tensor | null = null;
  let maskBatch = 1;
  if (opts.mask) {
    const m = opts.mask;
    const ok =
      (m.ndim === 2 && m.shape[0] === T && m.shape[1] === S) ||
      (m.ndim === 3 && (m.shape[0] === 1 || m.shape[0] === B) && m.shape[1] === T && m.shape[2] === S);
    if (!ok) throw new Error(`attention: mask ${fmtShape(m.shape)} must be [T, S] or [B, T, S] = [${B}, ${T}, ${S}]`);
    mask = contiguous(m);
    maskBatch = m.ndim === 3 ? m.shape[0]! : 1;
  }
  // Operands are read in place in any layout whose rows are contiguous (the token-major [B,T,H,D] that the
  // projections produce, seen through a permute, or a narrow of a wider row): no permute copies.
  const q = rowStrides(qIn) ? qIn : contiguous(qIn);
  const k = rowStrides(kIn) ? kIn : contiguous(kIn);
  const v = rowStrides(vIn) ? vIn : contiguous(vIn);
  const b = q.backend;
  // the output (and each gradient) takes the layout of its query (input): token-major in, token-major out
  const out = allocRows(b, B, H, T, Dv, tokenMajor(q));
  const lse = uninit(b, [B, H, T]);
  const layout = denseAttentionLayout({ H, Hkv, T, S, Dk, Dv });
  const p: AttentionParams = {
    B,
    H,
    Hkv,
    T,
    S,
    Dk,
    Dv,
    scale: opts.scale,
    causal: opts.causal ?? false,
    q: rows(q),
    k: rows(k),
    v: rows(v),
    mask: mask ? (mask.f32() as F32) : null,
    maskBatch,
    layout: { ...layout, q: rowStrides(q)!, k: rowStrides(k)!, v: rowStrides(v)!, out: out.strides },
  };
  b.attention(p, out.buf, lse.f32());
  return record(
    out.t,
    'attention',
    [q, k, v],
    (gyIn) => {
      const gy = rowStrides(gyIn) ? gyIn : contiguous(gyIn);
      const dq = allocRows(b, B, H, T, Dk, tokenMajor(q));
      const dk = allocRows(b, B, Hkv, S, Dk, tokenMajor(k));
      const dv = allocRows(b, B, Hkv, S, Dv, tokenMajor(v));
      const lay = { ...p.layout!, dout: rowStrides(gy)!, dq: dq.strides, dk: dk.strides, dv: dv.strides };
      b.attentionBackward({ ...p, layout: lay }, out.buf, lse.f32(), rows(gy), dq.buf, dk.buf, dv.buf);
      return [dq.t, dk.t, dv.t];
    },
    { stridedGrad: true },
  );
}

/** (batch, head, row) strides of a 4-D operand whose rows are contiguous, else null. */
function rowStrides(t: Tensor): RowStrides | null {
  const [s0, s1, s2, s3] = t.strides as [number, number, number, number];
  if ((s3 !== 1 && t.shape[3]! > 1) || s0 < 0 || s1 < 0 || s2 < 0) return null;
  return [s0, s1, s2];
}

/** Rows ordered by token, then head ([B,T,H,D] in memory)? */
function tokenMajor(t: Tensor): boolean {
  return t.strides[1]! < t.strides[2]!;
}

/** An operand's storage from its first element on (the kernels index it through the layout's strides). */
function rows(t: Tensor): F32 {
  t.check('attention');
  return (t.data as F32).subarray(t.offset);
}

/** A fresh [B, heads, n, D] operand, stored head-major or token-major ([B, n, heads, D], seen through a permute). */
function allocRows(
  b: Backend,
  B: number,
  heads: number,
  n: number,
  D: number,
  byToken: boolean,
): { t: Tensor; buf: F32; strides: RowStrides } {
  if (!byToken) {
    const t = uninit(b, [B, heads, n, D]);
    return { t, buf: t.f32(), strides: [heads * n * D, n * D, D] };
  }
  const base = uninit(b, [B, n, heads, D]);
  return { t: permute(base, [0, 2, 1, 3]), buf: base.f32(), strides: [n * heads * D, D, heads * D] };
}
