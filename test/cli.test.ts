// The dsv2 command line: help lists the commands, bad input gives one clear line and a non-zero exit.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as T from '../src/node.js';

function dsv2(...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['bin/dsv2.js', ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('dsv2 cli', () => {
  it('--help lists the commands that exist', () => {
    const r = dsv2('--help');
    assert.equal(r.code, 0);
    for (const c of ['start', 'train', 'sample', 'bench', 'inspect', 'logits', 'generate', 'step', 'backends', 'version'])
      assert.match(r.out, new RegExp(`^  ${c} `, 'm'));
  });

  it('every command answers --help with its options, exit 0', () => {
    for (const c of ['start', 'train', 'sample', 'bench', 'inspect', 'logits', 'generate', 'step']) {
      const r = dsv2(c, '--help');
      assert.equal(r.code, 0, `${c}: ${r.err}`);
      assert.match(r.out, new RegExp(`^dsv2 ${c}: `), c);
      assert.match(r.out, /^Options:$/m, c);
      assert.match(r.out, /^ {2}--[a-z-]+/m, c);
    }
    assert.match(dsv2('bench', '-h').out, /--vs-torch +train, decode: time the PyTorch peer/);
    assert.match(dsv2('train', '--help').out, /--minutes <number> +wall-clock minutes/);
  });

  it('an unknown command or flag is one line on stderr and exit 2, no stack trace', () => {
    for (const args of [
      ['nope'],
      ['start', '--bogus'],
      ['start', '--steps', 'x'],
      ['bench', 'nope'],
      ['bench', 'gemm', '--threads', '0'],
    ]) {
      const r = dsv2(...args);
      assert.equal(r.code, 2, args.join(' '));
      assert.equal(r.err.trim().split('\n').length, 1, r.err);
      assert.doesNotMatch(r.err, /at .*\.js:\d+/);
    }
  });

  it('start trains a DeepSeek-V2 preset on the mixed corpus, then prints a sample per domain, the experts summary, the checkpoint and the reports', () => {
    // the real main job runs the small preset for minutes; the same path here on the tiny preset for 3 steps
    const dir = mkdtempSync(join(tmpdir(), 'dsv2-start-'));
    const out = join(dir, 'run');
    const r = dsv2(
      'start',
      '--preset',
      'tiny',
      '--vocab_size=512',
      '--steps',
      '3',
      '--batch',
      '2',
      '--seq',
      '32',
      '--data', // the same corpus as the default `mix`, at 40 kB per domain so that its tokenizer trains in a second
      'mix:40k',
      '--out',
      out,
      '--cache-dir',
      join(dir, 'c'),
    );
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /training the 'tiny' DeepSeek-V2 preset on mix:40k/);
    assert.match(r.out, /Trained 3 steps .* validation loss \d/);
    for (const p of ['> Call me Ishmael.', '> 春望\n    杜甫', '> export function ', '> Solve 3x - 7 = 11.'])
      assert.ok(r.out.includes(p), p);
    assert.match(r.out, /Which expert does what/);
    assert.match(r.out, /MoE layer 1: I\/H\(domain\) \d\.\d{3}/);
    const control = [...r.out].filter((ch) => ch !== '\n' && ch !== '\t' && (ch.charCodeAt(0) < 0x20 || ch.charCodeAt(0) === 0x7f));
    assert.deepEqual(control, [], 'no control characters reach the terminal');
    for (const f of ['checkpoint/model.safetensors', 'checkpoint/tokenizer.json', 'metrics.jsonl', 'report.html', 'experts/report.html'])
      assert.ok(existsSync(join(out, f)), f);
    rmSync(dir, { recursive: true, force: true });
  });

  it('bench prints one JSON object per line with the documented keys', () => {
    const r = dsv2('bench', 'train', '--preset', 'tiny', '--json');
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out.trim().split('\n').pop()!) as Record<string, unknown>;
    for (const k of ['bench', 'preset', 'backend', 'threads', 'batch', 'seq', 'tok_s']) assert.ok(k in j, k);
    assert.equal(j['bench'], 'train');
  });

  it('without the native addon the engine falls back to wasm with one line saying why', () => {
    const r = spawnSync(process.execPath, ['bin/dsv2.js', 'backends'], {
      encoding: 'utf8',
      env: { ...process.env, DSV2_NATIVE_ADDON: '/nonexistent/dsv2_native.node', DSV2_BACKEND: '', DSV2_QUIET: '' },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { available: ['ts', 'wasm'], default: 'wasm' });
    assert.match(r.stderr, /^dsv2: native backend unavailable \(the addon is not built.*\); using the wasm backend\n$/);
  });

  it('backends reports, as JSON, what the library finds', () => {
    const r = dsv2('backends');
    const j = JSON.parse(r.out) as { available: string[]; default: string };
    const native = T.availableBackends().includes('native') ? T.loadBackend('native') : null;
    assert.deepEqual(j, {
      available: T.availableBackends(),
      default: T.defaultBackend().name,
      ...(native ? { native_isa: native.isa!(), native_isas: native.isas!() } : {}),
    });
  });
});
