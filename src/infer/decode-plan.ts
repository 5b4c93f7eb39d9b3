// The engine's decode step without the op layer. When every token of a step is a decode token of an MLA model,
// the forward is a fixed sequence of backend kernel calls over buffers allocated once (and grown with the batch),
// with the residual adds folded into the GEMMs' beta: what a CUDA graph or a ggml graph is to eager PyTorch. The
// op layer costs ~5–8 µs per op in tensors, views and graph records, and a decode step of `small` ran ~230 ops, so
// that bookkeeping, not the weights' memory traffic, bounded batch-1 decode.
//
// The math is model/attention.ts's absorbed path (spec §4.2) and model/moe.ts, term for term; test/decode-plan.test.ts
// holds the two to each other (logits within 1e-4, identical routing and greedy tokens). Anything else (prefill
// chunks, the MHA/GQA/MQA baselines) takes the model's own forward.
import type { Backend, F32, GemmParams, I32, QGemmParams } from '../backend/backend.js';
import type { QuantType } from '../quant/formats.js';
import type { Tensor } from '../tensor/tensor.js';
import { isMoeLayer, type DeepseekV2Config } from '../model/config.js';
import type { DeepseekV2ForCausalLM } from '../model/model.js';
import { ropeAmplitude, ropeInvFreq, softmaxScale } from '../model/rope.js';

/** q_a_layernorm / kv_a_layernorm use eps 1e-6 regardless of rms_norm_eps, as the reference (spec §10.6). */
const LATENT_NORM_EPS = 1e-6;

/** A projection's weight: float32, or kept in a stored type (bf16, f16, quantized) and multiplied from its bytes. */
type Weight = F32 | { type: QuantType; bytes: Uint8Array };
/** One product of a step: a float32 GEMM or a stored-weight product. */
type Product = GemmParams | QGemmParams;

function weightOf(t: Tensor): Weight {
  return t.isStored() ? { type: t.dtype as QuantType, bytes: t.bytes() } : t.f32();
}

interface LayerWeights {
  inNorm: F32;
  postNorm: F32;
  qProj: Weight | null;
  qA: Weight | null;
  qANorm: F32 | null;
  qB: Weight | null;
  kvA: Weight;
  kvANorm: F32;
  /** Float32 always: the absorbed decode reads it per head, transposed (stored-weight models keep it float32). */
  kvB: F32;
  oProj: Weight;
  /** Dense MLP or shared experts: gate, up, down. */
  mlp: [Weight, Weight, Weight] | null;
  moe: { gate: Weight; experts: [Weight, Weight, Weight][] } | null;
}

/** The routing of one MoE layer for the step's tokens: [N, K] experts and gate weights. */
export interface PlanRouting {
  layer: number;
  indices: Int32Array;
  weights: Float32Array;
}

function ensure(buf: F32, n: number): F32 {
  return buf.length >= n ? buf : new Float32Array(Math.max(n, 2 * buf.length));
}

export class DecodePlan {
  private readonly c: DeepseekV2Config;
  private readonly b: Backend;
  private readonly L: LayerWeights[];
  private readonly embed: Weight;
  private readonly norm: F32;
  private readonly lmHead: Weight;
  private readonly invFreq: Float32Array;
  private readonly amp: number;
  private readonly scale: number;
  private readonly buf: Record<string, F32> = {};

  /** Whether the plan covers this model (MLA attention; otherwise the model's forward runs every step). */
  static supports(c: DeepseekV2Config): boolean {
    return c.attention_type === 'mla';
  }

  constructor(
    model: DeepseekV2ForCausalLM,
    private readonly cache: readonly F32[],
    private readonly blockSize: number,
  ) {
    const c = (this.c = model.config);
    this.b = model.backend;
    const w = (name: string): F32 => model.params.get(name).f32();
    const pw = (name: string): Weight => weightOf(model.params.get(name));
    this.embed = pw('model.embed_tokens.weight');
    this.norm = w('model.norm.weight');
    this.lmHead = pw('lm_head.weight');
    this.L = Array.from({ length: c.num_hidden_layers }, (_, i) => {
      const p = `model.layers.${i}`;
      const a = `${p}.self_attn`;
      const moe = isMoeLayer(c, i);
      const mlpOf = (q: string): [Weight, Weight, Weight] => [
        pw(`${q}.gate_proj.weight`),
        pw(`${q}.up_proj.weight`),
        pw(`${q}.down_proj.weight`),
      ];
      return {
        inNorm: w(`${p}.input_layernorm.weight`),
        postNorm: w(`${p}.post_attention_layernorm.weight`),
        qProj: c.q_lora_rank === null ? pw(`${a}.q_proj.weight`) : null,
        qA: c.q_lora_rank === null ? null : pw(`${a}.q_a_proj.weight`),
        qANorm: c.q_lora_rank === null ? null : w(`${a}.q_a_layernorm.weight`),
        qB: c.q_lora_rank === null ? null : pw(`${a}.q_b_proj.weight`),
        kvA: pw(`${a}.kv_a_proj_with_mqa.weight`),
        kvANorm: w(`${a}.kv_a_layernorm.weight`),
        kvB: w(`${a}.kv_b_proj.weight`),
        oProj: pw(`${a}.o_proj.weight`),
        mlp: !moe ? mlpOf(`${p}.mlp`) : c.n_shared_experts ? mlpOf(`${p}.mlp.shared_experts`) : null,
        moe: moe
          ? {
              gate: pw(`${p}.mlp.gate.weight`),
              experts: Array.from({ length: c.n_routed_experts! }, (_, e) => mlpOf(`${p}.mlp.experts.${e}`)),
            }
          : null,
      };
    });
    this.invFreq = Float32Array.from(ropeInvFreq(c));
    this.amp = ropeAmplitude(c);
    this.scale = softmaxScale(c);
  }

  /** A step buffer of at least n floats (grown when the batch grows; contents unspecified). */
  private get(name: string, n: number): F32 {
    const have = this.buf[name];
    const b = have ? ensure(have, n) : new Float32Array(n);
    this.buf[name] = b;
    return b;
  }

  /** y [rows, out] (+)= x [rows, in] · Wᵀ, W [out, in] row-major; beta 1 adds into y (a residual) at yOff. */
  private linear(x: F32, xOff: number, rows: number, W: Weight, out: number, inp: number, y: F32, beta: 0 | 1 = 0, yOff = 0): Product {
    if (!(W instanceof Float32Array)) {
      return { type: W.type, M: rows, N: out, K: inp, x, xOffset: xOff, w: W.bytes, y, yOffset: yOff, beta };
    }
    return {
      batch: 1,
      M: rows,
      N: out,
      K: inp,
      a: x,
      aOffset: xOff,
      aBatchStride: 0,
      aRowStride: inp,
      aColStride: 1,
      b: W,
      bOffset: 0,
      bBatchStride: 0,
      bRowStride: 1,
      bColStride: inp,
      c: y,
      cOffset: yOff,
      cBatchStride: 0,
      alpha: 1,
      beta,
    };
  }

  /** Run products (independent, outputs apart): the float32 ones in one gemmMany, the stored ones in one qgemmMany. */
  private mm(...ps: Product[]): void {
    const f = ps.filter((p): p is GemmParams => !('type' in p));
    const q = ps.filter((p): p is QGemmParams => 'type' in p);
    if (f.length === 1) this.b.gemm(f[0]!);
    else if (f.length) this.b.gemmMany(f);
    if (q.length) this.b.qgemmMany(q);
  }

  /**
   * One decode step for N tokens (one per sequence): ids, positions, the slot each token's cache entry goes to,
   * block tables [N, maxBlocks] and context lengths (own token included). Returns logits [N, V] (a view of a plan
   * buffer, valid until the next run) and, when asked, each MoE layer's routing.
   */
  run(
    ids: I32,
    positions: readonly number[],
    slots: I32,
    tables: I32,
    maxBlocks: number,
    contextLens: I32,
    routing: boolean,
  ): { logits: F32; routing: PlanRouting[] | null } {
    const c = this.c;
    const b = this.b;
    const N = ids.length;
    const d = c.hidden_size;
    const H = c.num_attention_heads;
    const [dn, dr, dv, dc] = [c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim, c.kv_lora_rank];
    const dq = dn + dr;
    const W = dc + dr; // a cache row: [latent | rope key]
    const V = c.vocab_size;
    const eps = c.rms_norm_eps;
    const x = this.get('x', N * d);
    const a = this.get('a', N * d);
    const rstd = this.get('rstd', N);
    if (this.embed instanceof Float32Array)
      b.gatherRows(this.embed, ids, x, N, V, d); // [N, d]
    else b.dequantRows(this.embed.type, this.embed.bytes, ids, x, N, V, d);
    // RoPE tables for the positions: float32 angle = pos × inv_freq (as model/rope.ts)
    const half = dr / 2;
    const cos = this.get('cos', N * half);
    const sin = this.get('sin', N * half);
    for (let t = 0; t < N; t++)
      for (let k = 0; k < half; k++) {
        const angle = Math.fround(positions[t]! * this.invFreq[k]!);
        cos[t * half + k] = this.amp * Math.cos(angle);
        sin[t * half + k] = this.amp * Math.sin(angle);
      }
    const q = this.get('q', N * H * dq);
    const qr = this.get('qr', N * H * dq);
    const kv = this.get('kv', N * W);
    const entry = this.get('entry', N * W);
    const lat0 = this.get('lat0', N * dc);
    const latN = this.get('latN', N * dc);
    const o = this.get('o', N * H * dv);
    const routes: PlanRouting[] = [];
    const numSlots = this.cache[0]!.length / W;
    for (let i = 0; i < c.num_hidden_layers; i++) {
      const Lw = this.L[i]!;
      b.rmsnorm(x, Lw.inNorm, a, rstd, N, d, eps);
      // §2.1 query [N, H, dn+dr]
      if (Lw.qProj) this.mm(this.linear(a, 0, N, Lw.qProj, H * dq, d, q));
      else {
        const r = c.q_lora_rank!;
        const qa = this.get('qa', N * r);
        const qan = this.get('qan', N * r);
        this.mm(this.linear(a, 0, N, Lw.qA!, r, d, qa));
        b.rmsnorm(qa, Lw.qANorm!, qan, rstd, N, r, LATENT_NORM_EPS);
        this.mm(this.linear(qan, 0, N, Lw.qB!, H * dq, r, q));
      }
      b.rope(q, cos, sin, qr, 1, N, H, dr, 1, false, dn); // [q_nope | rope(q_pe)] per head
      // §2.2 the cache entry [normalised latent | rotated rope key], written to the token's slot
      this.mm(this.linear(a, 0, N, Lw.kvA, W, d, kv));
      b.rope(kv, cos, sin, entry, 1, N, 1, dr, 1, false, dc); // copies the latent, rotates the key
      if (N === 1)
        b.rmsnorm(kv, Lw.kvANorm, entry, rstd, 1, dc, LATENT_NORM_EPS); // one row: its latent is contiguous
      else {
        b.copy({ buf: kv, offset: 0, strides: [W, 1] }, { buf: lat0, offset: 0, strides: [dc, 1] }, [N, dc]);
        b.rmsnorm(lat0, Lw.kvANorm, latN, rstd, N, dc, LATENT_NORM_EPS);
        b.copy({ buf: latN, offset: 0, strides: [dc, 1] }, { buf: entry, offset: 0, strides: [W, 1] }, [N, dc]);
      }
      const cacheL = this.cache[i]!;
      b.scatterRows(entry, slots, cacheL, N, numSlots, W);
      // §4.2 absorbed: the query into the latent space by W^UK_h, MQA over the cache rows in place, out by W^UV_h
      b.mlaDecode(
        {
          N, H, dn, dr, dc, dv, scale: this.scale, q: qr, kvB: Lw.kvB, cache: cacheL, blockSize: this.blockSize,
          numBlocks: numSlots / this.blockSize, blockTables: tables, maxBlocks, contextLens,
        }, // prettier-ignore
        o,
      ); // [N, H·dv]
      this.mm(this.linear(o, 0, N, Lw.oProj, d, H * dv, x, 1)); // x += o_proj(o)
      b.rmsnorm(x, Lw.postNorm, a, rstd, N, d, eps);
      if (Lw.moe) routes.push(this.moe(i, a, x, N));
      if (Lw.mlp) this.mlp(Lw.mlp, a, x, N, Lw.moe ? c.moe_intermediate_size! * c.n_shared_experts! : c.intermediate_size);
    }
    const xf = this.get('xf', N * d);
    b.rmsnorm(x, this.norm, xf, rstd, N, d, eps);
    const logits = this.get('logits', N * V);
    this.mm(this.linear(xf, 0, N, this.lmHead, V, d, logits));
    return { logits: logits.subarray(0, N * V), routing: routing ? routes : null };
  }

  /** x += down(silu(gate(a)) ⊙ up(a)), width I (a dense layer, or the shared experts side by side). */
  private mlp([g, u, dw]: [Weight, Weight, Weight], a: F32, x: F32, N: number, I: number): void {
    const d = this.c.hidden_size;
    const gate = this.get('mg', N * I);
    const up = this.get('mu', N * I);
    this.mm(this.linear(a, 0, N, g, I, d, gate), this.linear(a, 0, N, u, I, d, up));
    this.b.swiglu(gate, up, gate, N * I);
    this.mm(this.linear(gate, 0, N, dw, d, I, x, 1));
  }

  /** §5: x += Σ_k w_k · FFN_{e_k}(a) for the routed experts (the shared ones follow in mlp()). */
  private moe(layer: number, a: F32, x: F32, N: number): PlanRouting {
    const c = this.c;
    const b = this.b;
    const Lw = this.L[layer]!.moe!;
    const d = c.hidden_size;
    const Nr = c.n_routed_experts!;
    const K = c.num_experts_per_tok!;
    const I = c.moe_intermediate_size!;
    const logits = this.get('rl', N * Nr);
    const scores = this.get('rs', N * Nr);
    this.mm(this.linear(a, 0, N, Lw.gate, Nr, d, logits));
    b.softmax(logits, scores, N, Nr, false); // fp32 softmax over all routed experts (§5.4)
    const indices = new Int32Array(N * K);
    const weights = new Float32Array(N * K);
    const G = c.n_group;
    const per = Nr / G;
    for (let n = 0; n < N; n++) {
      const s = scores.subarray(n * Nr, (n + 1) * Nr);
      let masked: ArrayLike<number> = s;
      if (c.topk_method !== 'greedy') {
        // §5.5 group-limited: a group's score is its best expert's; the topk_group best groups stay, the rest → 0
        const gs = new Float64Array(G);
        for (let g = 0; g < G; g++) {
          let m = -Infinity;
          for (let e = g * per; e < (g + 1) * per; e++) if (s[e]! > m) m = s[e]!;
          gs[g] = m;
        }
        const keep = new Uint8Array(G);
        for (const g of topOf(gs, c.topk_group)) keep[g] = 1;
        const m = this.get('rm', Nr).subarray(0, Nr); // exactly Nr: topOf scans the whole array
        for (let e = 0; e < Nr; e++) m[e] = keep[Math.floor(e / per)] ? s[e]! : 0;
        masked = m;
      }
      const top = topOf(masked, K);
      let sum = 0;
      for (let k = 0; k < K; k++) sum = Math.fround(sum + s[top[k]!]!);
      for (let k = 0; k < K; k++) {
        indices[n * K + k] = top[k]!;
        let wgt = s[top[k]!]!;
        if (c.norm_topk_prob && K > 1) wgt = Math.fround(wgt / Math.fround(sum + 1e-20));
        weights[n * K + k] = Math.fround(wgt * c.routed_scaling_factor);
      }
    }
    // group the N·K assignments by expert (stable), gather their rows, run each expert once on its rows
    const counts = new Int32Array(Nr);
    for (let i = 0; i < N * K; i++) counts[indices[i]!]!++;
    const start = new Int32Array(Nr + 1);
    for (let e = 0; e < Nr; e++) start[e + 1] = start[e]! + counts[e]!;
    const M = N * K;
    const tok = new Int32Array(M);
    const wt = this.get('mw', M);
    const next = start.slice(0, Nr);
    for (let i = 0; i < M; i++) {
      const at = next[indices[i]!]!++;
      tok[at] = Math.floor(i / K);
      wt[at] = weights[i]!;
    }
    const xs = this.get('xs', M * d);
    b.gatherRows(a, tok, xs, M, N, d);
    const gate = this.get('eg', M * I);
    const up = this.get('eu', M * I);
    const ys = this.get('ey', M * d);
    const gu: Product[] = [];
    const down: Product[] = [];
    for (let e = 0; e < Nr; e++) {
      const m = counts[e]!;
      if (!m) continue;
      const s0 = start[e]!;
      const [g, u, dw] = Lw.experts[e]!;
      gu.push(this.linear(xs, s0 * d, m, g, I, d, gate, 0, s0 * I), this.linear(xs, s0 * d, m, u, I, d, up, 0, s0 * I));
      down.push(this.linear(gate, s0 * I, m, dw, d, I, ys, 0, s0 * d));
    }
    this.mm(...gu);
    b.swiglu(gate, up, gate, M * I);
    this.mm(...down);
    b.scatterAddRows(ys, tok, x, M, N, d, wt); // x += Σ w·y, each token's K rows in one pass
    return { layer, indices, weights };
  }
}

/**
 * Indices of the k largest of xs, descending, ties to the lower index (as the backend's topk): k selection passes,
 * each taking the first of the largest not yet taken (k ≤ 8 here, over ≤ 256 experts: cheaper than a sort).
 */
function topOf(xs: ArrayLike<number>, k: number): number[] {
  const taken = new Uint8Array(xs.length);
  const out: number[] = [];
  for (let r = 0; r < Math.min(k, xs.length); r++) {
    let best = -1;
    for (let i = 0; i < xs.length; i++) if (!taken[i] && (best < 0 || xs[i]! > xs[best]!)) best = i;
    taken[best] = 1;
    out.push(best);
  }
  return out;
}
