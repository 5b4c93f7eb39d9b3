import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  truncateSync,
  writeFileSync,
  cpSync,
  renameSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as T from '../src/node.js';
import { loadCorpus } from '../src/data/corpus.js';
import { dropMask, route } from '../src/model/moe.js';
import { preset } from '../src/model/presets.js';
import { findCheckpoint } from '../src/train/checkpoint.js';
import { lrAt, makeSchedule } from '../src/train/schedule.js';
import { train, TRAIN_DEFAULTS, TrainingDiverged, type StepMetrics, type TrainOptions } from '../src/train/trainer.js';
import { readMetrics } from '../src/train/report.js';
import { testBackends } from './helpers.js';

const BIN = new URL('../../bin/dsv2.js', import.meta.url).pathname;

function dsv2(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, DSV2_QUIET: '1' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A small corpus folder: six Moby-Dick chapters as .txt plus two documents in a .jsonl file. */
function corpusDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'dsv2-corpus-'));
  const docs = loadCorpus('moby-dick').docs.slice(3, 9);
  docs.forEach((d, i) => writeFileSync(join(dir, `doc${i}.txt`), d.text.slice(0, 6000)));
  writeFileSync(
    join(dir, 'extra.jsonl'),
    [{ text: 'The sea, the sea.' }, { text: docs[0]!.text.slice(6000, 9000) }].map((r) => JSON.stringify(r)).join('\n') + '\n',
  );
  return dir;
}

function tinyOptions(data: string, out: string, extra: Partial<TrainOptions> = {}): TrainOptions {
  return {
    ...TRAIN_DEFAULTS,
    preset: 'tiny',
    config: { vocab_size: 300, max_position_embeddings: 64 },
    data,
    out,
    steps: 8,
    batch: 4,
    seq: 16,
    lr: 3e-3,
    valFraction: 0.2,
    evalEvery: 4,
    evalBatches: 2,
    checkpointEvery: 4,
    capacityFactor: 1,
    cacheDir: join(out, '..', 'cache'),
    ...extra,
  };
}

describe('training schedule', () => {
  it('warms up linearly, then drops ×0.316 at 60% and again at 90%', () => {
    const s = makeSchedule(1, 100, 0.05);
    assert.equal(s.warmupSteps, 5);
    const close = (a: number, b: number): void => assert.ok(Math.abs(a - b) < 1e-12, `${a} vs ${b}`);
    close(lrAt(s, 0), 0.2);
    close(lrAt(s, 4), 1);
    close(lrAt(s, 59), 1);
    close(lrAt(s, 60), 0.316);
    close(lrAt(s, 89), 0.316);
    close(lrAt(s, 90), 0.316 * 0.316);
    close(lrAt(s, 99), 0.316 * 0.316);
  });
});

describe('DeepSeekMoE training routing', () => {
  const c = preset('tiny', { n_routed_experts: 4, n_group: 2, topk_group: 1, num_experts_per_tok: 2 });

  it('token dropping keeps each device at capacity, dropping the lowest affinities first', () => {
    // 4 tokens (one sequence each, T = 1) × K = 2: device 0 = experts {0,1}, device 1 = experts {2,3}
    const indices = [0, 1, 0, 1, 0, 1, 2, 3];
    const affinity = [0.5, 0.4, 0.3, 0.2, 0.45, 0.1, 0.6, 0.3];
    // capacity = ceil(1.0 · 8 / 2) = 4: device 0 holds 6 → drop the 2 lowest (0.1 at 5, 0.2 at 3)
    const keep = dropMask(c, indices, affinity, 1, { capacityFactor: 1, protectedRows: new Set() });
    assert.deepEqual(keep, [true, true, true, false, true, false, true, true]);
    // sequence 2 (assignments 4, 5) protected: its 0.1 survives, the next-lowest unprotected go instead
    const keep2 = dropMask(c, indices, affinity, 1, { capacityFactor: 1, protectedRows: new Set([2]) });
    assert.deepEqual(keep2, [true, true, false, false, true, true, true, true]);
    // a roomy capacity drops nothing
    assert.ok(dropMask(c, indices, affinity, 1, { capacityFactor: 2, protectedRows: new Set() }).every(Boolean));
  });

  for (const backend of testBackends()) {
    it(`[${backend.name}] no token is routed to more than M devices; dropping counts reach the forward`, () => {
      const s = preset('small');
      const model = T.DeepseekV2ForCausalLM.init(s, { seed: 3, backend, std: 0.05 });
      const x = T.randn([64, s.hidden_size], { backend, seed: 4 });
      const r = T.noGrad(() => route(s, model.params, 'model.layers.1.mlp', 1, x));
      const idx = r.indices.toArray();
      const perDevice = s.n_routed_experts! / s.n_group;
      for (let t = 0; t < 64; t++) {
        const devices = new Set(idx.slice(t * 4, t * 4 + 4).map((e) => Math.floor(e / perDevice)));
        assert.ok(devices.size <= s.topk_group, `token ${t} reaches ${devices.size} devices`);
      }
      const ids = T.intTensor(
        Array.from({ length: 2 }, (_, b) => Array.from({ length: 32 }, (_, t) => (b * 31 + t * 7) % s.vocab_size)),
        undefined,
        { backend },
      );
      const out = T.noGrad(() => model.forward(ids, { drop: { capacityFactor: 0.5, protectedRows: new Set() } }));
      for (const rr of out.router) {
        const keep = dropMask(s, rr.indices.toArray(), T.gather(rr.scores, rr.indices).toArray(), 32, {
          capacityFactor: 0.5,
          protectedRows: new Set(),
        });
        assert.equal(rr.dropped, keep.filter((k) => !k).length);
        assert.ok(rr.dropped >= 64 * 4 * 0.5 - 1, `capacity 0.5 drops at least half: ${rr.dropped}`);
        assert.equal(
          rr.load.reduce((a: number, b: number) => a + b, 0),
          64 * 4 - rr.dropped,
        );
      }
      const none = T.noGrad(() => model.forward(ids));
      for (const rr of none.router) assert.equal(rr.dropped, 0, 'no dropping without the option (evaluation)');
    });
  }
});

describe('trainer', () => {
  const data = corpusDir();
  const root = mkdtempSync(join(tmpdir(), 'dsv2-runs-'));
  const losses = (ms: StepMetrics[]): number[] => ms.map((m) => m.loss);

  it('trains, logs metrics.jsonl, checkpoints an HF model dir, and resume reproduces the loss sequence exactly', () => {
    const full = join(root, 'full');
    const a = train(tinyOptions(data, full));
    const ma = readMetrics(join(full, 'metrics.jsonl'));
    assert.equal(ma.length, 8);
    for (const k of ['step', 'tokens', 'loss', 'lr', 'tok_s', 'load_max_over_mean', 'dropped_frac'] as const) assert.ok(k in ma[0]!, k);
    assert.equal(ma[0]!.load_max_over_mean.length, 1, 'one number per MoE layer');
    assert.ok(ma[3]!.val_loss !== undefined && ma[7]!.val_loss !== undefined && ma[4]!.val_loss === undefined);
    assert.ok(ma[7]!.loss < ma[0]!.loss, `loss falls: ${ma[0]!.loss} → ${ma[7]!.loss}`);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'optimizer.safetensors', 'trainer_state.json']) {
      assert.ok(existsSync(join(a.checkpoint, f)), f);
    }
    assert.ok(!readdirSync(full).some((f) => f.includes('tmp')), 'no temporary checkpoint left behind');
    const cached = readdirSync(join(root, 'cache'));
    assert.ok(
      cached.some((f) => f.startsWith('tokenizer-')) && cached.filter((f) => f.startsWith('tokens-')).length === 2,
      cached.join(' '),
    );

    // the same run, interrupted after step 6 (its last checkpoint is step 4), then resumed
    const cut = join(root, 'cut');
    assert.throws(
      () =>
        train(tinyOptions(data, cut), {
          onStep: (m) => {
            if (m.step === 6) throw new Error('simulated crash');
          },
        }),
      /simulated crash/,
    );
    assert.equal(JSON.parse(readFileSync(join(cut, 'checkpoint', 'trainer_state.json'), 'utf8')).step, 4);
    train({ ...tinyOptions(data, cut), resume: true });
    const mb = readMetrics(join(cut, 'metrics.jsonl'));
    assert.deepEqual(
      mb.map((m) => m.step),
      [1, 2, 3, 4, 5, 6, 7, 8],
    );
    assert.deepEqual(losses(mb), losses(ma), 'bit-identical loss sequence after resume');
    assert.deepEqual(
      mb.map((m) => m.val_loss ?? null),
      ma.map((m) => m.val_loss ?? null),
    );
  });

  it('an interrupted checkpoint swap falls back to checkpoint.old; corrupt checkpoints fail with one clear message', () => {
    const run = join(root, 'swap');
    mkdirSync(run);
    cpSync(join(root, 'full', 'checkpoint'), join(run, 'checkpoint.old'), { recursive: true });
    mkdirSync(join(run, '.checkpoint-tmp-999')); // a half-written one from a crash
    assert.equal(findCheckpoint(run), join(run, 'checkpoint.old'));
    renameSync(join(run, 'checkpoint.old'), join(run, 'checkpoint'));
    const st = join(run, 'checkpoint', 'model.safetensors');
    truncateSync(st, 1000);
    assert.throws(() => train({ ...tinyOptions(data, run), resume: true }), /model\.safetensors.*(truncated|does not fit|bytes)/);
    writeFileSync(join(run, 'checkpoint', 'trainer_state.json'), '{ not json');
    assert.throws(() => train({ ...tinyOptions(data, run), resume: true }), /trainer_state\.json is corrupt/);
  });

  it('kills during two successive checkpoint swaps: --resume still continues from a complete checkpoint, with the same losses', () => {
    // checkpoints every 2 steps; run 1 is killed at step 4's swap just after `checkpoint` moved to `checkpoint.old`
    const run = join(root, 'two-kills');
    const every2 = (extra: Partial<TrainOptions> = {}): TrainOptions => tinyOptions(data, run, { checkpointEvery: 2, ...extra });
    const kill = (phase: string, atStep: number) => ({
      onCheckpointPhase: (p: string, step: number) => {
        if (p === phase && step === atStep) throw new Error(`killed at ${p} of step ${step}`);
      },
    });
    assert.throws(() => train(every2(), kill('moved-old', 4)), /killed at moved-old of step 4/);
    assert.deepEqual(
      readdirSync(run)
        .filter((f) => f.includes('checkpoint'))
        .sort(),
      ['.checkpoint-tmp-' + process.pid, 'checkpoint.old'],
    );
    // run 2 resumes from step 2 (checkpoint.old) and is killed in its own first swap, before the rename
    assert.throws(() => train(every2({ resume: true }), kill('written', 4)), /killed at written of step 4/);
    assert.equal(findCheckpoint(run), join(run, 'checkpoint.old'), 'the only complete checkpoint survived');
    // run 3: killed after its rename, before checkpoint.old is removed
    assert.throws(() => train(every2({ resume: true }), kill('renamed', 6)), /killed at renamed of step 6/);
    const st = JSON.parse(readFileSync(join(run, 'checkpoint', 'trainer_state.json'), 'utf8')) as { step: number };
    assert.equal(st.step, 6);
    train(every2({ resume: true }));
    const got = readMetrics(join(run, 'metrics.jsonl'));
    const ref = join(root, 'two-kills-ref');
    train(tinyOptions(data, ref, { checkpointEvery: 2 }));
    const want = readMetrics(join(ref, 'metrics.jsonl'));
    assert.deepEqual(
      got.map((m) => m.step),
      [1, 2, 3, 4, 5, 6, 7, 8],
    );
    assert.deepEqual(losses(got), losses(want), 'the loss sequence of an uninterrupted run');
    assert.ok(!readdirSync(run).some((f) => f.includes('tmp') || f === 'checkpoint.old'), readdirSync(run).join(' '));
  });

  it('--resume refuses partial checkpoints, validates trainer_state.json, repairs a torn metrics line and resumes a moved run in place', () => {
    const run = join(root, 'partial');
    mkdirSync(join(run, '.checkpoint-tmp-12345'), { recursive: true });
    writeFileSync(join(run, '.checkpoint-tmp-12345', 'config.json'), '{}');
    mkdirSync(join(run, 'checkpoint'));
    assert.throws(
      () => train({ ...tinyOptions(data, run), resume: true }),
      /holds no complete checkpoint, only partial ones \(\.checkpoint-tmp-12345, checkpoint\)|only partial ones \(checkpoint, \.checkpoint-tmp-12345\)/,
    );
    // a copy of a finished run, with a torn last metrics line and bad trainer states
    const moved = join(root, 'moved');
    cpSync(join(root, 'full'), moved, { recursive: true });
    const state = join(moved, 'checkpoint', 'trainer_state.json');
    const good = readFileSync(state, 'utf8');
    writeFileSync(state, JSON.stringify({ ...JSON.parse(good), step: -5 }));
    assert.throws(() => train({ ...tinyOptions(data, moved), resume: true }), /trainer_state\.json: "step" must be an integer ≥ 0, got -5/);
    writeFileSync(state, '{}');
    assert.throws(
      () => train({ ...tinyOptions(data, moved), resume: true }),
      /trainer_state\.json: "step" must be an integer ≥ 0, got undefined/,
    );
    writeFileSync(state, good);
    const before = readFileSync(join(root, 'full', 'metrics.jsonl'), 'utf8');
    writeFileSync(join(moved, 'metrics.jsonl'), before + '{"step": 9, "lo');
    writeFileSync(join(moved, '.metrics.jsonl.999.123.tmp'), 'junk');
    train({ ...tinyOptions(data, moved), resume: true, steps: 10 });
    const m = readMetrics(join(moved, 'metrics.jsonl'));
    assert.deepEqual(
      m.map((x) => x.step),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    );
    assert.equal(readFileSync(join(root, 'full', 'metrics.jsonl'), 'utf8'), before, 'the original run was not touched');
    assert.ok(!existsSync(join(moved, '.metrics.jsonl.999.123.tmp')), 'stale temp files are removed');
  });

  it('a --minutes run fixes its length after 6 steps and re-plans once at 30% from the time per step since then', () => {
    const run = join(root, 'minutes');
    // a virtual clock: steps up to 6 take 2 s (a busy machine), later ones 0.5 s
    let virtual = 0;
    const ms: { step: number; lr: number }[] = [];
    let planned: number[] = [];
    train(tinyOptions(data, run, { steps: undefined, minutes: 1, evalEvery: 1000, checkpointEvery: 1000 }), {
      clock: () => virtual,
      onStep: (m, info) => {
        virtual += m.step <= 6 ? 2000 : 500;
        ms.push({ step: m.step, lr: m.lr });
        planned.push(info.totalSteps);
      },
    });
    planned = [...new Set(planned.slice(6))];
    assert.equal(planned[0], 31, 'fixed from steps 2–6: 6 + (60 − 10 s) / 2 s');
    assert.equal(planned.length, 2, 're-planned once');
    assert.equal(planned[1], 68, 'at step 11: 0.8 s a step since the plan, 46 s left');
    assert.equal(ms.length, 68);
    const peak = 3e-3;
    const close = (a: number, b: number): boolean => Math.abs(a - b) < 1e-12;
    assert.ok(
      ms.slice(6, 41).every((m) => close(m.lr, peak)),
      'past warm-up the rate stays at its peak across the re-plan',
    );
    assert.ok(close(ms[41]!.lr, peak * 0.316), 'the first decay lands at 60% of the new length (0-based step 41)');
  });

  it('gradient accumulation: micro-batches of one step share the step arena; the loss is their mean', () => {
    const run = join(root, 'accum');
    train(tinyOptions(data, run, { gradAccum: 3, steps: 3, evalEvery: 3, checkpointEvery: 3 }));
    const ms = readMetrics(join(run, 'metrics.jsonl'));
    assert.equal(ms.length, 3);
    assert.equal(ms[2]!.tokens, 3 * 3 * 4 * 16, 'each step sees gradAccum × batch × seq tokens');
    assert.ok(ms.every((m) => Number.isFinite(m.loss) && Number.isFinite(m.grad_norm)));
  });

  it('a diverging run stops with a clear message and keeps its last good checkpoint', () => {
    const run = join(root, 'nan');
    let err: unknown;
    try {
      train(tinyOptions(data, run, { lr: 1e30, clip: 0, warmup: 0, checkpointEvery: 1, steps: 50, capacityFactor: 0 }));
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof TrainingDiverged, String(err));
    assert.match((err as Error).message, /became (NaN|Infinity|-Infinity).*last good checkpoint is .*checkpoint/);
    const saved = JSON.parse(readFileSync(join(run, 'checkpoint', 'trainer_state.json'), 'utf8')).step as number;
    assert.ok(saved >= 1);
    const ms = readMetrics(join(run, 'metrics.jsonl'));
    assert.ok(
      ms.every((m) => Number.isFinite(m.loss)),
      'no non-finite loss is logged',
    );
  });

  it('bad data gives one clear error', () => {
    assert.throws(
      () => train(tinyOptions(join(root, 'nope'), join(root, 'x'))),
      /neither a built-in corpus .* nor an existing file or folder/,
    );
    const bad = join(root, 'bad');
    mkdirSync(bad);
    writeFileSync(join(bad, 'a.jsonl'), '{"text": "ok"}\n{broken\n');
    assert.throws(() => train(tinyOptions(bad, join(root, 'y'))), /a\.jsonl:2: not valid JSON/);
    writeFileSync(join(bad, 'a.jsonl'), '{"body": "no text"}\n');
    assert.throws(() => train(tinyOptions(bad, join(root, 'y'))), /no string "text" field/);
  });

  it('CLI: train and sample end to end; bad flags are one-line usage errors', () => {
    const out = join(root, 'cli');
    const cache = join(root, 'cache');
    const r = dsv2(
      'train',
      '--preset',
      'tiny',
      '--vocab_size=300',
      '--data',
      data,
      '--out',
      out,
      '--steps',
      '3',
      '--batch',
      '2',
      '--seq',
      '16',
      '--cache-dir',
      cache,
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /checkpoint: .*report: .*report\.html/s);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    assert.match(html, /uPlot/);
    assert.ok(!/<script src=|<link [^>]*href="http/.test(html), 'the report is self-contained');
    const s = dsv2('sample', '--model', out, '--prompt', 'The sea', '--max-new-tokens', '8', '--seed', '3');
    assert.equal(s.status, 0, s.stderr);
    assert.ok(s.stdout.startsWith('The sea'), s.stdout);
    assert.equal(dsv2('sample', '--model', out, '--prompt', 'The sea', '--max-new-tokens', '8', '--seed', '3').stdout, s.stdout, 'seeded');
    for (const [args, msg] of [
      [['train', '--preset', 'tiny', '--data', data, '--steps', '2'], /--out DIR is required/],
      [['train', '--out', out, '--data', data, '--steps', '2', '--lr', 'abc'], /--lr expects a number/],
      [['train', '--out', out, '--data', data, '--steps', '2', '--num_hidden_layers=abc'], /num_hidden_layers/],
      [['train', '--out', out, '--data', data, '--steps', '2', '--bogus', '1'], /unknown flag --bogus/],
      [['train', '--out', out, '--data', data], /--steps N, --tokens N or --minutes M/],
      [['sample', '--model', join(root, 'nope')], /neither a model directory/],
      [['train', '--out', out, '--data', data, '--steps', '-1'], /--steps must be at least 1, got -1/],
      [['train', '--out', out, '--data', data, '--steps', '2', '--beta1', '1.5'], /--beta1 must be in \[0, 1\), got 1.5/],
      [['train', '--out', out, '--data', data, '--steps', '2', '--lr', '-1'], /--lr is out of range: -1/],
      [['train', '--out', out, '--data', data, '--steps', '2', '--threads', '100000'], /--threads must be in \[1, 1024\]/],
      [
        ['train', '--out', out, '--resume', '--lr', '0.01', '--batch', '8'],
        /--resume continues with the run's saved options; drop --batch, --lr/,
      ],
      [
        [
          'train',
          '--preset',
          'tiny',
          '--vocab_size=300',
          '--max_position_embeddings=64',
          '--data',
          data,
          '--out',
          join(root, 'long'),
          '--steps',
          '2',
          '--seq',
          '100',
          '--cache-dir',
          join(root, 'cache'),
        ],
        /--seq 100 is longer than max_position_embeddings 64/,
      ],
    ] as [string[], RegExp][]) {
      const e = dsv2(...args);
      assert.notEqual(e.status, 0, args.join(' '));
      assert.match(e.stderr, msg);
      assert.ok(!/\n\s+at /.test(e.stderr), 'no stack trace');
    }
  });

  it('CLI: SIGINT and SIGTERM end training after the current step with a last checkpoint; --resume continues from it', async (t) => {
    if (!T.defaultBackend().watchStopSignals) return t.skip('the backend cannot record signals during the training loop');
    for (const [signal, code] of [
      ['SIGINT', 130],
      ['SIGTERM', 143],
    ] as const) {
      const out = join(root, `signal-${signal}`);
      const args = [
        'train',
        '--preset',
        'tiny',
        '--vocab_size=300',
        '--data',
        data,
        '--out',
        out,
        '--steps',
        '2000',
        '--batch',
        '2',
        '--seq',
        '16',
        '--cache-dir',
        join(root, 'cache'),
      ];
      const child = spawn(process.execPath, [BIN, ...args], {
        env: { ...process.env, DSV2_QUIET: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      child.stdout.on('data', (d) => (stdout += d));
      const metrics = join(out, 'metrics.jsonl');
      const deadline = Date.now() + 60_000;
      while (!(existsSync(metrics) && readFileSync(metrics, 'utf8').split('\n').length > 4)) {
        assert.ok(Date.now() < deadline, 'training did not start');
        await new Promise((r) => setTimeout(r, 50));
      }
      child.kill(signal);
      const exit = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
      assert.equal(exit, code, `${signal}: ${stdout}`);
      assert.match(stdout, new RegExp(`stopped by ${signal} after step (\\d+); checkpoint: `));
      const last = readMetrics(metrics).at(-1)!.step;
      assert.equal(
        JSON.parse(readFileSync(join(out, 'checkpoint', 'trainer_state.json'), 'utf8')).step,
        last,
        'the checkpoint holds the last step',
      );
      const r = dsv2('train', '--out', out, '--resume', '--steps', String(last + 2));
      assert.equal(r.status, 0, r.stderr);
      assert.equal(readMetrics(metrics).at(-1)!.step, last + 2);
    }
  });

  it('cleans up', () => {
    rmSync(root, { recursive: true, force: true });
    rmSync(data, { recursive: true, force: true });
  });
});

describe('AdamW as torch.optim.AdamW', () => {
  it('skips a parameter without a gradient (an idle expert): no moment or weight decay, its own step count — PyTorch 2.13’s numbers', () => {
    // test/fixtures/adamw-idle.json: scripts/make-adamw-fixture.py ran torch.optim.AdamW + clip_grad_norm_
    const fx = JSON.parse(readFileSync(new URL('../../test/fixtures/adamw-idle.json', import.meta.url), 'utf8')) as {
      lr: number;
      betas: [number, number];
      eps: number;
      weight_decay: number;
      max_grad_norm: number;
      shapes: Record<string, number[]>;
      init: Record<string, number[]>;
      steps: { grads: Record<string, number[]>; grad_norm: number; params: Record<string, number[]> }[];
    };
    for (const backend of testBackends()) {
      const ps = Object.fromEntries(
        Object.entries(fx.shapes).map(([k, shape]) => [k, T.tensor(fx.init[k]!, shape, { backend }).requireGrad()]),
      );
      const opt = new T.AdamW(Object.values(ps), {
        lr: fx.lr,
        beta1: fx.betas[0],
        beta2: fx.betas[1],
        eps: fx.eps,
        weightDecay: fx.weight_decay,
        maxGradNorm: fx.max_grad_norm,
      });
      for (const [s, st] of fx.steps.entries()) {
        opt.zeroGrad();
        for (const [k, g] of Object.entries(st.grads)) ps[k]!.grad = T.tensor(g, fx.shapes[k], { backend });
        const norm = opt.step();
        assert.ok(
          Math.abs(norm - st.grad_norm) <= 1e-5 * st.grad_norm,
          `[${backend.name}] step ${s + 1} grad norm ${norm} vs ${st.grad_norm}`,
        );
        for (const [k, want] of Object.entries(st.params)) {
          const got = ps[k]!.toArray();
          got.forEach((v, i) =>
            assert.ok(Math.abs(v - want[i]!) <= 1e-6, `[${backend.name}] step ${s + 1} ${k}[${i}]: ${v} vs ${want[i]}`),
          );
        }
      }
    }
  });
});
