// The tensor inventory of DeepseekV2ForCausalLM (spec §7.2): HF names and shapes built from the config, the
// parameter counts of spec §8, KV-cache sizes, and the check that names every missing, unexpected or mis-shaped tensor.
import { fmtShape } from '../tensor/shape.js';
import { isMoeLayer, type DeepseekV2Config } from './config.js';

export interface TensorSpec {
  name: string;
  shape: number[];
}

function attentionTensors(c: DeepseekV2Config, p: string): TensorSpec[] {
  const d = c.hidden_size;
  const H = c.num_attention_heads;
  const dqk = c.qk_nope_head_dim + c.qk_rope_head_dim;
  if (c.attention_type !== 'mla') {
    const Hkv = c.attention_type === 'mha' ? H : c.attention_type === 'mqa' ? 1 : c.num_key_value_heads;
    return [
      { name: `${p}.q_proj.weight`, shape: [H * dqk, d] },
      { name: `${p}.k_proj.weight`, shape: [Hkv * dqk, d] },
      { name: `${p}.v_proj.weight`, shape: [Hkv * c.v_head_dim, d] },
      { name: `${p}.o_proj.weight`, shape: [d, H * c.v_head_dim] },
    ];
  }
  const q: TensorSpec[] =
    c.q_lora_rank === null
      ? [{ name: `${p}.q_proj.weight`, shape: [H * dqk, d] }]
      : [
          { name: `${p}.q_a_proj.weight`, shape: [c.q_lora_rank, d] },
          { name: `${p}.q_a_layernorm.weight`, shape: [c.q_lora_rank] },
          { name: `${p}.q_b_proj.weight`, shape: [H * dqk, c.q_lora_rank] },
        ];
  return [
    ...q,
    { name: `${p}.kv_a_proj_with_mqa.weight`, shape: [c.kv_lora_rank + c.qk_rope_head_dim, d] },
    { name: `${p}.kv_a_layernorm.weight`, shape: [c.kv_lora_rank] },
    { name: `${p}.kv_b_proj.weight`, shape: [H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank] },
    { name: `${p}.o_proj.weight`, shape: [d, H * c.v_head_dim] },
  ];
}

function mlpTensors(p: string, d: number, width: number): TensorSpec[] {
  return [
    { name: `${p}.gate_proj.weight`, shape: [width, d] },
    { name: `${p}.up_proj.weight`, shape: [width, d] },
    { name: `${p}.down_proj.weight`, shape: [d, width] },
  ];
}

/** Every tensor of the model, in layer order. */
export function expectedTensors(c: DeepseekV2Config): TensorSpec[] {
  const d = c.hidden_size;
  const out: TensorSpec[] = [{ name: 'model.embed_tokens.weight', shape: [c.vocab_size, d] }];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}`;
    out.push({ name: `${p}.input_layernorm.weight`, shape: [d] });
    out.push(...attentionTensors(c, `${p}.self_attn`));
    out.push({ name: `${p}.post_attention_layernorm.weight`, shape: [d] });
    if (isMoeLayer(c, i)) {
      out.push({ name: `${p}.mlp.gate.weight`, shape: [c.n_routed_experts!, d] });
      for (let e = 0; e < c.n_routed_experts!; e++) out.push(...mlpTensors(`${p}.mlp.experts.${e}`, d, c.moe_intermediate_size));
      if (c.n_shared_experts) out.push(...mlpTensors(`${p}.mlp.shared_experts`, d, c.n_shared_experts * c.moe_intermediate_size));
    } else {
      out.push(...mlpTensors(`${p}.mlp`, d, c.intermediate_size));
    }
  }
  out.push({ name: 'model.norm.weight', shape: [d] }, { name: 'lm_head.weight', shape: [c.vocab_size, d] });
  return out;
}

const numel = (s: readonly number[]): number => s.reduce((p, x) => p * x, 1);

export interface ParamCounts {
  total_params: number;
  /** Parameters touched per token, excluding the input embedding (the paper's convention, spec §8.1). */
  activated_params: number;
  activated_params_including_embedding: number;
  activated_params_excluding_embeddings_and_lm_head: number;
  tensor_count: number;
}

export function paramCounts(c: DeepseekV2Config): ParamCounts {
  const tensors = expectedTensors(c);
  const total = tensors.reduce((p, t) => p + numel(t.shape), 0);
  // a token touches every tensor except the routed experts it was not sent to
  const expert = 3 * c.hidden_size * c.moe_intermediate_size;
  let unused = 0;
  for (let i = 0; i < c.num_hidden_layers; i++) {
    if (isMoeLayer(c, i)) unused += (c.n_routed_experts! - c.num_experts_per_tok!) * expert;
  }
  const all = total - unused;
  const embed = c.vocab_size * c.hidden_size;
  return {
    total_params: total,
    activated_params: all - embed,
    activated_params_including_embedding: all,
    activated_params_excluding_embeddings_and_lm_head: all - 2 * embed,
    tensor_count: tensors.length,
  };
}

/**
 * KV-cache elements per token summed over layers (spec §4.1, §8.3): MLA caches the latent and the rope key;
 * the baselines cache K and V with head dim d_h = qk_nope_head_dim (the paper's Table 1 convention); GQA uses
 * min(groups, heads) KV groups.
 */
export function kvCacheElementsPerToken(
  c: DeepseekV2Config,
  gqaGroups = 8,
): { mla: number; mha: number; gqa: number; mqa: number; gqa_groups: number } {
  const l = c.num_hidden_layers;
  const dh = c.qk_nope_head_dim;
  return {
    mla: (c.kv_lora_rank + c.qk_rope_head_dim) * l,
    mha: 2 * c.num_attention_heads * dh * l,
    gqa: 2 * gqaGroups * dh * l,
    mqa: 2 * dh * l,
    gqa_groups: gqaGroups,
  };
}

/** Compare a checkpoint's tensors with the inventory; returns every problem (empty when it matches). */
export function inventoryProblems(c: DeepseekV2Config, have: ReadonlyMap<string, { shape: readonly number[] }>): string[] {
  const problems: string[] = [];
  const want = new Map(expectedTensors(c).map((t) => [t.name, t.shape]));
  for (const [name, shape] of want) {
    const h = have.get(name);
    if (!h) problems.push(`missing tensor '${name}' ${fmtShape(shape)}`);
    else if (h.shape.join() !== shape.join()) problems.push(`tensor '${name}' has shape ${fmtShape(h.shape)}, expected ${fmtShape(shape)}`);
  }
  for (const name of have.keys()) if (!want.has(name)) problems.push(`unexpected tensor '${name}'`);
  return problems;
}
