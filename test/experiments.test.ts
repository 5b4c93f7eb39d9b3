import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isMoeLayer } from '../src/model/config.js';
import { preset } from '../src/model/presets.js';
import { cacheWidth } from '../src/model/attention.js';
import { paramCounts } from '../src/model/weights.js';
import { EXPERIMENT_NAMES, experiment, SCALES, variantConfig, type RunResult } from '../src/train/experiments.js';

const BIN = new URL('../../bin/dsv2.js', import.meta.url).pathname;
const root = mkdtempSync(join(tmpdir(), 'dsv2-experiments-'));
const cache = join(root, 'cache');

function dsv2(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, DSV2_QUIET: '1' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface ResultsFile {
  results: RunResult[];
  variants: { variant: string; seeds: number }[];
}

describe('experiment definitions (the small scale)', () => {
  const base = preset(SCALES['small']!.preset, SCALES['small']!.config);

  it('ffn: DeepSeekMoE, GShard top-2 and dense have equal activated FFN parameters, GShard about equal total expert parameters', () => {
    const ex = experiment('ffn', base);
    const ffnActive = (name: string): number => {
      const c = variantConfig(
        SCALES['small']!,
        ex.variants.find((v) => v.name === name)!,
      );
      let w = 0;
      for (let i = 0; i < c.num_hidden_layers; i++)
        w += isMoeLayer(c, i) ? ((c.n_shared_experts ?? 0) + c.num_experts_per_tok!) * c.moe_intermediate_size : c.intermediate_size;
      return w;
    };
    assert.equal(ffnActive('gshard'), ffnActive('deepseekmoe'));
    assert.equal(ffnActive('dense'), ffnActive('deepseekmoe'));
    // all activated parameters then differ by the routers' alone (3 MoE layers × experts × d)
    const activated = (name: string): number =>
      paramCounts(
        variantConfig(
          SCALES['small']!,
          ex.variants.find((v) => v.name === name)!,
        ),
      ).activated_params;
    const routers = (n: number): number => 3 * n * base.hidden_size;
    assert.equal(activated('deepseekmoe') - activated('dense'), routers(base.n_routed_experts!));
    assert.equal(activated('gshard') - activated('dense'), routers(variantConfig(SCALES['small']!, ex.variants[1]!).n_routed_experts!));
    const g = variantConfig(SCALES['small']!, ex.variants[1]!);
    assert.equal(g.n_shared_experts, 0);
    assert.equal(g.num_experts_per_tok, 2);
    const expertsWidth = (base.n_routed_experts! + base.n_shared_experts!) * base.moe_intermediate_size;
    assert.ok(Math.abs((g.n_routed_experts! * g.moe_intermediate_size) / expertsWidth - 1) < 0.1);
  });

  it('attention: the four kinds, and the KV cache per token of each as the model caches it', () => {
    const ex = experiment('attention', base);
    assert.deepEqual(
      ex.variants.map((v) => v.name),
      ['mla', 'mha', 'gqa', 'mqa'],
    );
    const kv = ex.variants.map((v) => cacheWidth(variantConfig(SCALES['small']!, v)));
    assert.equal(kv[0], base.kv_lora_rank + base.qk_rope_head_dim); // MLA: the latent and the shared RoPE key
    assert.equal(kv[1], 2 * base.num_attention_heads * base.v_head_dim); // MHA: K and V of every head
    assert.equal(kv[2], 2 * 2 * base.v_head_dim);
    assert.equal(kv[3], 2 * base.v_head_dim);
  });

  it('devices: M = 1 … D−1 groups against unrestricted; balance: off and an α1 sweep, with token dropping', () => {
    const d = experiment('devices', base);
    assert.deepEqual(
      d.variants.map((v) => v.name),
      ['M=1', 'M=2', 'M=3', 'unrestricted'],
    );
    const b = experiment('balance', base);
    assert.equal(b.train.capacityFactor, 1);
    assert.deepEqual(b.variants[0]!.train, { alpha1: 0, alpha2: 0, alpha3: 0 });
    assert.ok(b.variants.length >= 5);
  });
});

describe('dsv2 experiment (micro scale, end to end)', () => {
  for (const name of EXPERIMENT_NAMES) {
    it(`${name}: trains every variant, writes results.json, results.md and report.html`, () => {
      const out = join(root, name);
      const r = dsv2('experiment', name, '--scale', 'micro', '--out', out, '--cache-dir', cache);
      assert.equal(r.status, 0, r.stderr);
      const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as ResultsFile;
      const ex = experiment(name, preset(SCALES['micro']!.preset, SCALES['micro']!.config));
      assert.deepEqual(
        res.variants.map((v) => v.variant),
        ex.variants.map((v) => v.name),
      );
      for (const x of res.results) {
        assert.ok(Number.isFinite(x.valLoss) && x.valLoss > 0 && x.valLoss < 10, `${x.variant}: val loss ${x.valLoss}`);
        assert.equal(x.tokens, 4 * 4 * 32);
        const dl = Object.values(x.domainLoss ?? {});
        assert.ok(
          dl.length >= 2 && dl.every((l) => typeof l === 'number' && l > 0 && l < 10),
          `${x.variant}: loss by domain ${JSON.stringify(x.domainLoss)}`,
        );
        assert.ok(existsSync(join(out, `${x.variant.replace(/[^A-Za-z0-9._=-]/g, '_')}-seed0`, 'checkpoint', 'config.json')));
      }
      if (name === 'ffn') {
        const by = Object.fromEntries(res.results.map((x) => [x.variant, x]));
        assert.equal(by['dense']!.nmi, null);
        assert.equal(by['dense']!.specialisation, null);
        for (const v of ['deepseekmoe', 'gshard']) {
          const s = by[v]!.specialisation;
          assert.ok(typeof s === 'number' && s > 0 && s < 1, `${v}: I/H(domain) ${s}`);
        }
      }
      if (name === 'balance') {
        const off = res.results.find((x) => x.variant === 'off')!;
        assert.equal(off.lExp, 0, 'no balance loss in the objective');
      }
      const html = readFileSync(join(out, 'report.html'), 'utf8');
      assert.match(html, new RegExp(`Experiment ${name}`));
      assert.match(
        readFileSync(join(out, 'results.md'), 'utf8'),
        /^\| variant \| what \| seeds \| val loss .*\| val loss prose \/ poetry \/ code \/ math \|/,
      );
      assert.match(r.stdout, /Report: /);
    });
  }

  it('resumes: finished runs are kept as they are, and only the missing variants train', () => {
    const out = join(root, 'resume');
    const first = dsv2('experiment', 'devices', '--scale', 'micro', '--out', out, '--cache-dir', cache, '--only', 'M=1');
    assert.equal(first.status, 0, first.stderr);
    const file = join(out, 'M=1-seed0', 'result.json');
    const before = readFileSync(file, 'utf8');
    const mtime = statSync(file).mtimeMs;
    const all = dsv2('experiment', 'devices', '--scale', 'micro', '--out', out, '--cache-dir', cache);
    assert.equal(all.status, 0, all.stderr);
    assert.match(all.stderr, /M=1 seed 0: done before, kept/);
    assert.equal(readFileSync(file, 'utf8'), before);
    assert.equal(statSync(file).mtimeMs, mtime);
    const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as ResultsFile;
    assert.deepEqual(
      res.results.map((x) => x.variant),
      ['M=1', 'unrestricted'],
    );
    // a result written before the loss by domain existed gets it from its checkpoint, the rest unchanged
    const old = JSON.parse(before) as RunResult;
    writeFileSync(file, JSON.stringify({ ...old, domainLoss: undefined }, null, 2) + '\n');
    const again = dsv2('experiment', 'devices', '--scale', 'micro', '--out', out, '--cache-dir', cache);
    assert.equal(again.status, 0, again.stderr);
    const now = JSON.parse(readFileSync(file, 'utf8')) as RunResult;
    assert.deepEqual(now, old);
    // another budget over the same folder is refused, not mixed in
    const other = dsv2('experiment', 'devices', '--scale', 'micro', '--out', out, '--cache-dir', cache, '--tokens', '1024');
    assert.notEqual(other.status, 0);
    assert.match(other.stderr, /M=1-seed0 was trained with tokens 512, this experiment asks for 1024/);
  });

  it('refuses an unknown experiment, scale, variant or seed list with one message', () => {
    for (const [args, msg] of [
      [['experiment', 'nope'], /name one experiment: attention, ffn, balance, devices/],
      [['experiment', 'ffn', '--scale', 'huge'], /unknown --scale 'huge'/],
      [
        ['experiment', 'ffn', '--scale', 'micro', '--only', 'moe', '--out', join(root, 'x')],
        /has no variant moe \(it has deepseekmoe, gshard, dense\)/,
      ],
      [['experiment', 'ffn', '--seeds', '1,a'], /--seeds: 'a' is not an integer/],
      [['experiment', 'ffn', '--tokens', '10'], /less than one step/],
    ] as const) {
      const r = dsv2(...args);
      assert.notEqual(r.status, 0, args.join(' '));
      assert.match(r.stderr, msg);
      assert.doesNotMatch(r.stderr, /at .*\.js:\d+/);
    }
  });
});
