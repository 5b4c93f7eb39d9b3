// DeepSeek-V2 in llama.cpp's GGUF layout (architecture `deepseek2`, the MLA form its converter writes): metadata
// keys, tensor names, the routed experts stacked into one 3-D tensor per projection, and kv_b_proj split into
// attn_k_b (per head W^UK transposed: [H, kv_lora, nope]) and attn_v_b ([H, v, kv_lora]). Both directions: a plan
// that streams an HF checkpoint into a GGUF tensor by tensor, and the config, tokenizer and parameters of a GGUF.
// Not expressible in the standard keys, and kept in `dsv2.hf_config` (our own key, which llama.cpp ignores): the
// full config.json, so a file we write comes back with exactly its config; other files get the config derived from
// the standard keys (the comments of configFromGguf say how).
import type { Backend } from '../backend/backend.js';
import { configJsonText, parseConfig, isMoeLayer, type DeepseekV2Config } from '../model/config.js';
import { Params } from '../model/params.js';
import { DeepseekV2ForCausalLM } from '../model/model.js';
import { expectedTensors } from '../model/weights.js';
import { dequantize, quantize } from '../quant/formats.js';
import { isQuantizable, storageFor, headTypeFor } from '../quant/model.js';
import { storedWeight, wrap } from '../tensor/tensor.js';
import { GPT2_PATTERN, Tokenizer, type TokenizerJson } from '../tokenizer/tokenizer.js';
import {
  bool,
  f32,
  GgufError,
  GgufReader,
  i32s,
  str,
  strs,
  u32,
  tensorBytes,
  type GgmlType,
  type GgufTensorOut,
  type GgufValue,
} from './gguf-format.js';

const ARCH = 'deepseek2';

/** Per-layer HF suffix → GGUF suffix, for the tensors that map one to one. */
const LAYER_NAMES: readonly [string, string][] = [
  ['input_layernorm.weight', 'attn_norm.weight'],
  ['self_attn.q_proj.weight', 'attn_q.weight'],
  ['self_attn.q_a_proj.weight', 'attn_q_a.weight'],
  ['self_attn.q_a_layernorm.weight', 'attn_q_a_norm.weight'],
  ['self_attn.q_b_proj.weight', 'attn_q_b.weight'],
  ['self_attn.kv_a_proj_with_mqa.weight', 'attn_kv_a_mqa.weight'],
  ['self_attn.kv_a_layernorm.weight', 'attn_kv_a_norm.weight'],
  ['self_attn.o_proj.weight', 'attn_output.weight'],
  ['post_attention_layernorm.weight', 'ffn_norm.weight'],
  ['mlp.gate_proj.weight', 'ffn_gate.weight'],
  ['mlp.up_proj.weight', 'ffn_up.weight'],
  ['mlp.down_proj.weight', 'ffn_down.weight'],
  ['mlp.gate.weight', 'ffn_gate_inp.weight'],
  ['mlp.shared_experts.gate_proj.weight', 'ffn_gate_shexp.weight'],
  ['mlp.shared_experts.up_proj.weight', 'ffn_up_shexp.weight'],
  ['mlp.shared_experts.down_proj.weight', 'ffn_down_shexp.weight'],
];
const GLOBAL_NAMES: readonly [string, string][] = [
  ['model.embed_tokens.weight', 'token_embd.weight'],
  ['model.norm.weight', 'output_norm.weight'],
  ['lm_head.weight', 'output.weight'],
];

/** The GGUF name of an HF tensor that maps one to one (not an expert, not kv_b_proj), or null. */
export function ggufName(hf: string): string | null {
  for (const [h, g] of GLOBAL_NAMES) if (hf === h) return g;
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  if (!m) return null;
  for (const [h, g] of LAYER_NAMES) if (m[2] === h) return `blk.${m[1]}.${g}`;
  return null;
}

/** The type a tensor is stored in when the body is `type` (the policy of src/quant/model.ts; f32 where it keeps it). */
export function storageOf(hf: string, shape: readonly number[], type: GgmlType): GgmlType {
  if (type === 'f32' || !isQuantizable(hf, shape)) return 'f32';
  const head = hf === 'lm_head.weight' || hf === 'model.embed_tokens.weight';
  return storageFor(head ? headTypeFor(type) : type, shape[shape.length - 1]!);
}

/** Bytes of rows of an f32 matrix in `type` (f32 passes through as its bytes). */
function encode(type: GgmlType, x: Float32Array, rows: number, K: number): Uint8Array {
  if (type === 'f32') return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  return quantize(type, x, rows, K);
}

// ---- writing: metadata and the tensor plan ------------------------------------------------------------------

/** llama.cpp's general.file_type for the body type. */
const FILE_TYPE: Record<string, number> = { f32: 0, f16: 1, q4_0: 2, q4_1: 3, q8_0: 7, q5_0: 8, q5_1: 9, bf16: 32 };

/** The metadata keys llama.cpp's converter writes for DeepSeek-V2 (MLA form), plus the tokenizer and our config. */
export function ggufMetadata(c: DeepseekV2Config, tok: Tokenizer | null, type: GgmlType, name: string): [string, GgufValue][] {
  if (c.attention_type !== 'mla') throw new GgufError(`GGUF holds MLA models only; this one uses ${c.attention_type} attention`);
  const k = (s: string): string => `${ARCH}.${s}`;
  const md: [string, GgufValue][] = [
    ['general.architecture', str(ARCH)],
    ['general.type', str('model')],
    ['general.name', str(name)],
    [k('block_count'), u32(c.num_hidden_layers)],
    [k('context_length'), u32(c.max_position_embeddings)],
    [k('embedding_length'), u32(c.hidden_size)],
    [k('feed_forward_length'), u32(c.intermediate_size)],
    [k('attention.head_count'), u32(c.num_attention_heads)],
    [k('attention.head_count_kv'), u32(1)],
  ];
  const rs = c.rope_scaling;
  if (rs) {
    md.push(
      [k('rope.scaling.type'), str('yarn')],
      [k('rope.scaling.factor'), f32(rs.factor)],
      [k('rope.scaling.original_context_length'), u32(rs.original_max_position_embeddings)],
      [k('rope.scaling.yarn_beta_fast'), f32(rs.beta_fast)],
      [k('rope.scaling.yarn_beta_slow'), f32(rs.beta_slow)],
    );
  }
  md.push([k('rope.freq_base'), f32(c.rope_theta)], [k('attention.layer_norm_rms_epsilon'), f32(c.rms_norm_eps)]);
  if (c.n_routed_experts) {
    md.push([k('expert_used_count'), u32(c.num_experts_per_tok!)]);
    md.push([k('expert_group_count'), u32(c.n_group)], [k('expert_group_used_count'), u32(c.topk_group)]);
    md.push([k('expert_gating_func'), u32(1)]);
  }
  md.push(
    ['general.file_type', u32(FILE_TYPE[type] ?? 7)],
    [k('leading_dense_block_count'), u32(c.n_routed_experts ? c.first_k_dense_replace : c.num_hidden_layers)],
    [k('vocab_size'), u32(c.vocab_size)],
    // llama.cpp needs the key unless the model has 26 or 27 layers; 0 means "plain q_proj" to it
    [k('attention.q_lora_rank'), u32(c.q_lora_rank ?? 0)],
    [k('attention.kv_lora_rank'), u32(c.kv_lora_rank)],
    [k('attention.key_length'), u32(c.kv_lora_rank + c.qk_rope_head_dim)],
    [k('attention.value_length'), u32(c.kv_lora_rank)],
    [k('attention.key_length_mla'), u32(c.qk_nope_head_dim + c.qk_rope_head_dim)],
    [k('attention.value_length_mla'), u32(c.v_head_dim)],
    [k('expert_feed_forward_length'), u32(c.moe_intermediate_size)],
    [k('expert_count'), u32(c.n_routed_experts ?? 0)],
    [k('expert_shared_count'), u32(c.n_shared_experts ?? 0)],
    [k('expert_weights_scale'), f32(c.routed_scaling_factor)],
    [k('expert_weights_norm'), bool(c.norm_topk_prob)],
    [k('rope.dimension_count'), u32(c.qk_rope_head_dim)],
  );
  if (rs) md.push([k('rope.scaling.yarn_log_multiplier'), f32(0.1 * rs.mscale_all_dim)]);
  md.push(['general.quantization_version', u32(2)]);
  if (tok) md.push(...tokenizerMetadata(tok, c));
  else {
    if (c.bos_token_id !== null) md.push(['tokenizer.ggml.bos_token_id', u32(c.bos_token_id)]);
    if (c.eos_token_id !== null) md.push(['tokenizer.ggml.eos_token_id', u32(c.eos_token_id)]);
  }
  md.push(['dsv2.hf_config', str(configJsonText(c))]);
  return md;
}

/** tokenizer.ggml.* for a byte-level BPE: tokens padded to the vocab, types, merges, special ids, and the HF JSON. */
function tokenizerMetadata(tok: Tokenizer, c: DeepseekV2Config): [string, GgufValue][] {
  const json = tok.toJSON();
  const tokens: string[] = Array.from({ length: c.vocab_size }, (_, i) => `[PAD${i}]`);
  const types: number[] = new Array(c.vocab_size).fill(5);
  for (const [t, id] of tok.vocab)
    if (id < c.vocab_size) {
      tokens[id] = t;
      types[id] = 1;
    }
  for (const s of tok.specials)
    if (s.id < c.vocab_size) {
      tokens[s.id] = s.content;
      types[s.id] = 3;
    }
  const md: [string, GgufValue][] = [
    ['tokenizer.ggml.model', str('gpt2')],
    ['tokenizer.ggml.pre', str(preTokenizerName(json))],
    ['tokenizer.ggml.tokens', strs(tokens)],
    ['tokenizer.ggml.token_type', i32s(types)],
    ['tokenizer.ggml.merges', strs(tok.merges.map(([a, b]) => `${a} ${b}`))],
  ];
  if (c.bos_token_id !== null) md.push(['tokenizer.ggml.bos_token_id', u32(c.bos_token_id)]);
  if (c.eos_token_id !== null) md.push(['tokenizer.ggml.eos_token_id', u32(c.eos_token_id)]);
  md.push(['tokenizer.ggml.add_bos_token', bool(false)], ['tokenizer.ggml.add_eos_token', bool(false)]);
  md.push(['tokenizer.huggingface.json', str(JSON.stringify(json))]);
  return md;
}

/** llama.cpp's name for a tokenizer's pre-tokenizer: our GPT-2 regex is its "gpt-2". */
function preTokenizerName(j: TokenizerJson): string {
  const text = JSON.stringify(j.pre_tokenizer);
  return text.includes(JSON.stringify(GPT2_PATTERN).slice(1, -1)) ? 'gpt-2' : 'default';
}

/** A source of float32 tensors by HF name (a checkpoint, or a loaded model's parameters): all of it, or rows [r0, r1). */
export type TensorSource = (hfName: string, rows?: [number, number]) => Float32Array;

/** Rows per chunk when a big 2-D tensor is converted a slice at a time (~16 MB of float32). */
const CHUNK_FLOATS = 4 << 20;

/**
 * The GGUF tensors of a model, in llama.cpp's MLA form, each produced from `read` only when the writer reaches it
 * (one HF tensor, or one layer's experts one at a time, in memory at once).
 */
export function ggufTensors(c: DeepseekV2Config, read: TensorSource, type: GgmlType): GgufTensorOut[] {
  const shapes = new Map(expectedTensors(c).map((t) => [t.name, t.shape]));
  const out: GgufTensorOut[] = [];
  const direct = (hf: string): void => {
    const shape = shapes.get(hf)!;
    const t = storageOf(hf, shape, type);
    const rows = shape.length === 2 ? shape[0]! : 1;
    const K = shape[shape.length - 1]!;
    const step = Math.max(1, Math.floor(CHUNK_FLOATS / K));
    out.push({
      name: ggufName(hf)!,
      ne: [...shape].reverse(),
      type: t,
      // a big table (the embedding, the head: 210 M values in V2-Lite) a slice of rows at a time
      chunks: function* () {
        if (rows <= step) yield encode(t, read(hf), rows, K);
        else for (let r = 0; r < rows; r += step) yield encode(t, read(hf, [r, Math.min(rows, r + step)]), Math.min(step, rows - r), K);
      },
    });
  };
  direct('model.embed_tokens.weight');
  const [H, dn, dv, dc] = [c.num_attention_heads, c.qk_nope_head_dim, c.v_head_dim, c.kv_lora_rank];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}`;
    direct(`${p}.input_layernorm.weight`);
    if (c.q_lora_rank === null) direct(`${p}.self_attn.q_proj.weight`);
    else for (const n of ['q_a_proj', 'q_a_layernorm', 'q_b_proj']) direct(`${p}.self_attn.${n}.weight`);
    direct(`${p}.self_attn.kv_a_proj_with_mqa.weight`);
    direct(`${p}.self_attn.kv_a_layernorm.weight`);
    // kv_b_proj [H·(dn+dv), dc] → attn_k_b [H, dc, dn] (each head's key rows transposed) and attn_v_b [H, dv, dc]
    const kvb = `${p}.self_attn.kv_b_proj.weight`;
    let kvCache: Float32Array | null = null;
    const kv = (): Float32Array => (kvCache ??= read(kvb));
    out.push({
      name: `blk.${i}.attn_k_b.weight`,
      ne: [dn, dc, H],
      type: 'f32',
      chunks: () => {
        const w = kv();
        const kb = new Float32Array(H * dc * dn);
        for (let h = 0; h < H; h++)
          for (let r = 0; r < dn; r++) for (let j = 0; j < dc; j++) kb[(h * dc + j) * dn + r] = w[(h * (dn + dv) + r) * dc + j]!;
        return [new Uint8Array(kb.buffer)];
      },
    });
    out.push({
      name: `blk.${i}.attn_v_b.weight`,
      ne: [dc, dv, H],
      type: 'f32',
      chunks: () => {
        const w = kv();
        const vb = new Float32Array(H * dv * dc);
        for (let h = 0; h < H; h++) vb.set(w.subarray((h * (dn + dv) + dn) * dc, (h + 1) * (dn + dv) * dc), h * dv * dc);
        kvCache = null;
        return [new Uint8Array(vb.buffer)];
      },
    });
    direct(`${p}.self_attn.o_proj.weight`);
    direct(`${p}.post_attention_layernorm.weight`);
    if (!isMoeLayer(c, i)) {
      for (const n of ['gate_proj', 'up_proj', 'down_proj']) direct(`${p}.mlp.${n}.weight`);
      continue;
    }
    direct(`${p}.mlp.gate.weight`);
    const E = c.n_routed_experts!;
    for (const [n, g] of [
      ['down_proj', 'ffn_down_exps'],
      ['gate_proj', 'ffn_gate_exps'],
      ['up_proj', 'ffn_up_exps'],
    ] as const) {
      const shape = shapes.get(`${p}.mlp.experts.0.${n}.weight`)!;
      const t = storageOf(`${p}.mlp.experts.0.${n}.weight`, shape, type);
      out.push({
        name: `blk.${i}.${g}.weight`,
        ne: [shape[1]!, shape[0]!, E],
        type: t,
        chunks: function* () {
          for (let e = 0; e < E; e++) yield encode(t, read(`${p}.mlp.experts.${e}.${n}.weight`), shape[0]!, shape[1]!);
        },
      });
    }
    if (c.n_shared_experts) for (const n of ['gate_proj', 'up_proj', 'down_proj']) direct(`${p}.mlp.shared_experts.${n}.weight`);
  }
  direct('model.norm.weight');
  direct('lm_head.weight');
  return out;
}

// ---- reading --------------------------------------------------------------------------------------------------

/** The shortest decimal that is the same float32 (GGUF stores f32; 1e-6 comes back as 9.99999997e-7 otherwise). */
function f32Decimal(v: number): number {
  for (let p = 1; p <= 9; p++) {
    const d = Number(v.toPrecision(p));
    if (Math.fround(d) === Math.fround(v)) return d;
  }
  return v;
}

/** The model config of a deepseek2 GGUF: ours from dsv2.hf_config, any other from the standard keys. */
export function configFromGguf(g: GgufReader): DeepseekV2Config {
  const arch = g.str('general.architecture');
  if (arch !== ARCH) throw new GgufError(`${g.path}: general.architecture is ${JSON.stringify(arch)}, not "${ARCH}" (DeepSeek-V2)`);
  const where = (e: unknown): never => {
    throw new GgufError(`${g.path}: ${(e as Error).message}`);
  };
  const ours = g.str('dsv2.hf_config');
  if (ours !== undefined) {
    try {
      return parseConfig(JSON.parse(ours));
    } catch (e) {
      where(e);
    }
  }
  const k = (s: string): string => `${ARCH}.${s}`;
  const need = (s: string): number => {
    const v = g.num(k(s));
    if (v === undefined) throw new GgufError(`${g.path}: metadata '${k(s)}' is missing`);
    return v;
  };
  const opt = (s: string, d: number): number => g.num(k(s)) ?? d;
  if (g.tensors.has('blk.0.exp_probs_b.bias') || (g.num(k('expert_gating_func')) ?? 1) !== 1)
    throw new GgufError(`${g.path}: this is a DeepSeek-V3-style file (sigmoid gating / expert bias); dsv2 runs DeepSeek-V2`);
  const rope = need('rope.dimension_count');
  const mla = g.num(k('attention.key_length_mla')) !== undefined;
  // MLA form: key_length_mla = nope + rope, value_length_mla = v; the legacy form has them in key/value_length
  const dqk = mla ? need('attention.key_length_mla') : need('attention.key_length');
  const dv = mla ? need('attention.value_length_mla') : need('attention.value_length');
  const heads = need('attention.head_count');
  const nGroup = opt('expert_group_count', 1);
  const scaling = g.str(k('rope.scaling.type'));
  const yarnMul = g.num(k('rope.scaling.yarn_log_multiplier'));
  const json: Record<string, unknown> = {
    vocab_size: g.num(k('vocab_size')) ?? g.array('tokenizer.ggml.tokens')?.length,
    hidden_size: need('embedding_length'),
    intermediate_size: need('feed_forward_length'),
    moe_intermediate_size: opt('expert_feed_forward_length', need('feed_forward_length')),
    num_hidden_layers: need('block_count'),
    num_attention_heads: heads,
    num_key_value_heads: heads, // HF's DeepSeek-V2 configs; the GGUF's 1 is the MLA cache's single latent "head"
    q_lora_rank: opt('attention.q_lora_rank', 0) || null,
    kv_lora_rank: need('attention.kv_lora_rank'),
    qk_nope_head_dim: dqk - rope,
    qk_rope_head_dim: rope,
    v_head_dim: dv,
    n_routed_experts: opt('expert_count', 0) || null,
    n_shared_experts: opt('expert_shared_count', 0) || null,
    num_experts_per_tok: opt('expert_used_count', 0) || null,
    // topk_method is not in the file: groups imply DeepSeek-V2's group-limited greedy routing
    topk_method: nGroup > 1 ? 'group_limited_greedy' : 'greedy',
    n_group: nGroup,
    topk_group: opt('expert_group_used_count', 1),
    scoring_func: 'softmax',
    norm_topk_prob: g.bool(k('expert_weights_norm')) ?? false,
    routed_scaling_factor: f32Decimal(opt('expert_weights_scale', 1)),
    first_k_dense_replace: opt('leading_dense_block_count', 0),
    moe_layer_freq: 1,
    rms_norm_eps: f32Decimal(need('attention.layer_norm_rms_epsilon')),
    rope_theta: f32Decimal(opt('rope.freq_base', 10000)),
    max_position_embeddings: need('context_length'),
    tie_word_embeddings: !g.tensors.has('output.weight'),
    bos_token_id: g.num('tokenizer.ggml.bos_token_id') ?? null,
    eos_token_id: g.num('tokenizer.ggml.eos_token_id') ?? null,
  };
  if (scaling === 'yarn') {
    // the file keeps 0.1·mscale_all_dim; mscale is not written (the released V2 configs set both to 0.707)
    const mscaleAll = yarnMul === undefined ? 1 : f32Decimal(f32Decimal(yarnMul) / 0.1);
    json['rope_scaling'] = {
      type: 'yarn',
      factor: f32Decimal(need('rope.scaling.factor')),
      original_max_position_embeddings: need('rope.scaling.original_context_length'),
      beta_fast: f32Decimal(opt('rope.scaling.yarn_beta_fast', 32)),
      beta_slow: f32Decimal(opt('rope.scaling.yarn_beta_slow', 1)),
      mscale: mscaleAll,
      mscale_all_dim: mscaleAll,
    };
  } else if (scaling !== undefined && scaling !== 'none')
    throw new GgufError(`${g.path}: rope scaling '${scaling}' is not DeepSeek-V2's (yarn)`);
  try {
    return parseConfig(json);
  } catch (e) {
    return where(e);
  }
}

/** The tokenizer of a GGUF: the HF JSON it carries, else one built from tokenizer.ggml.* (byte-level BPE). */
export function tokenizerFromGguf(g: GgufReader, preTokenizers: Record<string, unknown> = {}): Tokenizer {
  const hf = g.str('tokenizer.huggingface.json');
  const wrapErr = <T>(f: () => T): T => {
    try {
      return f();
    } catch (e) {
      throw new GgufError(`${g.path}: ${(e as Error).message}`);
    }
  };
  if (hf !== undefined) return wrapErr(() => Tokenizer.fromJSON(JSON.parse(hf) as TokenizerJson));
  const model = g.str('tokenizer.ggml.model');
  if (model !== 'gpt2')
    throw new GgufError(`${g.path}: tokenizer.ggml.model is ${JSON.stringify(model)}; dsv2 reads byte-level BPE ("gpt2") tokenizers`);
  const tokens = g.array('tokenizer.ggml.tokens');
  const merges = g.array('tokenizer.ggml.merges');
  if (!tokens || !merges) throw new GgufError(`${g.path}: the tokenizer needs tokenizer.ggml.tokens and tokenizer.ggml.merges`);
  const types = g.array('tokenizer.ggml.token_type') ?? [];
  const pre = g.str('tokenizer.ggml.pre') ?? 'default';
  const preTok =
    pre === 'gpt-2' || pre === 'default'
      ? { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true }
      : preTokenizers[pre];
  if (!preTok)
    throw new GgufError(`${g.path}: pre-tokenizer '${pre}' is not known to dsv2 (known: gpt-2, ${Object.keys(preTokenizers).join(', ')})`);
  const vocab: Record<string, number> = {};
  const added: TokenizerJson['added_tokens'] = [];
  tokens.forEach((t, id) => {
    if (typeof t !== 'string') throw new GgufError(`${g.path}: tokenizer.ggml.tokens[${id}] is not a string`);
    const ty = types[id];
    if (ty === 5) return; // unused filler ([PADn])
    if (ty === 3 || ty === 4)
      added.push({ id, content: t, special: ty === 3, normalized: false, lstrip: false, rstrip: false, single_word: false });
    else vocab[t] = id;
  });
  const json: TokenizerJson = {
    version: '1.0',
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: preTok,
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', vocab, merges: merges.map((m) => String(m)) },
  };
  return wrapErr(() => Tokenizer.fromJSON(json));
}

export interface GgufLoadOptions {
  backend: Backend;
}

/**
 * A model from a deepseek2 GGUF. Stored tensors are used in place (views of the file's mapping when the backend maps
 * files, so pages load when touched and an expert never routed to costs no RAM); f32 ones are copied; kv_b_proj is
 * rebuilt in float32 from attn_k_b/attn_v_b (or taken from the legacy attn_kv_b). Closes `g` if it fails.
 */
export function ggufModel(g: GgufReader, opts: GgufLoadOptions): DeepseekV2ForCausalLM {
  const backend = opts.backend;
  const path = g.path;
  try {
    const c = configFromGguf(g);
    const params = new Params();
    const info = (name: string, ne: readonly number[]): { type: GgmlType; bytes: Uint8Array } => {
      const t = g.tensors.get(name);
      if (!t) throw new GgufError(`${path}: tensor '${name}' is missing`);
      if (t.ne.length !== ne.length || t.ne.some((n, i) => n !== ne[i]))
        throw new GgufError(`${path}: tensor '${name}' has dims [${t.ne}], the config needs [${ne}]`);
      return { type: t.type, bytes: g.data(name) };
    };
    const put = (hf: string, shape: readonly number[], type: GgmlType, bytes: Uint8Array): void => {
      const rows = shape.length === 2 ? shape[0]! : 1;
      const K = shape[shape.length - 1]!;
      // stored types stay stored where the model may multiply from them; everything else becomes float32
      if (type !== 'f32' && shape.length === 2 && isQuantizable(hf, shape)) params.set(hf, storedWeight(backend, type, bytes, shape));
      else params.set(hf, wrap(backend, decodeF32(type, bytes, rows, K), [...shape]));
    };
    const shapes = new Map(expectedTensors(c).map((t) => [t.name, t.shape]));
    for (const [hf, shape] of shapes) {
      const direct = ggufName(hf);
      if (direct) {
        if (hf === 'lm_head.weight' && !g.tensors.has('output.weight')) {
          const e = info('token_embd.weight', [...shape].reverse());
          put(hf, shape, e.type, e.bytes);
          continue;
        }
        const t = info(direct, [...shape].reverse());
        put(hf, shape, t.type, t.bytes);
        continue;
      }
      const ex = /^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$/.exec(hf);
      if (ex) {
        const [, layer, e, which] = ex;
        const E = c.n_routed_experts!;
        const t = info(`blk.${layer}.ffn_${which}_exps.weight`, [shape[1]!, shape[0]!, E]);
        const per = tensorBytes(t.type, [shape[1]!, shape[0]!]);
        put(hf, shape, t.type, t.bytes.subarray(Number(e) * per, (Number(e) + 1) * per));
        continue;
      }
      const kv = /^model\.layers\.(\d+)\.self_attn\.kv_b_proj\.weight$/.exec(hf);
      if (kv) {
        params.set(hf, wrap(backend, kvBFromGguf(g, Number(kv[1]), c), [...shape]));
        continue;
      }
      throw new GgufError(`${path}: no GGUF tensor for '${hf}'`);
    }
    return new DeepseekV2ForCausalLM(c, params, backend);
  } catch (e) {
    g.close();
    throw e;
  }
}

/** kv_b_proj [H·(dn+dv), dc] in float32 from a layer's attn_k_b and attn_v_b (or the legacy attn_kv_b). */
function kvBFromGguf(g: GgufReader, layer: number, c: DeepseekV2Config): Float32Array {
  const [H, dn, dv, dc] = [c.num_attention_heads, c.qk_nope_head_dim, c.v_head_dim, c.kv_lora_rank];
  const legacy = g.tensors.get(`blk.${layer}.attn_kv_b.weight`);
  if (legacy) {
    if (legacy.ne[0] !== dc || legacy.ne[1] !== H * (dn + dv))
      throw new GgufError(`${g.path}: attn_kv_b of layer ${layer} has dims [${legacy.ne}]`);
    return dequantOrCopy(g, legacy.name, H * (dn + dv), dc);
  }
  const kb = g.tensors.get(`blk.${layer}.attn_k_b.weight`);
  const vb = g.tensors.get(`blk.${layer}.attn_v_b.weight`);
  if (!kb || !vb) throw new GgufError(`${g.path}: layer ${layer} has neither attn_k_b/attn_v_b nor attn_kv_b`);
  const same = (ne: number[], want: number[]): boolean => ne.length === want.length && ne.every((n, i) => n === want[i]);
  if (!same(kb.ne, [dn, dc, H]))
    throw new GgufError(`${g.path}: attn_k_b of layer ${layer} has dims [${kb.ne}], the config needs [${dn},${dc},${H}]`);
  if (!same(vb.ne, [dc, dv, H]))
    throw new GgufError(`${g.path}: attn_v_b of layer ${layer} has dims [${vb.ne}], the config needs [${dc},${dv},${H}]`);
  const k = dequantOrCopy(g, kb.name, H * dc, dn); // [H, dc, dn]
  const v = dequantOrCopy(g, vb.name, H * dv, dc); // [H, dv, dc]
  const w = new Float32Array(H * (dn + dv) * dc);
  for (let h = 0; h < H; h++) {
    for (let r = 0; r < dn; r++) for (let j = 0; j < dc; j++) w[(h * (dn + dv) + r) * dc + j] = k[(h * dc + j) * dn + r]!;
    w.set(v.subarray(h * dv * dc, (h + 1) * dv * dc), (h * (dn + dv) + dn) * dc);
  }
  return w;
}

/** A tensor's values as a new float32 array: f32 bytes copied (a mapping is read-only), anything else decoded. */
function decodeF32(type: GgmlType, bytes: Uint8Array, rows: number, K: number): Float32Array {
  if (type !== 'f32') return dequantize(type, bytes, rows, K);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

function dequantOrCopy(g: GgufReader, name: string, rows: number, K: number): Float32Array {
  return decodeF32(g.tensors.get(name)!.type, g.data(name), rows, K);
}
