// Fused scaled-dot-product attention with d_qk ≠ d_v, grouped KV heads, an explicit softmax scale, causal
// masking relative to the end of the key sequence (so a KV cache works), an optional additive mask, and an fp32
// softmax. The forward saves only the row log-sum-exp; the backward recomputes probabilities row by row.
import type { AttentionParams, F32 } from '../../backend/backend.js';
import { uninit, type Tensor } from '../../tensor/tensor.js';
import { fmtShape } from '../../tensor/shape.js';
import { record } from '../graph.js';
import { contiguous } from './views.js';

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
  const q = contiguous(qIn);
  const k = contiguous(kIn);
  const v = contiguous(vIn);
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
    q: q.f32(),
    k: k.f32(),
    v: v.f32(),
    mask: mask ? (mask.f32() as F32) : null,
    maskBatch,
  };
  const out = uninit(q.backend, [B, H, T, Dv]);
  const lse = uninit(q.backend, [B, H, T]);
  q.backend.attention(p, out.f32(), lse.f32());
  return record(out, 'attention', [q, k, v], (gy) => {
    const dq = uninit(q.backend, q.shape);
    const dk = uninit(q.backend, k.shape);
    const dv = uninit(q.backend, v.shape);
    q.backend.attentionBackward(p, out.f32(), lse.f32(), gy.f32(), dq.f32(), dk.f32(), dv.f32());
    return [dq, dk, dv];
  });
}
