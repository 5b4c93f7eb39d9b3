// Multi-head Latent Attention (spec §2, §4) and the MHA/GQA/MQA baselines used for the paper's comparison.
import {
  attention,
  concat,
  expand,
  linear,
  matmul,
  narrow,
  permute,
  reshape,
  rmsnorm,
  rope,
  ropeTail,
  transpose,
  unsqueeze,
  writeRows,
  readRows,
  pagedAttention,
} from '../autograd/ops/index.js';
import type { Tensor } from '../tensor/tensor.js';
import { kvHeads, type DeepseekV2Config } from './config.js';
import type { KVCache, PagedBatch } from './cache.js';
import type { Params } from './params.js';

/** q_a_layernorm / kv_a_layernorm use eps 1e-6 regardless of rms_norm_eps, as the reference (spec §10.6). */
const LATENT_NORM_EPS = 1e-6;

export interface AttentionContext {
  layer: number;
  /** RoPE tables for the positions of the T new tokens: [T, d_rope/2] or [B, T, d_rope/2]. */
  cos: Tensor;
  sin: Tensor;
  scale: number;
  cache?: KVCache;
  /** Decode through the latent cache with W^UK / W^UV absorbed (spec §4.2) instead of decompressing K and V. */
  absorb?: boolean;
  /** Additive attention mask [B or 1, T, S] (padding); the causal mask is always applied. */
  mask?: Tensor;
  /** The engine's flat batch over its paged cache (B = 1); replaces `cache`. */
  paged?: PagedBatch;
}

/** x [B,T,d] → [B,T,d] */
export function selfAttention(c: DeepseekV2Config, w: Params, prefix: string, x: Tensor, ctx: AttentionContext): Tensor {
  return c.attention_type === 'mla' ? mla(c, w, prefix, x, ctx) : baselineAttention(c, w, prefix, x, ctx);
}

/** [B, H, T, D] → [B, T, H·D] */
function mergeHeads(o: Tensor): Tensor {
  const [B, H, T, D] = o.shape as [number, number, number, number];
  return reshape(permute(o, [0, 2, 1, 3]), [B, T, H * D]);
}

function mla(c: DeepseekV2Config, w: Params, p: string, x: Tensor, ctx: AttentionContext): Tensor {
  const [B, T] = x.shape as [number, number, number];
  const H = c.num_attention_heads;
  const [dn, dr, dv, dc] = [c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim, c.kv_lora_rank];

  // §2.1 query path: q [B,T,H,dn+dr], per head [nope | rope]
  const q2 =
    c.q_lora_rank === null
      ? linear(x, w.get(`${p}.q_proj.weight`))
      : linear(
          rmsnorm(linear(x, w.get(`${p}.q_a_proj.weight`)), w.get(`${p}.q_a_layernorm.weight`), LATENT_NORM_EPS),
          w.get(`${p}.q_b_proj.weight`),
        );
  // [q_nope | q_rope] per head with the rope part rotated (§2.3), in one pass: this is the attention's query
  const q = ropeTail(reshape(q2, [B, T, H, dn + dr]), dr, ctx.cos, ctx.sin); // [B,T,H,dn+dr]
  const qNope = narrow(q, 3, 0, dn); // [B,T,H,dn]
  const qPe = narrow(q, 3, dn, dr); // [B,T,H,dr]

  // §2.2 joint KV compression: [c_raw | kR_raw]; the latent is normalised, the rope key rotated (one per token)
  const kv = linear(x, w.get(`${p}.kv_a_proj_with_mqa.weight`)); // [B,T,dc+dr]
  const ckv = rmsnorm(narrow(kv, 2, 0, dc), w.get(`${p}.kv_a_layernorm.weight`), LATENT_NORM_EPS); // [B,T,dc]
  const kPe = rope(reshape(narrow(kv, 2, dc, dr), [B, T, 1, dr]), ctx.cos, ctx.sin); // [B,T,1,dr]
  const kvB = w.get(`${p}.kv_b_proj.weight`); // [H·(dn+dv), dc], per head: dn key rows then dv value rows (§10.8)
  if (ctx.paged) {
    const o = pagedMla(c, kvB, q, concat([ckv, reshape(kPe, [B, T, dr])], 2), ctx.paged, ctx);
    return linear(o, w.get(`${p}.o_proj.weight`));
  }
  // the cache holds [latent | rope key] per token (§4.1); without a cache (training) the two parts are used as they
  // are: joining them only to split them again cost four copies a layer, forward and backward
  let all: Tensor | null = null; // [B,S,dc+dr]
  let latent = ckv; // [B,S,dc]
  let kPeAll = reshape(kPe, [B, T, dr]); // [B,S,dr]
  if (ctx.cache || ctx.absorb) {
    all = concat([ckv, kPeAll], 2);
    if (ctx.cache) all = ctx.cache.append(ctx.layer, all);
    latent = narrow(all, 2, 0, dc);
    kPeAll = narrow(all, 2, dc, dr);
  }
  if (ctx.absorb) {
    // §4.2: attention directly over the latents — MQA with one shared 576-wide key and a 512-wide value
    const W = reshape(kvB, [H, dn + dv, dc]);
    const wUK = narrow(W, 1, 0, dn); // [H,dn,dc]
    const wUV = narrow(W, 1, dn, dv); // [H,dv,dc]
    const qHeads = reshape(permute(qNope, [2, 0, 1, 3]), [H, B * T, dn]); // [H,B·T,dn]
    const qAbs = permute(reshape(matmul(qHeads, wUK), [H, B, T, dc]), [1, 0, 2, 3]); // [B,H,T,dc]
    const Q = concat([qAbs, permute(qPe, [0, 2, 1, 3])], 3); // [B,H,T,dc+dr]
    const K = unsqueeze(all!, 1); // [B,1,S,dc+dr]
    const V = unsqueeze(latent, 1); // [B,1,S,dc]
    const lat = attention(Q, K, V, { scale: ctx.scale, causal: true, mask: ctx.mask }); // [B,H,T,dc]
    const latHeads = reshape(permute(lat, [1, 0, 2, 3]), [H, B * T, dc]); // [H,B·T,dc]
    const o = permute(reshape(matmul(latHeads, transpose(wUV)), [H, B, T, dv]), [1, 0, 2, 3]); // [B,H,T,dv]
    return linear(mergeHeads(o), w.get(`${p}.o_proj.weight`));
  }

  return linear(naiveMla(c, kvB, q, latent, kPeAll, ctx), w.get(`${p}.o_proj.weight`));
}

/** The naive path (training, prefill): decompress per-head keys and values from the latents [B,S,dc]. → [B,T,H·dv] */
function naiveMla(c: DeepseekV2Config, kvB: Tensor, q: Tensor, latent: Tensor, kPeAll: Tensor, ctx: AttentionContext): Tensor {
  const [B, S] = latent.shape as [number, number, number];
  const H = c.num_attention_heads;
  const [dn, dr, dv] = [c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim];
  const kvUp = reshape(linear(latent, kvB), [B, S, H, dn + dv]);
  const kNope = narrow(kvUp, 3, 0, dn); // [B,S,H,dn]
  const v = narrow(kvUp, 3, dn, dv); // [B,S,H,dv]
  const kPeHeads = expand(reshape(kPeAll, [B, S, 1, dr]), [B, S, H, dr]); // one rope key shared by all heads
  const Q = permute(q, [0, 2, 1, 3]); // [B,H,T,dn+dr]
  const K = permute(concat([kNope, kPeHeads], 3), [0, 2, 1, 3]); // [B,H,S,dn+dr]
  const V = permute(v, [0, 2, 1, 3]); // [B,H,S,dv]
  return mergeHeads(attention(Q, K, V, { scale: ctx.scale, causal: true, mask: ctx.mask })); // [B,T,H·dv]
}

/**
 * MLA over the engine's paged cache: the step's entries [1,N,dc+dr] go into their slots; the decode tokens attend
 * over the latents in place with W^UK / W^UV absorbed (§4.2: MQA with one (dc+dr)-wide key and a dc-wide value per
 * token), the prefill chunks take the naive path over their sequence's entries read from the cache. → [1,N,H·dv]
 */
function pagedMla(c: DeepseekV2Config, kvB: Tensor, q: Tensor, entries: Tensor, pb: PagedBatch, ctx: AttentionContext): Tensor {
  const N = q.shape[1]!;
  const H = c.num_attention_heads;
  const [dn, dr, dv, dc] = [c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim, c.kv_lora_rank];
  const cache = pb.layers[ctx.layer]!;
  writeRows(cache, pb.slots, entries);
  const parts: Tensor[] = [];
  const Nd = pb.decode.count;
  if (Nd > 0) {
    const W = reshape(kvB, [H, dn + dv, dc]);
    const qd = reshape(narrow(q, 1, 0, Nd), [Nd, H, dn + dr]);
    const qHeads = permute(narrow(qd, 2, 0, dn), [1, 0, 2]); // [H,Nd,dn]
    const qAbs = permute(matmul(qHeads, narrow(W, 1, 0, dn)), [1, 0, 2]); // [Nd,H,dc]
    const Q = concat([qAbs, narrow(qd, 2, dn, dr)], 2); // [Nd,H,dc+dr]
    const lat = pagedAttention(Q, cache, {
      scale: ctx.scale,
      blockSize: pb.blockSize,
      blockTables: pb.decode.blockTables,
      contextLens: pb.decode.contextLens,
      Hkv: 1,
      Dv: dc,
      kOffset: 0,
      kHeadStride: 0,
      vOffset: 0,
      vHeadStride: 0,
    }); // [Nd,H,dc]
    const o = matmul(permute(lat, [1, 0, 2]), transpose(narrow(W, 1, dn, dv))); // [H,Nd,dv]
    parts.push(reshape(permute(o, [1, 0, 2]), [1, Nd, H * dv]));
  }
  for (const chunk of pb.prefill) {
    const all = reshape(readRows(cache, chunk.slots), [1, chunk.slots.size, dc + dr]);
    const qc = narrow(q, 1, chunk.start, chunk.len);
    parts.push(naiveMla(c, kvB, qc, narrow(all, 2, 0, dc), narrow(all, 2, dc, dr), ctx));
  }
  const out = parts.length === 1 ? parts[0]! : concat(parts, 1);
  if (out.shape[1] !== N) throw new Error(`paged attention: the batch plan covers ${out.shape[1]} of ${N} tokens`);
  return out;
}

/** Plain multi-head attention with Hkv KV heads (MHA: H, GQA: num_key_value_heads, MQA: 1), RoPE on the last d_rope dims. */
function baselineAttention(c: DeepseekV2Config, w: Params, p: string, x: Tensor, ctx: AttentionContext): Tensor {
  const [B, T] = x.shape as [number, number, number];
  const H = c.num_attention_heads;
  const Hkv = kvHeads(c);
  const [dn, dr, dv] = [c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim];
  const withRope = (t: Tensor, heads: number): Tensor => {
    const r = reshape(t, [B, T, heads, dn + dr]);
    return concat([narrow(r, 3, 0, dn), rope(narrow(r, 3, dn, dr), ctx.cos, ctx.sin)], 3);
  };
  const q = withRope(linear(x, w.get(`${p}.q_proj.weight`)), H); // [B,T,H,dqk]
  const k = withRope(linear(x, w.get(`${p}.k_proj.weight`)), Hkv); // [B,T,Hkv,dqk]
  const v = linear(x, w.get(`${p}.v_proj.weight`)); // [B,T,Hkv·dv]
  const entries = concat([reshape(k, [B, T, Hkv * (dn + dr)]), v], 2);
  const over = (all: Tensor, qq: Tensor): Tensor => {
    const S = all.shape[1]!;
    const K = permute(reshape(narrow(all, 2, 0, Hkv * (dn + dr)), [all.shape[0]!, S, Hkv, dn + dr]), [0, 2, 1, 3]);
    const V = permute(reshape(narrow(all, 2, Hkv * (dn + dr), Hkv * dv), [all.shape[0]!, S, Hkv, dv]), [0, 2, 1, 3]);
    return mergeHeads(attention(permute(qq, [0, 2, 1, 3]), K, V, { scale: ctx.scale, causal: true, mask: ctx.mask }));
  };
  if (ctx.paged) {
    // the same paged cache and plan as MLA, with Hkv per-head keys and values per row
    const pb = ctx.paged;
    const cache = pb.layers[ctx.layer]!;
    writeRows(cache, pb.slots, entries);
    const parts: Tensor[] = [];
    const Nd = pb.decode.count;
    if (Nd > 0) {
      const o = pagedAttention(reshape(narrow(q, 1, 0, Nd), [Nd, H, dn + dr]), cache, {
        scale: ctx.scale,
        blockSize: pb.blockSize,
        blockTables: pb.decode.blockTables,
        contextLens: pb.decode.contextLens,
        Hkv,
        Dv: dv,
        kOffset: 0,
        kHeadStride: dn + dr,
        vOffset: Hkv * (dn + dr),
        vHeadStride: dv,
      }); // [Nd,H,dv]
      parts.push(reshape(o, [1, Nd, H * dv]));
    }
    for (const chunk of pb.prefill)
      parts.push(over(reshape(readRows(cache, chunk.slots), [1, chunk.slots.size, cacheWidth(c)]), narrow(q, 1, chunk.start, chunk.len)));
    return linear(parts.length === 1 ? parts[0]! : concat(parts, 1), w.get(`${p}.o_proj.weight`));
  }
  const all = ctx.cache ? ctx.cache.append(ctx.layer, entries) : entries; // [B,S,Hkv·(dqk+dv)]
  return linear(over(all, q), w.get(`${p}.o_proj.weight`));
}

/** Width of one cached entry per token per layer. */
export function cacheWidth(c: DeepseekV2Config): number {
  if (c.attention_type === 'mla') return c.kv_lora_rank + c.qk_rope_head_dim;
  return kvHeads(c) * (c.qk_nope_head_dim + c.qk_rope_head_dim + c.v_head_dim);
}
