// dsv2 inspect / logits / generate / step end to end on the golden checkpoints, and their error handling.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Checkpoint } from '../src/io/safetensors.js';

const G = 'test/golden';
const tmp = mkdtempSync(join(tmpdir(), 'dsv2-cli-'));

function dsv2(...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['bin/dsv2.js', ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function oneLineError(r: { code: number | null; err: string }, re: RegExp): void {
  assert.notEqual(r.code, 0);
  assert.equal(r.err.trim().split('\n').length, 1, r.err);
  assert.match(r.err, re);
  assert.doesNotMatch(r.err, /\n\s+at /);
}

describe('dsv2 model commands', () => {
  it('inspect --preset gives the spec §8 numbers', () => {
    const lite = JSON.parse(dsv2('inspect', '--preset', 'deepseek-v2-lite').out);
    assert.equal(lite.total_params, 15_706_484_224);
    assert.equal(lite.activated_params, 2_451_435_008);
    assert.equal(lite.tensor_count, 5_291);
    assert.deepEqual(lite.kv_cache_elements_per_token, { mla: 15_552, mha: 110_592, gqa: 55_296, mqa: 6_912 });
    const v2 = JSON.parse(dsv2('inspect', '--preset', 'deepseek-v2').out);
    assert.equal(v2.total_params, 235_741_434_880);
    assert.equal(v2.tensor_count, 29_102);
    const dir = JSON.parse(dsv2('inspect', `${G}/lite`).out);
    assert.equal(dir.total_params, 250_912);
  });

  it('logits reproduces the golden lite logits', () => {
    const c = JSON.parse(readFileSync(`${G}/lite/cases.json`, 'utf8'));
    writeFileSync(join(tmp, 'ids.json'), JSON.stringify({ input_ids: c.input_ids }));
    const r = dsv2('logits', '--model', `${G}/lite`, '--input', join(tmp, 'ids.json'), '--output', join(tmp, 'out.json'));
    assert.equal(r.code, 0, r.err);
    const got = (JSON.parse(readFileSync(join(tmp, 'out.json'), 'utf8')).logits as number[][][]).flat(2);
    const want = (c.logits as number[][][]).flat(2);
    assert.equal(got.length, want.length);
    got.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) <= 1e-4 + 1e-4 * Math.abs(want[i]!), `logit ${i}`));
  });

  it('generate: prompts of different lengths each get the tokens they get alone; --temperature samples reproducibly', () => {
    const c = JSON.parse(readFileSync(`${G}/gen/cases.json`, 'utf8'));
    const ragged = [c.prompt_ids[0].slice(0, 4), c.prompt_ids[1]];
    writeFileSync(join(tmp, 'ragged.json'), JSON.stringify({ input_ids: ragged }));
    const run = (file: string, ...extra: string[]): number[][] => {
      const out = join(tmp, `g-${file}-${extra.join('')}.json`);
      const r = dsv2('generate', '--model', `${G}/gen`, '--input', join(tmp, file), '--max-new-tokens', '6', '--output', out, ...extra);
      assert.equal(r.code, 0, r.err);
      return JSON.parse(readFileSync(out, 'utf8')).generated_ids;
    };
    const both = run('ragged.json');
    assert.deepEqual(both[1], c.generated_ids[1].slice(0, 6));
    writeFileSync(join(tmp, 'first.json'), JSON.stringify({ input_ids: [ragged[0]] }));
    assert.deepEqual(run('first.json')[0], both[0]);
    const s1 = run('ragged.json', '--temperature', '1', '--seed', '4');
    assert.deepEqual(run('ragged.json', '--temperature', '1', '--seed', '4'), s1);
    assert.equal(s1[0]!.length, 6);
  });

  it('generate --greedy reproduces the golden tokens (absorbed and naive decode)', () => {
    const c = JSON.parse(readFileSync(`${G}/gen/cases.json`, 'utf8'));
    writeFileSync(join(tmp, 'prompt.json'), JSON.stringify({ input_ids: c.prompt_ids }));
    for (const extra of [[], ['--naive']]) {
      const r = dsv2(
        'generate',
        '--model',
        `${G}/gen`,
        '--input',
        join(tmp, 'prompt.json'),
        '--max-new-tokens',
        '16',
        '--greedy',
        '--output',
        join(tmp, 'gen.json'),
        ...extra,
      );
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(JSON.parse(readFileSync(join(tmp, 'gen.json'), 'utf8')).generated_ids, c.generated_ids);
    }
  });

  it('step on the golden train case writes losses, gradients and the updated model', () => {
    const c = JSON.parse(readFileSync(`${G}/train/cases.json`, 'utf8'));
    const out = join(tmp, 'step');
    const r = dsv2('step', '--model', `${G}/train`, '--batch', `${G}/train/cases.json`, '--output', out);
    assert.equal(r.code, 0, r.err);
    const losses = JSON.parse(readFileSync(join(out, 'losses.json'), 'utf8'));
    assert.ok(Math.abs(losses.loss_ce - c.loss_ce) <= 1e-5 + 1e-5 * c.loss_ce);
    assert.ok(Math.abs(losses.loss_total - c.loss_total) <= 1e-5 + 1e-5 * c.loss_total);
    assert.ok(Math.abs(losses.grad_norm - c.adamw.grad_norm_preclip) <= 1e-5 * c.adamw.grad_norm_preclip);
    losses.aux.layers.forEach((l: { layer: number; L_exp: number }, i: number) => {
      assert.equal(l.layer, c.aux.layers[i].layer);
      assert.ok(Math.abs(l.L_exp - c.aux.layers[i].L_exp) <= 1e-5 * c.aux.layers[i].L_exp);
    });
    const [got, want] = [Checkpoint.open(join(out, 'grads.safetensors')), Checkpoint.open(`${G}/train/grads.safetensors`)];
    assert.deepEqual([...got.tensors.keys()].sort(), [...want.tensors.keys()].sort());
    for (const name of want.tensors.keys()) {
      const w = want.read(name);
      const g = got.read(name);
      const tol = 2e-4 * w.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      w.forEach((v, i) => assert.ok(Math.abs(g[i]! - v) <= tol, `${name}[${i}]`));
    }
    const model = Checkpoint.open(join(out, 'model.safetensors'));
    assert.equal(model.tensors.size, 89);
    assert.equal(dsv2('inspect', out).code, 0, 'the output is a loadable model directory');
  });

  it('bad input: one clear line and a non-zero exit', () => {
    writeFileSync(join(tmp, 'bad-ids.json'), JSON.stringify({ input_ids: [[1, 2], [3]] }));
    writeFileSync(join(tmp, 'oov.json'), JSON.stringify({ input_ids: [[1, 400]] }));
    writeFileSync(join(tmp, 'broken.json'), '{"input_ids": [[1, 2]');
    writeFileSync(join(tmp, 'no-aux.json'), JSON.stringify({ input_ids: [[1, 2]], labels: [[2, -100]], adamw: {} }));
    oneLineError(
      dsv2('logits', '--model', `${G}/lite`, '--input', join(tmp, 'bad-ids.json'), '--output', join(tmp, 'x.json')),
      /equal length/,
    );
    oneLineError(
      dsv2('logits', '--model', `${G}/lite`, '--input', join(tmp, 'oov.json'), '--output', join(tmp, 'x.json')),
      /outside the vocabulary/,
    );
    oneLineError(
      dsv2('logits', '--model', `${G}/lite`, '--input', join(tmp, 'broken.json'), '--output', join(tmp, 'x.json')),
      /not valid JSON/,
    );
    oneLineError(
      dsv2('logits', '--model', `${G}/lite`, '--input', join(tmp, 'missing.json'), '--output', join(tmp, 'x.json')),
      /no such file/,
    );
    oneLineError(
      dsv2('logits', '--model', join(tmp, 'nowhere'), '--input', join(tmp, 'oov.json'), '--output', join(tmp, 'x.json')),
      /config.json: no such file/,
    );
    oneLineError(dsv2('logits', '--input', join(tmp, 'oov.json')), /--model is required/);
    oneLineError(
      dsv2('generate', '--model', `${G}/gen`, '--input', join(tmp, 'oov.json'), '--max-new-tokens', '2', '--output', join(tmp, 'x.json')),
      /outside the vocabulary/,
    );
    writeFileSync(join(tmp, 'ok.json'), JSON.stringify({ input_ids: [[1, 2]] }));
    const gen = (...extra: string[]): ReturnType<typeof dsv2> =>
      dsv2('generate', '--model', `${G}/gen`, '--input', join(tmp, 'ok.json'), '--output', join(tmp, 'x.json'), ...extra);
    oneLineError(gen('--max-new-tokens', '2', '--top-k', '3'), /--top-k goes with --temperature/);
    oneLineError(gen('--max-new-tokens', '2', '--temperature', '-1'), /temperature must be a number ≥ 0/);
    oneLineError(gen('--max-new-tokens', '70'), /exceeds max_position_embeddings 64/);
    oneLineError(
      dsv2('step', '--model', `${G}/train`, '--batch', join(tmp, 'no-aux.json'), '--output', join(tmp, 's')),
      /aux: "alpha1" must be a number/,
    );
    oneLineError(dsv2('inspect', '--preset', 'huge'), /unknown preset 'huge'/);
    const truncated = join(tmp, 'trunc');
    spawnSync('mkdir', ['-p', truncated]);
    writeFileSync(join(truncated, 'config.json'), readFileSync(`${G}/lite/config.json`));
    writeFileSync(join(truncated, 'model.safetensors'), readFileSync(`${G}/lite/model.safetensors`).subarray(0, 5000));
    oneLineError(dsv2('logits', '--model', truncated, '--input', join(tmp, 'oov.json'), '--output', join(tmp, 'x.json')), /truncated/);
  });
});
