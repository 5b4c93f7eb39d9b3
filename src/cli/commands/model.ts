// Model commands that read and write JSON: inspect, logits, generate, step.
import { existsSync, mkdirSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { noGrad } from '../../autograd/graph.js';
import { generate } from '../../infer/generate.js';
import { samplingParams } from '../../infer/sampler.js';
import { Checkpoint, writeSafetensors } from '../../io/safetensors.js';
import { checkInventory, loadModel, readConfig, saveModel } from '../../model/load.js';
import { preset } from '../../model/presets.js';
import { kvCacheElementsPerToken, paramCounts } from '../../model/weights.js';
import { AdamW, hasGrad } from '../../optim/optimizer.js';
import { intTensor } from '../../tensor/tensor.js';
import type { Objective } from '../../train/objective.js';
import { trainStep } from '../../train/step.js';
import { parseFlags, UsageError } from '../args.js';
import { readJson, required, tokenMatrix, writeJson } from '../io.js';

const MODEL = { type: 'string', help: 'a Hugging Face model directory (config.json + safetensors)' } as const;
const WEIGHTS = { type: 'string', help: 'a weights file or index.json to use instead of the directory’s' } as const;

/** The flags every model command shares: --model (required), --weights, and the named required file flags. */
function modelFlags<K extends string>(
  flags: Record<string, unknown>,
  files: readonly K[],
): { dir: string; weights: string | undefined } & Record<K, string> {
  const out = { dir: required(flags['model'] as string | undefined, 'model'), weights: flags['weights'] as string | undefined } as {
    dir: string;
    weights: string | undefined;
  } & Record<K, string>;
  for (const f of files) (out as Record<string, unknown>)[f] = required(flags[f] as string | undefined, f);
  return out;
}

/** dsv2 inspect (<model-dir> | --preset NAME): parameter counts and KV-cache sizes (spec §8). */
export function runInspect(argv: string[]): number {
  const { flags, positional } = parseFlags(argv, { preset: { type: 'string', help: 'a preset name' } });
  if ((positional.length === 1) === (flags['preset'] !== undefined))
    throw new UsageError('give a model directory or --preset NAME (one of them)');
  const dir = positional[0];
  const config = dir ? readConfig(dir) : preset(flags['preset'] as string);
  if (dir && (existsSync(join(dir, 'model.safetensors')) || existsSync(join(dir, 'model.safetensors.index.json')))) {
    const ck = Checkpoint.open(dir); // headers only: tensors are not read
    checkInventory(config, ck, dir);
    ck.close();
  }
  const counts = paramCounts(config);
  const kv = kvCacheElementsPerToken(config);
  console.log(
    JSON.stringify({
      total_params: counts.total_params,
      activated_params: counts.activated_params,
      tensor_count: counts.tensor_count,
      kv_cache_elements_per_token: { mla: kv.mla, mha: kv.mha, gqa: kv.gqa, mqa: kv.mqa },
      conventions: {
        activated_params: 'parameters touched per token, excluding the input embedding (spec §8.1)',
        activated_params_including_embedding: counts.activated_params_including_embedding,
        activated_params_excluding_embeddings_and_lm_head: counts.activated_params_excluding_embeddings_and_lm_head,
        kv_cache: `summed over layers; MHA/GQA/MQA with head dim qk_nope_head_dim; gqa with ${kv.gqa_groups} KV groups`,
      },
    }),
  );
  return 0;
}

/** dsv2 logits --model DIR --input ids.json --output out.json */
export function runLogits(argv: string[]): number {
  const { flags, positional } = parseFlags(argv, {
    model: MODEL,
    weights: WEIGHTS,
    input: { type: 'string', help: 'ids.json' },
    output: { type: 'string', help: 'out.json' },
  });
  if (positional.length) throw new UsageError(`unexpected argument '${positional[0]}'`);
  const { dir, weights, input, output } = modelFlags(flags, ['input', 'output'] as const);
  const model = loadModel(dir, { weights, trainable: false });
  const j = readJson(input, 'input') as { input_ids?: unknown };
  const ids = tokenMatrix(j?.input_ids, 'input_ids', model.config.vocab_size, input);
  if (ids.some((r) => r.includes(-100))) throw new Error(`${input}: "input_ids" may not contain -100`);
  const logits = noGrad(() => model.forward(intTensor(ids, undefined, { backend: model.backend })).logits);
  writeJson(output, { logits: logits.toNested() });
  return 0;
}

/** dsv2 generate --model DIR --input ids.json --max-new-tokens N [--greedy | --temperature T …] --output out.json */
export function runGenerate(argv: string[]): number {
  const { flags, positional } = parseFlags(argv, {
    model: MODEL,
    weights: WEIGHTS,
    input: { type: 'string', help: 'ids.json with "input_ids" (prompts of any lengths)' },
    output: { type: 'string', help: 'out.json' },
    'max-new-tokens': { type: 'int', help: 'tokens to generate' },
    greedy: { type: 'bool', help: 'argmax decoding (the default when --temperature is not given)' },
    temperature: { type: 'number', help: 'sample at this temperature instead of greedy' },
    'top-k': { type: 'int', help: 'with --temperature: keep the k most likely tokens' },
    'top-p': { type: 'number', help: 'with --temperature: nucleus mass' },
    seed: { type: 'int', help: 'with --temperature: random seed (default 0)' },
    'stop-at-eos': { type: 'bool', help: 'end a sequence at the config’s eos_token_id (default: exactly N tokens)' },
    naive: { type: 'bool', help: 'decode without weight absorption' },
  });
  if (positional.length) throw new UsageError(`unexpected argument '${positional[0]}'`);
  const { dir, weights, input, output } = modelFlags(flags, ['input', 'output'] as const);
  const n = required(flags['max-new-tokens'] as number | undefined, 'max-new-tokens');
  if (n < 1) throw new UsageError(`--max-new-tokens must be ≥ 1, got ${n}`);
  const sampled = flags['temperature'] !== undefined;
  if (flags['greedy'] && sampled) throw new UsageError('--greedy and --temperature exclude each other');
  for (const f of ['top-k', 'top-p', 'seed'])
    if (flags[f] !== undefined && !sampled) throw new UsageError(`--${f} goes with --temperature`);
  const model = loadModel(dir, { weights, trainable: false });
  const j = readJson(input, 'input') as { input_ids?: unknown; prompt_ids?: unknown };
  const key = j?.input_ids !== undefined ? 'input_ids' : 'prompt_ids';
  const ids = tokenMatrix(j?.[key], key, model.config.vocab_size, input, true);
  for (const p of ids)
    if (p.length + n > model.config.max_position_embeddings)
      throw new UsageError(
        `a prompt of ${p.length} tokens + ${n} new ones exceeds max_position_embeddings ${model.config.max_position_embeddings}`,
      );
  let params;
  try {
    params = samplingParams({
      temperature: sampled ? (flags['temperature'] as number) : 0,
      topK: flags['top-k'] as number | undefined,
      topP: flags['top-p'] as number | undefined,
      seed: (flags['seed'] as number | undefined) ?? 0,
      maxTokens: n,
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const out = generate(model, ids, { maxNewTokens: n, params, absorb: !flags['naive'], stopAtEos: flags['stop-at-eos'] === true });
  writeJson(output, { generated_ids: out });
  return 0;
}

interface StepBatch {
  input_ids?: unknown;
  labels?: unknown;
  aux?: { alpha1?: unknown; alpha2?: unknown; alpha3?: unknown };
  adamw?: Record<string, unknown>;
}

function numberField(obj: Record<string, unknown> | undefined, key: string, where: string): number {
  const v = obj?.[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${where}: "${key}" must be a number`);
  return v;
}

/** dsv2 step --model DIR --batch batch.json --output DIR: one verification training step (golden `train` layout). */
export function runStep(argv: string[]): number {
  const { flags, positional } = parseFlags(argv, {
    model: MODEL,
    weights: WEIGHTS,
    batch: { type: 'string', help: 'batch.json' },
    output: { type: 'string', help: 'output directory' },
  });
  if (positional.length) throw new UsageError(`unexpected argument '${positional[0]}'`);
  const { dir, weights, batch: batchPath, output: out } = modelFlags(flags, ['batch', 'output'] as const);
  const model = loadModel(dir, { weights });
  const batch = readJson(batchPath, 'batch') as StepBatch;
  const V = model.config.vocab_size;
  const ids = tokenMatrix(batch?.input_ids, 'input_ids', V, batchPath);
  const labels = tokenMatrix(batch?.labels, 'labels', V, batchPath);
  if (labels.length !== ids.length || labels[0]!.length !== ids[0]!.length) {
    throw new Error(
      `${batchPath}: "labels" is [${labels.length}][${labels[0]!.length}] but "input_ids" is [${ids.length}][${ids[0]!.length}]`,
    );
  }
  const aux = batch.aux as Record<string, unknown> | undefined;
  const coef = {
    alpha1: numberField(aux, 'alpha1', `${batchPath} aux`),
    alpha2: numberField(aux, 'alpha2', `${batchPath} aux`),
    alpha3: numberField(aux, 'alpha3', `${batchPath} aux`),
  };
  const a = (k: string): number => numberField(batch.adamw, k, `${batchPath} adamw`);
  const be = { backend: model.backend };
  const opt = new AdamW(model.parameters(), {
    lr: a('lr'),
    beta1: a('beta1'),
    beta2: a('beta2'),
    eps: a('eps'),
    weightDecay: a('weight_decay'),
    maxGradNorm: a('max_grad_norm'),
  });
  mkdirSync(out, { recursive: true });
  let o: Objective | null = null;
  const { gradNorm } = trainStep(model, opt, () => ({ x: intTensor(ids, undefined, be), y: intTensor(labels, undefined, be) }), {
    coef,
    arena: null,
    onMicro: (obj) => (o = obj),
    // the gradients of the step, before the update
    beforeUpdate: () =>
      writeSafetensors(
        join(out, 'grads.safetensors'),
        model.params.names().map((name) => {
          const p = model.params.get(name);
          // read without p.grad's getter, which would turn "no gradient" into a zero one that AdamW then applies
          return { name, shape: p.shape, data: hasGrad(p) ? p.gradBuffer()!.buf.f32() : new Float32Array(p.size) };
        }),
      ),
  });
  const obj = o as unknown as Objective;
  saveModel(model, out);
  if (existsSync(join(dir, 'tokenizer.json'))) copyFileSync(join(dir, 'tokenizer.json'), join(out, 'tokenizer.json'));
  writeJson(join(out, 'losses.json'), {
    loss_ce: obj.lossCe.item(),
    loss_total: obj.lossTotal.item(),
    grad_norm: gradNorm,
    aux: { layers: obj.balance.map((l) => ({ layer: l.layer, L_exp: l.L_exp.item(), L_dev: l.L_dev.item(), L_comm: l.L_comm.item() })) },
  });
  return 0;
}
