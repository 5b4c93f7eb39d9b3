// The acceptance checks of spec §11 (besides golden parity), config validation, and model-level invariants.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as T from '../src/node.js';
import { kvHeads, parseConfig } from '../src/model/config.js';
import { DeepseekV2ForCausalLM } from '../src/model/model.js';
import { route } from '../src/model/moe.js';
import { Params } from '../src/model/params.js';
import { preset } from '../src/model/presets.js';
import { ropeInvFreq, softmaxScale, yarnRange } from '../src/model/rope.js';
import { expectedTensors, inventoryProblems, kvCacheElementsPerToken, paramCounts } from '../src/model/weights.js';
import { balanceLosses } from '../src/train/losses.js';
import { assertClose, testBackends } from './helpers.js';

describe('from-scratch initialisation', () => {
  it('matrices get normal(0, initializer_range), norms 1, the router gate kaiming-uniform U(±1/√d) as in MoEGate', () => {
    const c = preset('small');
    const m = DeepseekV2ForCausalLM.init(c, { seed: 5, backend: T.loadBackend('ts') });
    const stats = (name: string): { std: number; maxAbs: number } => {
      const v = m.params.get(name).toArray();
      const mean = v.reduce((a, b) => a + b, 0) / v.length;
      return { std: Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length), maxAbs: Math.max(...v.map(Math.abs)) };
    };
    const q = stats('model.layers.1.self_attn.q_proj.weight');
    assert.ok(Math.abs(q.std - c.initializer_range) < 0.05 * c.initializer_range, `q_proj std ${q.std}`);
    const bound = 1 / Math.sqrt(c.hidden_size);
    const g = stats('model.layers.1.mlp.gate.weight');
    assert.ok(g.maxAbs <= bound && g.maxAbs > 0.95 * bound, `gate max |w| ${g.maxAbs} vs bound ${bound}`);
    assert.ok(Math.abs(g.std - bound / Math.sqrt(3)) < 0.05 * bound, `gate std ${g.std}`);
    assert.deepEqual([...new Set(m.params.get('model.norm.weight').toArray())], [1]);
  });
});

describe('spec §11 acceptance checks (backend-independent)', () => {
  it('§11.1 RoPE: interleaved pairs equal HF permute-then-rotate-half; rotate-half on raw layout differs', () => {
    const rng = new T.Rng(3);
    const d = 8;
    const inv = Array.from({ length: d / 2 }, (_, k) => 10000 ** ((-2 * k) / d));
    const interleaved = (x: number[], p: number): number[] => {
      const y = [...x];
      for (let k = 0; k < d / 2; k++) {
        const [c, s] = [Math.cos(p * inv[k]!), Math.sin(p * inv[k]!)];
        y[2 * k] = x[2 * k]! * c - x[2 * k + 1]! * s;
        y[2 * k + 1] = x[2 * k]! * s + x[2 * k + 1]! * c;
      }
      return y;
    };
    const rotateHalf = (x: number[], p: number): number[] => {
      const h = d / 2;
      return x.map((v, i) => {
        const th = p * inv[i % h]!;
        const rot = i < h ? -x[i + h]! : x[i - h]!;
        return v * Math.cos(th) + rot * Math.sin(th);
      });
    };
    const permute = (x: number[]): number[] => [...x.filter((_, i) => i % 2 === 0), ...x.filter((_, i) => i % 2 === 1)];
    const dot = (a: number[], b: number[]): number => a.reduce((s, v, i) => s + v * b[i]!, 0);
    const x = Array.from({ length: d }, () => rng.normal());
    const y = Array.from({ length: d }, () => rng.normal());
    const [p, q] = [5, 11];
    const ours = dot(interleaved(x, p), interleaved(y, q));
    assert.ok(Math.abs(ours - dot(rotateHalf(permute(x), p), rotateHalf(permute(y), q))) < 1e-12);
    assertClose(rotateHalf(permute(x), p), permute(interleaved(x, p)), 1e-12, 0, 'HF output = de-interleaved ours');
    assert.ok(Math.abs(ours - dot(rotateHalf(x, p), rotateHalf(y, q))) > 1e-3, 'rotate-half on raw weights must differ');
    // and the engine's rope op is the interleaved one
    const be = { backend: 'ts' };
    const cos = T.tensor([inv.map((f) => Math.cos(p * f))], undefined, be);
    const sin = T.tensor([inv.map((f) => Math.sin(p * f))], undefined, be);
    assertClose(T.rope(T.tensor(x, [1, 1, 1, d], be), cos, sin).toArray(), interleaved(x, p), 1e-6, 1e-6);
  });

  it('§11.3 YaRN: correction range, inv_freq table and softmax scale', () => {
    const lite = preset('deepseek-v2-lite');
    assert.deepEqual(yarnRange(lite.rope_scaling!, 64, 10000), { low: 10, high: 23 });
    const inv = ropeInvFreq(lite);
    const table: [number, number][] = [
      [0, 1.0],
      [1, 7.498942093e-1],
      [10, 5.623413252e-2],
      [11, 3.900692657e-2],
      [15, 8.334508951e-3],
      [16, 5.5e-3],
      [20, 7.90569415e-4],
      [22, 1.77827941e-4],
      [23, 3.33380358e-5],
      [31, 3.33380358e-6],
    ];
    for (const [k, v] of table) assert.ok(Math.abs(inv[k]! - v) <= 1e-7 * v + 1e-15, `inv_freq[${k}] = ${inv[k]} vs ${v}`);
    assert.ok(Math.abs(softmaxScale(lite) - 0.1147213868) < 1e-9);
    const all1 = parseConfig({ ...lite, rope_scaling: { ...lite.rope_scaling!, mscale_all_dim: 1.0 } });
    assert.ok(Math.abs(softmaxScale(all1) - 0.1352337789) < 1e-9);
    assert.ok(Math.abs(softmaxScale(parseConfig({ ...lite, rope_scaling: null })) - 0.0721687836) < 1e-9);
  });

  it('§11.4–11.5 parameter and tensor counts of the released shapes', () => {
    const lite = paramCounts(preset('deepseek-v2-lite'));
    assert.equal(lite.total_params, 15_706_484_224);
    assert.equal(lite.activated_params, 2_451_435_008);
    assert.equal(lite.activated_params_including_embedding, 2_661_150_208);
    assert.equal(lite.activated_params_excluding_embeddings_and_lm_head, 2_241_719_808);
    assert.equal(lite.tensor_count, 5_291);
    const v2 = paramCounts(preset('deepseek-v2'));
    assert.equal(v2.total_params, 235_741_434_880);
    assert.equal(v2.activated_params, 20_851_512_320);
    assert.equal(v2.tensor_count, 29_102);
  });

  it('§11.5 inventory check names missing, unexpected and mis-shaped tensors', () => {
    const c = preset('tiny');
    const have = new Map(expectedTensors(c).map((t) => [t.name, { shape: t.shape }]));
    assert.deepEqual(inventoryProblems(c, have), []);
    have.delete('lm_head.weight');
    have.set('model.layers.1.mlp.gate.e_score_correction_bias', { shape: [4] });
    have.set('model.norm.weight', { shape: [31] });
    const p = inventoryProblems(c, have);
    assert.equal(p.length, 3);
    assert.match(p.join('\n'), /missing tensor 'lm_head.weight'/);
    assert.match(p.join('\n'), /unexpected tensor 'model.layers.1.mlp.gate.e_score_correction_bias'/);
    assert.match(p.join('\n'), /'model.norm.weight' has shape \[31\], expected \[32\]/);
  });

  it('§11.6 KV cache: Lite caches 576·27 = 15,552 elements per token, MHA 110,592; V2 34,560', () => {
    const lite = kvCacheElementsPerToken(preset('deepseek-v2-lite'));
    assert.equal(lite.mla, 15_552);
    assert.equal(lite.mha, 110_592);
    assert.equal(lite.mqa, 2 * 128 * 27);
    assert.equal(kvCacheElementsPerToken(preset('deepseek-v2')).mla, 34_560);
  });

  it('config validation gives one clear error per problem', () => {
    const tiny = preset('tiny');
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ topk_method: 'gready' }, /unknown topk_method "gready"/],
      [{ scoring_func: 'sigmoid' }, /unknown scoring_func/],
      [{ n_group: 3 }, /not divisible by n_group/],
      [{ topk_group: 3 }, /topk_group \(3\) exceeds n_group \(2\)/],
      [{ hidden_size: -4 }, /'hidden_size' must be ≥ 1/],
      [{ kv_lora_rank: undefined }, /'kv_lora_rank' must be an integer/],
      [{ hidden_act: 'gelu' }, /unknown hidden_act/],
      [{ foo: 1 }, /unknown field 'foo'/],
      [{ tie_word_embeddings: true }, /tie_word_embeddings must be false/],
      [{ rope_scaling: { type: 'linear', factor: 2 } }, /not supported/],
      [{ qk_rope_head_dim: 3 }, /must be even/],
    ];
    for (const [patch, re] of bad) {
      const json: Record<string, unknown> = { ...tiny, ...patch };
      for (const k of Object.keys(patch)) if (patch[k] === undefined) json[k] = null;
      assert.throws(() => parseConfig(json), re, JSON.stringify(patch));
    }
    // accepted spellings: q_lora_rank 0 means none; rope_type instead of type; integer rope_theta
    const ok = parseConfig({
      ...tiny,
      q_lora_rank: 0,
      rope_theta: 10000,
      rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 16 },
    });
    assert.equal(ok.q_lora_rank, null);
    assert.equal(ok.rope_scaling!.type, 'yarn');
  });
});

for (const backend of testBackends()) {
  describe(`model invariants [${backend.name}]`, () => {
    const mk = (patch: Record<string, unknown> = {}, seed = 1): DeepseekV2ForCausalLM =>
      DeepseekV2ForCausalLM.init(preset('tiny', patch), { seed, std: 0.2, backend });
    const ids = (rows: number[][]): T.Tensor => T.intTensor(rows, undefined, { backend });

    it('§11.2 absorbed MLA equals naive MLA (H 3, d_nope 8, d_rope 4, d_v 6, d_c 10, d 16, T 5), with and without q_lora', () => {
      for (const q_lora_rank of [null, 12]) {
        const m = mk({
          hidden_size: 16,
          num_attention_heads: 3,
          num_key_value_heads: 3,
          qk_nope_head_dim: 8,
          qk_rope_head_dim: 4,
          v_head_dim: 6,
          kv_lora_rank: 10,
          q_lora_rank,
        });
        const x = ids([
          [3, 9, 27, 1, 40],
          [5, 5, 8, 13, 2],
        ]);
        const naive = T.noGrad(() => m.forward(x, { cache: m.newCache(2, 5) }).logits.toArray());
        const absorbed = T.noGrad(() => m.forward(x, { cache: m.newCache(2, 5), absorb: true }).logits.toArray());
        const plain = T.noGrad(() => m.forward(x).logits.toArray());
        assertClose(absorbed, naive, 1e-5, 1e-5, 'absorbed vs naive');
        assertClose(naive, plain, 1e-6, 1e-6, 'cached prefill vs no cache');
      }
    });

    for (const attention_type of ['mla', 'mha', 'gqa', 'mqa'] as const) {
      it(`${attention_type}: decoding with the cache equals recomputing the whole sequence`, () => {
        const patch: Record<string, unknown> = { attention_type };
        if (attention_type !== 'mla')
          Object.assign(patch, { qk_nope_head_dim: 4, qk_rope_head_dim: 4, v_head_dim: 8, num_attention_heads: 4, num_key_value_heads: 2 });
        if (attention_type === 'mla')
          patch['rope_scaling'] = { type: 'yarn', factor: 4, original_max_position_embeddings: 4, mscale: 0.707, mscale_all_dim: 0.707 };
        const m = mk(patch, 7);
        const seq = [[4, 8, 15, 16, 23, 42, 7, 9]];
        const full = T.noGrad(() => m.forward(ids(seq)).logits);
        const cache = m.newCache(1, 8);
        const steps: number[] = [];
        T.noGrad(() => {
          steps.push(...m.forward(ids([seq[0]!.slice(0, 3)]), { cache }).logits.toArray());
          for (let t = 3; t < 8; t++)
            steps.push(...m.forward(ids([[seq[0]![t]!]]), { cache, absorb: attention_type === 'mla' }).logits.toArray());
        });
        assertClose(steps, full.toArray(), 1e-5, 1e-5, 'cached decode vs recompute');
        // spec §4.1/§8.3: MLA caches kv_lora_rank + qk_rope_head_dim floats per token per layer; the baselines K and V
        const c = m.config;
        const perLayer =
          attention_type === 'mla' ? c.kv_lora_rank + c.qk_rope_head_dim : 2 * kvHeads(c) * (c.qk_nope_head_dim + c.qk_rope_head_dim);
        assert.equal(cache.bytesUsed(), 4 * perLayer * c.num_hidden_layers * 8);
      });
    }

    it('the MLA cache holds exactly (kv_lora_rank + qk_rope_head_dim) floats per token per layer', () => {
      const m = mk();
      const cache = m.newCache(2, 6);
      T.noGrad(() =>
        m.forward(
          ids([
            [1, 2, 3],
            [4, 5, 6],
          ]),
          { cache },
        ),
      );
      assert.equal(cache.width, 16 + 4);
      assert.equal(cache.bytesUsed(), 4 * 20 * 2 * 3 * 2);
    });

    it('§11.7 routing on a hand-made 8-expert gate: greedy vs group-limited (group score = max), scaled weights', () => {
      // logits = x·Wᵀ with x = 1 and W diagonal-free: expert i gets logit z[i]
      const z = [3.0, 2.8, 2.9, 0.1, 0.2, 0.3, 0.4, 0.5];
      const w = new Params();
      w.set(
        'g.gate.weight',
        T.tensor(
          z.map((v) => [v]),
          [8, 1],
          { backend },
        ),
      );
      const x = T.ones([1, 1], { backend });
      const base = { n_routed_experts: 8, num_experts_per_tok: 2, routed_scaling_factor: 2.5, hidden_size: 1 };
      const greedy = route(preset('tiny', { ...base, topk_method: 'greedy', n_group: 1, topk_group: 1 }), w, 'g', 1, x);
      const e = z.map(Math.exp);
      const sum = e.reduce((s, v) => s + v, 0);
      assert.deepEqual(greedy.indices.toArray(), [0, 2]);
      assertClose(greedy.weights.toArray(), [(2.5 * e[0]!) / sum, (2.5 * e[2]!) / sum], 1e-6, 1e-6);
      const limited = route(preset('tiny', { ...base, topk_method: 'group_limited_greedy', n_group: 4, topk_group: 1 }), w, 'g', 1, x);
      assert.deepEqual(limited.indices.toArray(), [0, 1], 'both experts of the best group');
      assertClose(limited.weights.toArray(), [(2.5 * e[0]!) / sum, (2.5 * e[1]!) / sum], 1e-6, 1e-6);
    });

    it('§11.8 balance losses: 1 at perfect balance, N_r/K_r when collapsed, gradient only through P', () => {
      const c = preset('tiny', { n_routed_experts: 4, num_experts_per_tok: 1, n_group: 2, topk_group: 1 });
      const coef = { alpha1: 1, alpha2: 1, alpha3: 1 };
      // uniform: every expert chosen once across T = 4 tokens, all scores 1/4
      const uniform = {
        layer: 1,
        scores: T.full([4, 4], 0.25, { backend }),
        indices: T.intTensor([[0], [1], [2], [3]], undefined, { backend }),
        chosen: [0, 1, 2, 3],
        weights: T.zeros([4, 1], { backend }),
        dropped: 0,
        load: [],
      };
      const u = balanceLosses(c, uniform, 1, 4, coef);
      assertClose([u.L_exp.item(), u.L_dev.item(), u.L_comm.item()], [1, 1, 1], 1e-6, 1e-6);
      // collapsed on expert 0 with P_0 → 1
      const collapsed = {
        ...uniform,
        scores: T.tensor(
          Array.from({ length: 4 }, () => [1, 0, 0, 0]),
          undefined,
          { backend },
        ),
        indices: T.intTensor([[0], [0], [0], [0]], undefined, { backend }),
        chosen: [0, 0, 0, 0],
      };
      assertClose([balanceLosses(c, collapsed, 1, 4, coef).L_exp.item()], [4 / 1], 1e-6, 1e-6);
      // gradient check with the selection held fixed: differentiate through the scores only
      const idx = T.intTensor([[1], [0], [3], [1], [2], [0]], undefined, { backend });
      const logits = T.randn([6, 4], { backend, seed: 9, requiresGrad: true });
      const r = T.gradcheck(
        (l) => {
          const b = balanceLosses(
            c,
            {
              layer: 1,
              scores: T.softmax(l!),
              indices: idx,
              chosen: idx.toArray(),
              weights: T.zeros([6, 1], { backend }),
              dropped: 0,
              load: [],
            },
            2,
            3,
            {
              alpha1: 0.3,
              alpha2: 0.5,
              alpha3: 0.2,
            },
          );
          return T.add(T.add(b.L_exp, b.L_dev), b.L_comm);
        },
        [logits],
      );
      assert.ok(r.ok, r.worst);
    });

    it('a training step on a random model reduces the loss and repeats bit for bit', () => {
      const run = (): number[] => {
        const m = mk({}, 3);
        const opt = new T.AdamW(m.parameters(), { lr: 1e-2, maxGradNorm: 1 });
        const x = ids([
          [1, 2, 3, 4, 5, 6, 7, 8],
          [8, 7, 6, 5, 4, 3, 2, 1],
        ]);
        const losses: number[] = [];
        for (let s = 0; s < 5; s++) {
          opt.zeroGrad();
          const { logits } = m.forward(x);
          const loss = T.crossEntropy(T.reshape(T.narrow(logits, 1, 0, 7), [14, 64]), T.reshape(T.contiguous(T.narrow(x, 1, 1, 7)), [14]));
          loss.backward();
          opt.step();
          losses.push(loss.item());
        }
        return losses;
      };
      const a = run();
      assert.ok(a[4]! < a[0]!, `loss ${a[0]} → ${a[4]}`);
      assert.deepEqual(run(), a);
    });

    it('a left-padded batch (positions from the mask, padded keys masked) equals single-sequence results (§2.4)', () => {
      const m = mk(
        { rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 4, mscale: 0.707, mscale_all_dim: 0.707 } },
        5,
      );
      const a = [7, 3, 9, 12, 5];
      const b = [4, 8, 2];
      const pad = 2;
      const ninf = -Infinity;
      // row 1 is left-padded by 2: its real tokens sit at positions 0..2 and never see the pad keys
      const mask = T.tensor(
        [0, 1].map((r) => Array.from({ length: 5 }, () => Array.from({ length: 5 }, (_, j) => (r === 1 && j < pad ? ninf : 0)))),
        undefined,
        { backend },
      );
      const out = T.noGrad(
        () =>
          m.forward(ids([a, [0, 0, ...b]]), {
            positions: [
              [0, 1, 2, 3, 4],
              [0, 0, 0, 1, 2],
            ],
            mask,
          }).logits,
      );
      const single = T.noGrad(() => m.forward(ids([b])).logits.toArray());
      const V = 64;
      assertClose(out.toArray().slice((5 + pad) * V), single, 1e-5, 1e-5, 'padded row');
      assertClose(
        out.toArray().slice(0, 5 * V),
        T.noGrad(() => m.forward(ids([a])).logits.toArray()),
        1e-5,
        1e-5,
        'unpadded row',
      );
    });

    it('forward rejects bad input clearly', () => {
      const m = mk();
      assert.throws(() => m.forward(T.tensor([[1, 2]], undefined, { backend })), /int32 \[batch, seq\]/);
      assert.throws(() => m.forward(ids([[1, 64]])), /outside \[0, 64\)/);
      const cache = m.newCache(1, 2);
      assert.throws(() => T.noGrad(() => m.forward(ids([[1, 2, 3]]), { cache })), /KV cache is full/);
    });
  });
}
