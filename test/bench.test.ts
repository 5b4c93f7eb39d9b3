// The lockstep benchmark against the PyTorch peer (src/bench/peer.ts), with a stand-in peer process that speaks
// the same protocol, so the pairing arithmetic and the error paths run without PyTorch.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { loadBackend } from '../src/backend/registry.js';
import { benchTrainVsPeer } from '../src/bench/peer.js';

const standIn = (ms: number, dieAt = 0): string[] => [process.execPath, 'test/fixtures/stand-in-peer.mjs', String(ms), String(dieAt)];

describe('bench train --vs-torch', () => {
  it('pairs our steps with the peer’s and reports medians and the per-pair ratio', async () => {
    const r = await benchTrainVsPeer(loadBackend('ts'), 'tiny', { command: standIn(5000), pairs: 4, batch: 2, seq: 16 });
    assert.equal(r.bench, 'train-vs-torch');
    assert.equal(r.pairs, 4);
    assert.equal(r.peer, 'pytorch stand-in');
    assert.equal(r.peer_tok_s, (2 * 16) / 5); // every peer step took 5 s
    assert.ok(r.ms > 0 && r.ms < 5000, String(r.ms));
    assert.ok(Math.abs(r.ratio - 5000 / r.ms) / r.ratio < 0.5, `${r.ratio} vs ${5000 / r.ms}`);
    assert.ok(r.ratio_q1 <= r.ratio && r.ratio <= r.ratio_q3);
  });

  it('a peer that dies mid-run is one error carrying its last words', async () => {
    await assert.rejects(
      benchTrainVsPeer(loadBackend('ts'), 'tiny', { command: standIn(1, 2), pairs: 3, batch: 2, seq: 16 }),
      /the PyTorch peer stopped: stand-in peer: out of memory \(on purpose\)/,
    );
  });

  it('a missing peer folder or a misplaced flag is one clear line from the CLI', () => {
    for (const [args, code, msg] of [
      [['--vs-torch', '--peer-dir', '/nonexistent'], 1, /no PyTorch peer at \/nonexistent/],
      [['--pairs', '5'], 2, /--pairs goes with --vs-torch/],
      [['--vs-torch', '--pairs', '1'], 2, /--pairs must be at least 3/],
    ] as const) {
      const r = spawnSync(process.execPath, ['bin/dsv2.js', 'bench', 'train', '--preset', 'tiny', ...args], { encoding: 'utf8' });
      assert.equal(r.status, code, r.stderr);
      assert.match(r.stderr, msg);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  });
});
