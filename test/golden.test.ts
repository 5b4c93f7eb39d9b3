// Golden parity with DeepSeek's official reference (test/golden, copied from ../shared/golden): every case, with the
// tolerances of test/golden/README.md, on every backend, from F32 and BF16 weight files.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import * as T from '../src/node.js';
import { Checkpoint } from '../src/io/safetensors.js';
import { generateGreedy, generateWithoutCache } from '../src/infer/generate.js';
import { loadModel } from '../src/model/load.js';
import { paramCounts } from '../src/model/weights.js';
import { objective } from '../src/train/objective.js';
import { testBackends } from './helpers.js';

const GOLDEN = 'test/golden';
type Nested = number | Nested[];
const flat = (x: Nested): number[] => (Array.isArray(x) ? x.flat(Infinity as 1) : [x]) as number[];
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const cases = (name: string): any => JSON.parse(readFileSync(`${GOLDEN}/${name}/cases.json`, 'utf8'));

/** |got − want| ≤ atol + rtol·|want| element-wise; returns the max abs diff for the notes. */
function within(got: ArrayLike<number>, want: number[], atol: number, rtol: number, what: string): number {
  assert.equal(got.length, want.length, `${what}: ${got.length} values, want ${want.length}`);
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i]! - want[i]!);
    worst = Math.max(worst, err);
    if (!(err <= atol + rtol * Math.abs(want[i]!)))
      assert.fail(`${what}[${i}]: got ${got[i]}, want ${want[i]} (|err| ${err.toExponential(2)})`);
  }
  return worst;
}

/** Chosen experts equal as sets per token; weights compared expert by expert. */
function sameRouting(gotIdx: number[], gotW: number[], wantIdx: number[], wantW: number[], K: number, what: string): void {
  for (let n = 0; n < wantIdx.length / K; n++) {
    const g = gotIdx.slice(n * K, n * K + K);
    const w = wantIdx.slice(n * K, n * K + K);
    assert.deepEqual(
      [...g].sort((a, b) => a - b),
      [...w].sort((a, b) => a - b),
      `${what}: experts of token ${n}`,
    );
    for (let k = 0; k < K; k++) {
      const at = g.indexOf(w[k]!);
      const err = Math.abs(gotW[n * K + at]! - wantW[n * K + k]!);
      assert.ok(err <= 1e-5 + 1e-4 * Math.abs(wantW[n * K + k]!), `${what}: weight of expert ${w[k]} for token ${n}: |err| ${err}`);
    }
  }
}

for (const backend of testBackends()) {
  describe(`golden parity [${backend.name}]`, () => {
    for (const name of ['lite', 'full']) {
      for (const file of ['model.safetensors', 'model.bf16.safetensors']) {
        it(`${name} (${file}): logits, hidden states, router scores, experts and weights`, () => {
          const c = cases(name);
          const model = loadModel(`${GOLDEN}/${name}`, { weights: `${GOLDEN}/${name}/${file}`, trainable: false, backend });
          assert.equal(paramCounts(model.config).total_params, c.param_count);
          const out = T.noGrad(() => model.forward(T.intTensor(c.input_ids, undefined, { backend }), { outputHiddenStates: true }));
          within(out.logits.toArray(), flat(c.logits), 1e-4, 1e-4, 'logits');
          c.hidden_states.forEach((h: Nested, i: number) =>
            within(out.hiddenStates![i]!.toArray(), flat(h), 1e-4, 1e-4, `hidden_states[${i}]`),
          );
          assert.equal(out.router.length, c.moe.length);
          // eslint-disable-next-line @typescript-eslint/no-explicit-any
          c.moe.forEach((l: any, j: number) => {
            const r = out.router[j]!;
            assert.equal(r.layer, l.layer);
            within(r.scores.toArray(), flat(l.scores), 1e-5, 1e-4, `layer ${l.layer} scores`);
            sameRouting(
              r.indices.toArray(),
              r.weights.toArray(),
              flat(l.topk_idx),
              flat(l.topk_weight),
              l.topk_idx[0][0].length,
              `layer ${l.layer}`,
            );
          });
        });
      }
    }

    const genRuns: [string, object][] = [
      ['model.safetensors', { absorb: true }],
      ['model.safetensors', { absorb: false }],
      ['model.safetensors', { noCache: true }],
      ['model.bf16.safetensors', { absorb: true }],
    ];
    for (const [file, mode] of genRuns) {
      it(`gen (${file}): greedy tokens and step logits (${JSON.stringify(mode)})`, () => {
        const c = cases('gen');
        const model = loadModel(`${GOLDEN}/gen`, { weights: `${GOLDEN}/gen/${file}`, trainable: false, backend });
        const want = c.step_logits as number[][][];
        const ids =
          'noCache' in mode
            ? generateWithoutCache(model, c.prompt_ids, c.new_tokens, (s, logits) =>
                within(logits, [...want[0]![s]!, ...want[1]![s]!], 1e-4, 1e-4, `step ${s} logits`),
              )
            : generateGreedy(model, c.prompt_ids, {
                maxNewTokens: c.new_tokens,
                ...mode,
                onLogits: (r, _i, s, logits) => within(logits, want[Number(r)]![s]!, 1e-4, 1e-4, `prompt ${r} step ${s} logits`),
              });
        assert.deepEqual(ids, c.generated_ids);
        // the engine's batch of two (shared steps) must also match each prompt generated alone
        if (!('noCache' in mode))
          c.prompt_ids.forEach((p: number[], b: number) => {
            const alone = generateGreedy(model, [p], { maxNewTokens: c.new_tokens, ...mode });
            assert.deepEqual(alone[0], c.generated_ids[b]);
          });
      });
    }

    describe('train', () => {
      const c = cases('train');
      const dir = `${GOLDEN}/train`;
      const run = (): { model: ReturnType<typeof loadModel>; o: ReturnType<typeof objective> } => {
        const model = loadModel(dir, { backend });
        const o = objective(model, T.intTensor(c.input_ids, undefined, { backend }), T.intTensor(c.labels, undefined, { backend }), c.aux);
        return { model, o };
      };

      /** AdamW with the golden case's settings (clip, then a decoupled-decay step). */
      const goldenAdamW = (model: ReturnType<typeof loadModel>): T.AdamW => {
        const a = c.adamw;
        return new T.AdamW(model.parameters(), {
          lr: a.lr,
          beta1: a.beta1,
          beta2: a.beta2,
          eps: a.eps,
          weightDecay: a.weight_decay,
          maxGradNorm: a.max_grad_norm,
        });
      };

      it('cross-entropy, token losses and the three balance losses with their statistics', () => {
        const { o } = run();
        within([o.lossCe.item()], [c.loss_ce], 1e-5, 1e-5, 'loss_ce');
        within([o.lossTotal.item()], [c.loss_total], 1e-5, 1e-5, 'loss_total');
        const tokenCe = o.tokenCe.toArray().filter((_, i) => i % c.seqlen !== c.seqlen - 1);
        within(tokenCe, flat(c.token_ce), 1e-4, 1e-4, 'token_ce');
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        c.aux.layers.forEach((want: any, i: number) => {
          const got = o.balance[i]!;
          assert.equal(got.layer, want.layer);
          for (const k of ['L_exp', 'L_dev', 'L_comm', 'exp_seq', 'dev_seq', 'comm_seq'] as const) {
            within(got[k].toArray(), flat(want[k]), 0, 1e-5, `layer ${want.layer} ${k}`);
          }
          within(got.P.toArray(), flat(want.P), 1e-6, 1e-5, 'P');
          within(got.P_dev.toArray(), flat(want.P_dev), 1e-6, 1e-5, 'P_dev');
          for (const k of ['f', 'f_dev', 'f_comm'] as const) within(got[k].toArray(), flat(want[k]), 0, 1e-6, `layer ${want.layer} ${k}`);
          // HF's seq_aux is L_exp with aux_loss_alpha in place of α1
          within([(got.L_exp.item() * c.hf_seq_aux.aux_loss_alpha) / c.aux.alpha1], [c.hf_seq_aux.per_layer[i]], 0, 1e-5, 'hf_seq_aux');
        });
      });

      for (const [file, lossKey] of [
        ['grads.safetensors', 'lossTotal'],
        ['grads_ce_only.safetensors', 'lossCe'],
      ] as const) {
        it(`every gradient of ${lossKey} matches ${file} (2e-4 · max|want| per tensor)`, () => {
          const { model, o } = run();
          o[lossKey].backward();
          const g = Checkpoint.open(`${dir}/${file}`);
          let ss = 0;
          for (const [name, p] of model.params.map) {
            const want = Array.from(g.read(name));
            const got = p.grad!.toArray();
            const maxWant = Math.max(...want.map(Math.abs));
            within(got, want, 2e-4 * maxWant, 0, name);
            ss += got.reduce((s, v) => s + v * v, 0);
          }
          g.close();
          const wantNorm = lossKey === 'lossTotal' ? c.grads.global_norm : c.grads.global_norm_ce_only;
          within([Math.sqrt(ss)], [wantNorm], 0, 1e-5, 'global grad norm');
        });
      }

      it('one clipped AdamW step from the golden gradients matches params_after_step (1e-6 + 1e-6·|want|)', () => {
        const model = loadModel(dir, { backend });
        const g = Checkpoint.open(`${dir}/grads.safetensors`);
        for (const [name, p] of model.params.map) p.grad = T.tensor(g.read(name), p.shape, { backend });
        g.close();
        const a = c.adamw;
        const opt = goldenAdamW(model);
        within([opt.step()], [a.grad_norm_preclip], 0, 1e-5, 'grad_norm_preclip');
        const want = Checkpoint.open(`${dir}/params_after_step.safetensors`);
        for (const [name, p] of model.params.map) within(p.toArray(), Array.from(want.read(name)), 1e-6, 1e-6, name);
        want.close();
      });

      it('one step with our own gradients matches params_after_step within the README slack; loss_ce_after', () => {
        const { model, o } = run();
        o.lossTotal.backward();
        const a = c.adamw;
        const opt = goldenAdamW(model);
        opt.step();
        const gold = Checkpoint.open(`${dir}/grads.safetensors`);
        const want = Checkpoint.open(`${dir}/params_after_step.safetensors`);
        for (const [name, p] of model.params.map) {
          const g = gold.read(name);
          const w = want.read(name);
          const got = p.f32();
          const maxG = g.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
          const tau = a.clip_coef * 2e-4 * maxG;
          for (let i = 0; i < w.length; i++) {
            const gc = a.clip_coef * Math.abs(g[i]!);
            const slack = g[i] === 0 ? 0 : tau > gc / 2 ? 2 : (2 * a.eps * tau) / (gc + a.eps) ** 2;
            const err = Math.abs(got[i]! - w[i]!);
            assert.ok(err <= 1e-6 + 1e-6 * Math.abs(w[i]!) + a.lr * slack, `${name}[${i}]: got ${got[i]}, want ${w[i]}`);
          }
        }
        gold.close();
        want.close();
        const after = loadModel(dir, { weights: `${dir}/params_after_step.safetensors`, trainable: false, backend });
        const o2 = T.noGrad(() =>
          objective(after, T.intTensor(c.input_ids, undefined, { backend }), T.intTensor(c.labels, undefined, { backend }), c.aux),
        );
        within([o2.lossCe.item()], [c.loss_ce_after], 1e-5, 1e-5, 'loss_ce_after');
      });
    });
  });
}
