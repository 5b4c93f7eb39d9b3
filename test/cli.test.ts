// The dsv2 command line: help lists the commands, bad input gives one clear line and a non-zero exit.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';

function dsv2(...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['bin/dsv2.js', ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('dsv2 cli', () => {
  it('--help lists the commands that exist', () => {
    const r = dsv2('--help');
    assert.equal(r.code, 0);
    for (const c of ['start', 'inspect', 'logits', 'generate', 'step', 'backends', 'version'])
      assert.match(r.out, new RegExp(`^  ${c} `, 'm'));
  });

  it('an unknown command or flag is one line on stderr and exit 2, no stack trace', () => {
    for (const args of [['nope'], ['start', '--bogus'], ['start', '--steps', 'x']]) {
      const r = dsv2(...args);
      assert.equal(r.code, 2, args.join(' '));
      assert.equal(r.err.trim().split('\n').length, 1, r.err);
      assert.doesNotMatch(r.err, /at .*\.js:\d+/);
    }
  });

  it('start explains the plan and trains the engine check', () => {
    const r = dsv2('start', '--steps', '50');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /small' DeepSeek-V2 preset/);
    assert.match(r.out, /50 steps in .* final loss/);
  });

  it('backends reports JSON', () => {
    const r = dsv2('backends');
    const j = JSON.parse(r.out) as { available: string[]; default: string };
    assert.ok(j.available.includes('ts'));
  });
});
