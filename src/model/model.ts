// DeepseekV2ForCausalLM (spec §1): embedding → pre-norm decoder layers (MLA, then a dense MLP or DeepSeekMoE)
// → final RMSNorm → untied lm_head.
import { add, embedding, indexSelect, linear, reshape, rmsnorm } from '../autograd/ops/index.js';
import type { Backend } from '../backend/backend.js';
import { defaultBackend } from '../backend/registry.js';
import { Rng } from '../tensor/random.js';
import { rand, randn, ones, type Tensor } from '../tensor/tensor.js';
import { fmtShape } from '../tensor/shape.js';
import { selfAttention, cacheWidth } from './attention.js';
import { KVCache, type PagedBatch } from './cache.js';
import { isMoeLayer, type DeepseekV2Config } from './config.js';
import { mlp } from './mlp.js';
import { moe, type RouterOutput, type TokenDropping } from './moe.js';
import { Params } from './params.js';
import { ropeTables, softmaxScale } from './rope.js';
import { expectedTensors } from './weights.js';

export interface ForwardOptions {
  /** Read and extend this cache; positions continue from cache.length. */
  cache?: KVCache;
  /** With a cache, attend over the latents with absorbed weights (spec §4.2). */
  absorb?: boolean;
  /** Keep the residual stream after each layer. */
  outputHiddenStates?: boolean;
  /** Per-row positions [B][T] (e.g. left padding); default cache.length + 0 … T−1 for every row. */
  positions?: number[][];
  /** Additive attention mask [B or 1, T, S]. */
  mask?: Tensor;
  /** Device-level token dropping in the MoE layers (training only, spec §6.3). */
  drop?: TokenDropping;
  /** The inference engine's flat batch [1, N] over its paged cache (needs `positions`); replaces `cache`. */
  paged?: PagedBatch;
  /** Record each MoE layer's shared and routed output norms per token in its RouterOutput (`parts`), for analysis. */
  moeParts?: boolean;
  /** Compute logits only for these token positions of a [1, N] batch (int32 [R]): logits are then [1, R, vocab]. */
  logitRows?: Tensor;
}

export interface ForwardOutput {
  /** [B, T, vocab] */
  logits: Tensor;
  /** [B, T, hidden] after each layer, when requested. */
  hiddenStates?: Tensor[];
  /** One entry per MoE layer, in layer order. */
  router: RouterOutput[];
}

export class DeepseekV2ForCausalLM {
  constructor(
    readonly config: DeepseekV2Config,
    readonly params: Params,
    readonly backend: Backend,
  ) {}

  /** A model with freshly initialised weights: normal(0, std) matrices, unit RMSNorm gains (spec §6.4). */
  static init(config: DeepseekV2Config, opts: { seed?: number; std?: number; backend?: Backend } = {}): DeepseekV2ForCausalLM {
    const backend = opts.backend ?? defaultBackend();
    const rng = new Rng(opts.seed ?? 0);
    const std = opts.std ?? config.initializer_range;
    const params = new Params();
    for (const t of expectedTensors(config)) {
      const isNorm = t.shape.length === 1;
      let w: Tensor;
      if (isNorm) w = ones(t.shape, { backend });
      else if (t.name.endsWith('.mlp.gate.weight')) {
        // DeepSeek's MoEGate.reset_parameters: kaiming_uniform_(a=√5) = U(−1/√in, 1/√in). It is not an nn.Linear,
        // so HF's _init_weights leaves it there: a wider router init than the std of the other matrices.
        const bound = 1 / Math.sqrt(t.shape[1]!);
        w = rand(t.shape, { backend, rng, low: -bound, high: bound });
      } else w = randn(t.shape, { backend, rng, std });
      params.set(t.name, w.requireGrad());
    }
    return new DeepseekV2ForCausalLM(config, params, backend);
  }

  parameters(): Tensor[] {
    return this.params.list();
  }

  /** A KV cache for `batch` sequences of up to `capacity` tokens. */
  newCache(batch: number, capacity: number): KVCache {
    return new KVCache(this.backend, this.config.num_hidden_layers, batch, capacity, cacheWidth(this.config));
  }

  /** ids [B, T] (int32) → logits [B, T, vocab], router outputs, optional hidden states. */
  forward(ids: Tensor, opts: ForwardOptions = {}): ForwardOutput {
    const c = this.config;
    if (ids.dtype !== 'i32' || ids.ndim !== 2)
      throw new Error(`forward: input ids must be an int32 [batch, seq] tensor, got ${ids.dtype} ${fmtShape(ids.shape)}`);
    const [B, T] = ids.shape as [number, number];
    const past = opts.cache?.length ?? 0;
    if (opts.cache && opts.cache.batch !== B) throw new Error(`forward: cache holds ${opts.cache.batch} sequences, input has ${B}`);
    if ((opts.paged || opts.logitRows) && B !== 1)
      throw new Error(`forward: a paged batch or logit rows need a [1, N] input, got [${B}, ${T}]`);
    if (opts.paged && !opts.positions) throw new Error('forward: a paged batch needs the positions of its tokens');
    const positions = opts.positions ?? [Array.from({ length: T }, (_, t) => past + t)];
    const { cos, sin } = ropeTables(c, opts.positions ? positions : positions[0]!, this.backend);
    const ctxBase = { cos, sin, scale: softmaxScale(c), cache: opts.cache, absorb: opts.absorb, mask: opts.mask, paged: opts.paged };
    const w = this.params;
    let x = embedding(w.get('model.embed_tokens.weight'), ids); // [B,T,d]
    const hidden: Tensor[] = [];
    const router: RouterOutput[] = [];
    for (let i = 0; i < c.num_hidden_layers; i++) {
      const p = `model.layers.${i}`;
      const a = rmsnorm(x, w.get(`${p}.input_layernorm.weight`), c.rms_norm_eps);
      x = add(x, selfAttention(c, w, `${p}.self_attn`, a, { ...ctxBase, layer: i }));
      const b = rmsnorm(x, w.get(`${p}.post_attention_layernorm.weight`), c.rms_norm_eps);
      if (isMoeLayer(c, i)) {
        const r = moe(c, w, `${p}.mlp`, i, b, opts.drop, opts.moeParts);
        router.push(r.router);
        x = add(x, r.out);
      } else {
        x = add(x, mlp(w, `${p}.mlp`, b));
      }
      if (opts.outputHiddenStates) hidden.push(x);
    }
    opts.cache?.advance(T);
    if (opts.logitRows) x = reshape(indexSelect(reshape(x, [T, c.hidden_size]), opts.logitRows), [1, opts.logitRows.size, c.hidden_size]);
    const logits = linear(rmsnorm(x, w.get('model.norm.weight'), c.rms_norm_eps), w.get('lm_head.weight'));
    return { logits, router, ...(opts.outputHiddenStates ? { hiddenStates: hidden } : {}) };
  }
}
