// The engine's op-free decode step (src/infer/decode-plan.ts) against the model's own forward: for each config
// variant the decode path meets (query compression, YaRN, group-limited routing, normalised top-k weights, no shared
// experts, several dense layers, MoE every other layer) and batches of 1, 3 and 6 sequences, every step's logits
// within 1e-4, the same greedy tokens, and the same routed experts and gate weights in the events.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Engine, type TokenEvent } from '../src/infer/engine.js';
import { loadModel } from '../src/model/load.js';
import { parseConfig } from '../src/model/config.js';
import { DeepseekV2ForCausalLM } from '../src/model/model.js';
import { preset } from '../src/model/presets.js';
import { Rng } from '../src/tensor/random.js';
import { assertClose, testBackends } from './helpers.js';

function run(
  model: DeepseekV2ForCausalLM,
  plan: boolean,
  prompts: number[][],
  n: number,
): { events: TokenEvent[]; logits: Map<string, Float32Array[]> } {
  const out = runEngine(model, plan, prompts, n);
  assert.equal(out.planSteps > 0, plan, `plan steps: ${out.planSteps}`);
  return out;
}

function runEngine(
  model: DeepseekV2ForCausalLM,
  plan: boolean,
  prompts: number[][],
  n: number,
): { events: TokenEvent[]; logits: Map<string, Float32Array[]>; planSteps: number } {
  const logits = new Map<string, Float32Array[]>();
  const engine = new Engine(model, {
    blockSize: 4,
    decodePlan: plan,
    onLogits: (r, _i, s, l) => ((logits.get(r) ?? logits.set(r, []).get(r)!)[s] = Float32Array.from(l)),
  });
  prompts.forEach((p, i) => engine.add(`r${i}`, p, { temperature: 0, maxTokens: n, ignoreEos: true, returnExperts: true }));
  const events: TokenEvent[] = [];
  while (engine.hasWork) events.push(...engine.step());
  return { events, logits, planSteps: engine.stats().planSteps };
}

const variants: [string, Record<string, unknown>][] = [
  ['tiny (group-limited, one shared expert)', {}],
  ['query compression, YaRN, greedy routing, normalised top-k, scaling 2.5', {
    q_lora_rank: 12, topk_method: 'greedy', n_group: 1, topk_group: 1, norm_topk_prob: true, routed_scaling_factor: 2.5,
    rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 16, beta_fast: 32, beta_slow: 1, mscale: 0.707, mscale_all_dim: 0.707 },
  }],
  ['no shared experts, two dense layers, MoE every other layer', { n_shared_experts: 0, num_hidden_layers: 4, first_k_dense_replace: 2, moe_layer_freq: 2 }],
]; // prettier-ignore

for (const backend of testBackends()) {
  describe(`decode plan [${backend.name}]`, () => {
    for (const [name, over] of variants) {
      it(`${name}: logits, tokens and routing equal the model's forward`, () => {
        const c = parseConfig({ ...preset('tiny'), vocab_size: 96, max_position_embeddings: 256, ...over });
        const model = DeepseekV2ForCausalLM.init(c, { seed: 2, std: 0.3, backend });
        const rng = new Rng(1);
        // batches of 3, of 1 (the latent's contiguous path) and of 6 (token groups of 4 in the absorbed kernel, and a rest)
        for (const lens of [[3, 11, 6], [7], [3, 11, 6, 2, 9, 5]]) {
          const prompts = lens.map((len) => Array.from({ length: len }, () => rng.int(c.vocab_size)));
          const ref = run(model, false, prompts, 10);
          const got = run(model, true, prompts, 10);
          assert.deepEqual(
            got.events.map((e) => [e.requestId, e.id]),
            ref.events.map((e) => [e.requestId, e.id]),
          );
          for (const [r, steps] of ref.logits)
            steps.forEach((l, s) => assertClose(got.logits.get(r)![s]!, l, 1e-4, 1e-4, `${lens} ${r} step ${s}`));
          got.events.forEach((e, i) => {
            const want = ref.events[i]!.experts!;
            assert.deepEqual(
              e.experts!.map((l) => [l.layer, l.experts]),
              want.map((l) => [l.layer, l.experts]),
            );
            e.experts!.forEach((l, j) => assertClose(l.weights, want[j]!.weights, 1e-6, 1e-5, 'gate weights'));
          });
        }
      });
    }

    it('golden gen and full checkpoints: the plan reproduces the golden greedy tokens', () => {
      for (const dir of ['test/golden/gen', 'test/golden/full']) {
        const model = loadModel(dir, { trainable: false, backend });
        const rng = new Rng(4);
        const prompts = [5, 9].map((len) => Array.from({ length: len }, () => rng.int(model.config.vocab_size)));
        const ref = run(model, false, prompts, 8);
        const got = run(model, true, prompts, 8);
        assert.deepEqual(
          got.events.map((e) => e.id),
          ref.events.map((e) => e.id),
          dir,
        );
        for (const [r, steps] of ref.logits)
          steps.forEach((l, s) => assertClose(got.logits.get(r)![s]!, l, 1e-4, 1e-4, `${dir} ${r} step ${s}`));
      }
    });
  });
}
