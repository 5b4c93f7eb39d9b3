// DeepseekV2Config: the Hugging Face config.json fields (spec §7.3), validated on construction, plus presets.
// One extension: `attention_type` selects MLA (the default, what the checkpoints use) or a plain MHA/GQA/MQA
// baseline for the paper's Fig. 3 comparison; GQA/MQA read `num_key_value_heads`.
import { brief } from '../io/brief.js';

export interface RopeScaling {
  type: 'yarn';
  factor: number;
  original_max_position_embeddings: number;
  beta_fast: number;
  beta_slow: number;
  mscale: number;
  mscale_all_dim: number;
}

export type AttentionType = 'mla' | 'mha' | 'gqa' | 'mqa';

/** The Hugging Face config.json fields of a DeepSeek-V2 checkpoint (spec §7.3), one line each. */
export interface DeepseekV2Config {
  /** Tokens in the vocabulary: rows of the embedding and the LM head (§7.2). */
  vocab_size: number;
  /** d, the model width: the residual stream, every norm (§1). */
  hidden_size: number;
  /** Width of the dense SwiGLU MLP of the first_k_dense_replace layers (§5.8). */
  intermediate_size: number;
  /** Width of one expert's SwiGLU MLP, routed or shared (§5.2, §5.3). */
  moe_intermediate_size: number;
  /** Decoder layers (§1). */
  num_hidden_layers: number;
  /** n_h, attention heads (§2). */
  num_attention_heads: number;
  /** K/V heads of the GQA baseline (attention_type 'gqa'); MLA and MHA ignore it (the released configs set n_h). */
  num_key_value_heads: number;
  /** d'_c, the query latent (q_a_proj → q_a_layernorm → q_b_proj); null: a plain q_proj, as V2-Lite (§2.1). */
  q_lora_rank: number | null;
  /** d_c, the joint KV latent that is cached (§2.2, §4.1). */
  kv_lora_rank: number;
  /** d_h, each head's key/query part without RoPE (§2.1, §2.2). */
  qk_nope_head_dim: number;
  /** d^R_h, the decoupled RoPE part of each query and the one shared RoPE key (§2.3). */
  qk_rope_head_dim: number;
  /** Each head's value width (§2.2). */
  v_head_dim: number;
  /** N_r, routed experts per MoE layer; null: no MoE (§5.3). */
  n_routed_experts: number | null;
  /** N_s, shared experts, always applied, run as one MLP n_shared × wide (§5.2). */
  n_shared_experts: number | null;
  /** K_r, routed experts per token (§5.5). */
  num_experts_per_tok: number | null;
  /** 'greedy' top-k over all experts, or 'group_limited_greedy': the best topk_group groups only (§5.5, §6.2). */
  topk_method: 'greedy' | 'group_limited_greedy';
  /** D, expert groups (devices) for group-limited routing; a group's score is its best expert (§5.5). */
  n_group: number;
  /** M, groups a token may reach under group-limited routing (§6.2). */
  topk_group: number;
  /** The gate's scoring: softmax over all routed experts in float32 (§5.4). */
  scoring_func: 'softmax';
  /** Renormalise the top-k gate values to sum to 1 (§5.6; false in V2). */
  norm_topk_prob: boolean;
  /** Factor on the routed experts' gate values (§5.6; V2 16, V2-Lite 1). */
  routed_scaling_factor: number;
  /** Leading layers with a dense MLP instead of MoE (§5.8). */
  first_k_dense_replace: number;
  /** Every moe_layer_freq-th layer after those is MoE (§5.8; 1 in the released models). */
  moe_layer_freq: number;
  /** α1, the expert-level balance loss weight of the HF code (§6.1; training only). */
  aux_loss_alpha: number;
  /** Sequence-wise balance loss (the HF code's seq_aux; §6.1; training only). */
  seq_aux: boolean;
  /** The MLPs' activation: SiLU in SwiGLU (§1). */
  hidden_act: 'silu';
  /** ε of the layer RMSNorms (the latent norms use 1e-6 always, §10.6). */
  rms_norm_eps: number;
  /** RoPE base θ (§3.2). */
  rope_theta: number;
  /** YaRN context extension: factor, original length, β_fast/β_slow, both mscales; null: plain RoPE (§3.3). */
  rope_scaling: RopeScaling | null;
  /** Positions the model has: prompts, training sequences and generations are held to it. */
  max_position_embeddings: number;
  /** Must be false: DeepSeek-V2 has a separate lm_head (§10.14). */
  tie_word_embeddings: boolean;
  /** Std of the normal initialisation of the linear weights (training from scratch). */
  initializer_range: number;
  /** Begin-of-sequence token id, or null. */
  bos_token_id: number | null;
  /** End-of-sequence token id (generation stops there), or null. */
  eos_token_id: number | null;
  /** Our extension: 'mla' (the checkpoints) or an MHA/GQA/MQA baseline for the paper's Fig. 3 comparison. */
  attention_type: AttentionType;
}

/** Fields of real config.json files that this implementation reads but that do not change the math. */
const PASSIVE_FIELDS = new Set([
  'architectures',
  'auto_map',
  'model_type',
  'attention_bias',
  'attention_dropout',
  'ep_size',
  'pretraining_tp',
  'torch_dtype',
  'transformers_version',
  'use_cache',
  'pad_token_id',
  '_name_or_path',
]);

const DEFAULTS: DeepseekV2Config = {
  vocab_size: 102400,
  hidden_size: 4096,
  intermediate_size: 11008,
  moe_intermediate_size: 1407,
  num_hidden_layers: 30,
  num_attention_heads: 32,
  num_key_value_heads: 32,
  q_lora_rank: 1536,
  kv_lora_rank: 512,
  qk_nope_head_dim: 128,
  qk_rope_head_dim: 64,
  v_head_dim: 128,
  n_routed_experts: null,
  n_shared_experts: null,
  num_experts_per_tok: null,
  topk_method: 'greedy',
  n_group: 1,
  topk_group: 1,
  scoring_func: 'softmax',
  norm_topk_prob: false,
  routed_scaling_factor: 1.0,
  first_k_dense_replace: 0,
  moe_layer_freq: 1,
  aux_loss_alpha: 0.001,
  seq_aux: true,
  hidden_act: 'silu',
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  rope_scaling: null,
  max_position_embeddings: 2048,
  tie_word_embeddings: false,
  initializer_range: 0.02,
  bos_token_id: 100000,
  eos_token_id: 100001,
  attention_type: 'mla',
};

export class ConfigError extends Error {}

type Json = Record<string, unknown>;

function fail(msg: string): never {
  throw new ConfigError(`config: ${msg}`);
}

function int(j: Json, key: keyof DeepseekV2Config, min: number, nullable = false): number | null {
  const v = j[key];
  if (v === null && nullable) return null;
  if (typeof v !== 'number' || !Number.isInteger(v)) fail(`'${key}' must be an integer${nullable ? ' or null' : ''}, got ${brief(v)}`);
  if (v < min) fail(`'${key}' must be ≥ ${min}, got ${v}`);
  return v;
}

function nonNegative(v: number, key: string): number {
  if (v < 0) fail(`'${key}' must be ≥ 0, got ${v}`);
  return v;
}

function num(j: Json, key: string, positive = false): number {
  const v = j[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(`'${key}' must be a number, got ${brief(v)}`);
  if (positive && v <= 0) fail(`'${key}' must be > 0, got ${v}`);
  return v;
}

/** The fields dsv2 reads past must still have the types transformers gives them (a broken file is refused whole). */
function checkPassive(src: Json): void {
  const is = {
    string: (v: unknown) => typeof v === 'string',
    strings: (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === 'string'),
    object: (v: unknown) => v !== null && typeof v === 'object' && !Array.isArray(v),
    bool: (v: unknown) => typeof v === 'boolean',
    count: (v: unknown) => Number.isInteger(v) && (v as number) >= 1,
  };
  const rules: [string, (v: unknown) => boolean, string][] = [
    ['architectures', is.strings, 'a list of strings'],
    ['auto_map', is.object, 'an object'],
    ['attention_bias', (v) => v === false, 'false (DeepSeek-V2 has no attention biases)'],
    ['attention_dropout', (v) => typeof v === 'number' && v >= 0 && v < 1, 'a number in [0, 1)'],
    ['ep_size', is.count, 'an integer ≥ 1'],
    ['pretraining_tp', is.count, 'an integer ≥ 1'],
    ['torch_dtype', (v) => v === null || is.string(v), 'a string or null'],
    ['transformers_version', is.string, 'a string'],
    ['use_cache', is.bool, 'true or false'],
    ['pad_token_id', (v) => v === null || (Number.isInteger(v) && (v as number) >= 0), 'a token id or null'],
    ['_name_or_path', is.string, 'a string'],
  ];
  for (const [key, ok, want] of rules)
    if (src[key] !== undefined && !ok(src[key])) fail(`'${key}' must be ${want}, got ${brief(src[key])}`);
}

function bool(j: Json, key: string): boolean {
  const v = j[key];
  if (typeof v !== 'boolean') fail(`'${key}' must be true or false, got ${brief(v)}`);
  return v;
}

function oneOf<T extends string>(j: Json, key: string, allowed: readonly T[]): T {
  const v = j[key];
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    fail(`unknown ${key} ${brief(v)} (expected one of: ${allowed.join(', ')})`);
  }
  return v as T;
}

function parseRopeScaling(v: unknown): RopeScaling | null {
  if (v === null || v === undefined) return null;
  if (typeof v !== 'object' || Array.isArray(v)) fail(`'rope_scaling' must be an object or null`);
  const r = v as Json;
  const type = r['type'] ?? r['rope_type'];
  if (type !== 'yarn') fail(`rope_scaling type ${brief(type)} is not supported (DeepSeek-V2 uses "yarn")`);
  const known = new Set([
    'type',
    'rope_type',
    'factor',
    'original_max_position_embeddings',
    'beta_fast',
    'beta_slow',
    'mscale',
    'mscale_all_dim',
  ]);
  for (const k of Object.keys(r)) if (!known.has(k)) fail(`unknown rope_scaling field '${k}'`);
  const get = (k: string, d: number): number => (r[k] === undefined ? d : num(r, k));
  const out: RopeScaling = {
    type: 'yarn',
    factor: get('factor', 1),
    original_max_position_embeddings: get('original_max_position_embeddings', 4096),
    beta_fast: get('beta_fast', 32),
    beta_slow: get('beta_slow', 1),
    mscale: get('mscale', 1),
    mscale_all_dim: get('mscale_all_dim', 0),
  };
  if (out.factor <= 0) fail(`rope_scaling.factor must be > 0, got ${out.factor}`);
  if (!Number.isInteger(out.original_max_position_embeddings) || out.original_max_position_embeddings < 1) {
    fail(`rope_scaling.original_max_position_embeddings must be a positive integer`);
  }
  return out;
}

/** Validate a config.json object (HF field names) and fill HF defaults for absent fields. */
export function parseConfig(json: unknown): DeepseekV2Config {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail('expected a JSON object');
  const src = json as Json;
  for (const k of Object.keys(src)) {
    if (!(k in DEFAULTS) && !PASSIVE_FIELDS.has(k)) fail(`unknown field '${k}'`);
  }
  if (src['model_type'] !== undefined && src['model_type'] !== 'deepseek_v2') {
    fail(`model_type ${brief(src['model_type'])} is not "deepseek_v2"`);
  }
  checkPassive(src);
  const j: Json = { ...DEFAULTS, ...src };
  // DeepSeek's own configs write q_lora_rank 0 for "no query compression" (spec §2.1)
  if (j['q_lora_rank'] === 0) j['q_lora_rank'] = null;
  const c: DeepseekV2Config = {
    vocab_size: int(j, 'vocab_size', 1)!,
    hidden_size: int(j, 'hidden_size', 1)!,
    intermediate_size: int(j, 'intermediate_size', 1)!,
    moe_intermediate_size: int(j, 'moe_intermediate_size', 1)!,
    num_hidden_layers: int(j, 'num_hidden_layers', 1)!,
    num_attention_heads: int(j, 'num_attention_heads', 1)!,
    num_key_value_heads: int(j, 'num_key_value_heads', 1)!,
    q_lora_rank: int(j, 'q_lora_rank', 1, true),
    kv_lora_rank: int(j, 'kv_lora_rank', 1)!,
    qk_nope_head_dim: int(j, 'qk_nope_head_dim', 0)!,
    qk_rope_head_dim: int(j, 'qk_rope_head_dim', 0)!,
    v_head_dim: int(j, 'v_head_dim', 1)!,
    n_routed_experts: int(j, 'n_routed_experts', 1, true),
    n_shared_experts: int(j, 'n_shared_experts', 0, true),
    num_experts_per_tok: int(j, 'num_experts_per_tok', 1, true),
    topk_method: oneOf(j, 'topk_method', ['greedy', 'group_limited_greedy'] as const),
    n_group: int(j, 'n_group', 1)!,
    topk_group: int(j, 'topk_group', 1)!,
    scoring_func: oneOf(j, 'scoring_func', ['softmax'] as const),
    norm_topk_prob: bool(j, 'norm_topk_prob'),
    routed_scaling_factor: num(j, 'routed_scaling_factor', true),
    first_k_dense_replace: int(j, 'first_k_dense_replace', 0)!,
    moe_layer_freq: int(j, 'moe_layer_freq', 1)!,
    aux_loss_alpha: nonNegative(num(j, 'aux_loss_alpha'), 'aux_loss_alpha'),
    seq_aux: bool(j, 'seq_aux'),
    hidden_act: oneOf(j, 'hidden_act', ['silu'] as const),
    rms_norm_eps: num(j, 'rms_norm_eps', true),
    rope_theta: num(j, 'rope_theta', true),
    rope_scaling: parseRopeScaling(j['rope_scaling']),
    max_position_embeddings: int(j, 'max_position_embeddings', 1)!,
    tie_word_embeddings: bool(j, 'tie_word_embeddings'),
    initializer_range: num(j, 'initializer_range', true),
    bos_token_id: int(j, 'bos_token_id', 0, true),
    eos_token_id: int(j, 'eos_token_id', 0, true),
    attention_type: oneOf(j, 'attention_type', ['mla', 'mha', 'gqa', 'mqa'] as const),
  };
  if (c.tie_word_embeddings) fail(`tie_word_embeddings must be false: DeepSeek-V2 has a separate lm_head (spec §10.14)`);
  if (c.qk_rope_head_dim % 2 !== 0) fail(`qk_rope_head_dim must be even (RoPE rotates pairs), got ${c.qk_rope_head_dim}`);
  if (c.qk_nope_head_dim + c.qk_rope_head_dim < 1) fail('qk_nope_head_dim + qk_rope_head_dim must be ≥ 1');
  if (c.n_routed_experts !== null) {
    if (c.num_experts_per_tok === null) fail(`'num_experts_per_tok' is required when n_routed_experts is set`);
    if (c.num_experts_per_tok > c.n_routed_experts) {
      fail(`num_experts_per_tok (${c.num_experts_per_tok}) exceeds n_routed_experts (${c.n_routed_experts})`);
    }
    if (c.n_routed_experts % c.n_group !== 0) fail(`n_routed_experts (${c.n_routed_experts}) is not divisible by n_group (${c.n_group})`);
    if (c.topk_group > c.n_group) fail(`topk_group (${c.topk_group}) exceeds n_group (${c.n_group})`);
    if (c.topk_method === 'group_limited_greedy' && c.topk_group * (c.n_routed_experts / c.n_group) < c.num_experts_per_tok) {
      fail(
        `topk_group (${c.topk_group}) groups of ${c.n_routed_experts / c.n_group} experts cannot supply num_experts_per_tok (${c.num_experts_per_tok})`,
      );
    }
  }
  if (c.attention_type === 'gqa' && c.num_attention_heads % c.num_key_value_heads !== 0) {
    fail(`num_attention_heads (${c.num_attention_heads}) is not divisible by num_key_value_heads (${c.num_key_value_heads})`);
  }
  if (c.attention_type !== 'mla' && c.qk_nope_head_dim + c.qk_rope_head_dim !== c.v_head_dim) {
    // the baselines use one head dim for q, k and v (as the paper's MHA/GQA/MQA models do)
    fail(`attention_type ${c.attention_type} needs qk_nope_head_dim + qk_rope_head_dim == v_head_dim`);
  }
  checkLimits(c);
  return c;
}

/**
 * Sizes a real model can have, checked before anything is built from them: every width and count within a bound
 * far above the released models (DeepSeek-V2: 236 B parameters, 160 experts, 60 layers, a 102,400 vocabulary), no
 * single tensor over 2³¹ − 1 values (typed-array lengths), token ids inside the vocabulary, and YaRN's parameters
 * positive. A config of 10⁷ experts or 10⁸ layers is refused here at once instead of exhausting memory later.
 */
function checkLimits(c: DeepseekV2Config): void {
  const limits: [keyof DeepseekV2Config, number][] = [
    ['vocab_size', 1 << 22],
    ['hidden_size', 1 << 16],
    ['intermediate_size', 1 << 20],
    ['moe_intermediate_size', 1 << 18],
    ['num_hidden_layers', 1024],
    ['num_attention_heads', 1024],
    ['num_key_value_heads', 1024],
    ['q_lora_rank', 1 << 16],
    ['kv_lora_rank', 1 << 16],
    ['qk_nope_head_dim', 4096],
    ['qk_rope_head_dim', 4096],
    ['v_head_dim', 4096],
    ['n_routed_experts', 1 << 14],
    ['n_shared_experts', 1024],
    ['num_experts_per_tok', 1024],
    ['n_group', 1 << 14],
    ['max_position_embeddings', 1 << 24],
  ];
  for (const [k, max] of limits) {
    const v = c[k];
    if (typeof v === 'number' && v > max) fail(`${k} ${v} is larger than any model this implementation can hold (at most ${max})`);
  }
  const H = c.num_attention_heads;
  const biggest: [string, number][] = [
    ['the embedding', c.vocab_size * c.hidden_size],
    ['the dense MLP', c.intermediate_size * c.hidden_size],
    ['q_proj', H * (c.qk_nope_head_dim + c.qk_rope_head_dim) * Math.max(c.hidden_size, c.q_lora_rank ?? 0)],
    ['kv_b_proj', H * (c.qk_nope_head_dim + c.v_head_dim) * c.kv_lora_rank],
    ['o_proj', H * c.v_head_dim * c.hidden_size],
    ['the shared experts', (c.n_shared_experts ?? 0) * c.moe_intermediate_size * c.hidden_size],
  ];
  for (const [what, n] of biggest)
    if (n > 2 ** 31 - 1) fail(`${what} would hold ${n} values, more than one tensor can (2³¹ − 1); check the sizes`);
  for (const k of ['bos_token_id', 'eos_token_id'] as const) {
    const id = c[k];
    if (id !== null && id >= c.vocab_size) fail(`${k} ${id} is outside the vocabulary (vocab_size ${c.vocab_size})`);
  }
  const rs = c.rope_scaling;
  if (rs) {
    for (const k of ['factor', 'beta_fast', 'beta_slow'] as const) if (!(rs[k] > 0)) fail(`rope_scaling.${k} must be > 0, got ${rs[k]}`);
    for (const k of ['mscale', 'mscale_all_dim'] as const) if (!(rs[k] >= 0)) fail(`rope_scaling.${k} must be ≥ 0, got ${rs[k]}`);
    if (rs.factor < 1) fail(`rope_scaling.factor must be ≥ 1, got ${rs.factor}`);
    if (rs.beta_fast <= rs.beta_slow) fail(`rope_scaling.beta_fast (${rs.beta_fast}) must exceed beta_slow (${rs.beta_slow})`);
  }
  if (!(c.rms_norm_eps > 0)) fail(`rms_norm_eps must be > 0, got ${c.rms_norm_eps}`);
  if (!(c.rope_theta > 0)) fail(`rope_theta must be > 0, got ${c.rope_theta}`);
}

/** Layer i uses DeepSeekMoE (spec §1). */
export function isMoeLayer(c: DeepseekV2Config, i: number): boolean {
  return c.n_routed_experts !== null && i >= c.first_k_dense_replace && i % c.moe_layer_freq === 0;
}

/**
 * K/V heads as attention() sees them: MHA and MLA's naive path all H (MLA decompresses its latent per head; only the
 * absorbed decode reads one shared latent), GQA num_key_value_heads, MQA 1.
 */
export function kvHeads(c: DeepseekV2Config): number {
  switch (c.attention_type) {
    case 'mha':
    case 'mla':
      return c.num_attention_heads;
    case 'gqa':
      return c.num_key_value_heads;
    case 'mqa':
      return 1;
  }
}

/** config.json form of a config (HF names; the extension field only when it differs from MLA). */
/**
 * Fields Hugging Face types as floats. JSON has one number type, but transformers 5 validates config fields
 * strictly (`routed_scaling_factor` written as 1 fails: "expected float, got int"), so config.json writes these
 * with a decimal point even when they are whole.
 */
const FLOAT_FIELDS = new Set([
  'routed_scaling_factor',
  'rope_theta',
  'rms_norm_eps',
  'initializer_range',
  'aux_loss_alpha',
  'attention_dropout',
  'factor',
  'beta_fast',
  'beta_slow',
  'mscale',
  'mscale_all_dim',
]);

/** config.json text for a config: HF field names, float fields as floats, and the weights' torch_dtype. */
export function configJsonText(c: DeepseekV2Config, torchDtype: 'float32' | 'bfloat16' | 'float16' = 'float32'): string {
  const marker = '@@float@@';
  const text = JSON.stringify(
    { ...configToJson(c), torch_dtype: torchDtype },
    (key, v) => (FLOAT_FIELDS.has(key) && typeof v === 'number' && Number.isInteger(v) ? `${marker}${v}.0` : v),
    2,
  );
  return text.replace(new RegExp(`"${marker}(-?\\d+\\.0)"`, 'g'), '$1') + '\n';
}

export function configToJson(c: DeepseekV2Config): Json {
  const out: Json = { architectures: ['DeepseekV2ForCausalLM'], model_type: 'deepseek_v2', ...c };
  if (c.attention_type === 'mla') delete out['attention_type'];
  return out;
}
