// The lockstep benchmark against the PyTorch peer (src/bench/peer.ts), with a stand-in peer process that speaks
// the same protocol, so the pairing arithmetic and the error paths run without PyTorch.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { loadBackend } from '../src/backend/registry.js';
import { benchTrainVsPeer } from '../src/bench/peer.js';
import { benchDecode, benchDecodeVsPeer } from '../src/bench/decode.js';
import { benchMlaVsMha, benchServe } from '../src/bench/serve.js';
import { benchIsa } from '../src/bench/isa.js';
import { availableBackends } from '../src/backend/registry.js';
import { defaultBackend } from '../src/backend/registry.js';

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

  it('a peer whose BLAS is the reference one (a matmul under 20 GFLOP/s) is refused, naming the fix', async () => {
    process.env['STAND_IN_BLAS'] = '4.2';
    try {
      await assert.rejects(
        benchTrainVsPeer(loadBackend('ts'), 'tiny', { command: standIn(1), pairs: 3, batch: 2, seq: 16 }),
        /4\.2 GFLOP\/s: its BLAS is the reference one, not OpenBLAS \(apt-get install libopenblas0-pthread\)/,
      );
    } finally {
      delete process.env['STAND_IN_BLAS'];
    }
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

describe('bench isa', { skip: availableBackends().includes('native') ? false : 'the native backend is not built here' }, () => {
  it('times each instruction set against the best, interleaved, and leaves the set in use as it was', () => {
    const native = loadBackend('native');
    const sets = native.isas!();
    const before = native.isa!();
    const rows = benchIsa(native, 'tiny', 3);
    assert.equal(native.isa!(), before);
    if (sets.length < 2) {
      assert.deepEqual(rows, []);
      const r = spawnSync(process.execPath, ['bin/dsv2.js', 'bench', 'isa'], { encoding: 'utf8' });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /has one instruction set here \(avx2\): nothing to compare/);
      return;
    }
    assert.deepEqual(
      rows.map((r) => [r.what.split(' ')[0], r.isa, r.baseline]),
      [['gemm', 'avx512', 'avx2'], ['gemm', 'avx512', 'avx2'], ['train', 'avx512', 'avx2']],
    ); // prettier-ignore
    for (const r of rows) assert.ok(r.value > 0 && r.baseline_value > 0 && r.ratio > 0 && r.ratio_q1 <= r.ratio_q3, JSON.stringify(r));
  });
});

describe('inference benchmarks', () => {
  it('bench decode: decode, prefill and first-token times, the measured bandwidth and the fraction of its ceiling', () => {
    const r = benchDecode(defaultBackend(), 'tiny', { runs: 3, newTokens: 16, prefillLen: 32 });
    assert.equal(r.bench, 'decode');
    assert.ok(r.decode_tok_s > 0 && r.prefill_tok_s > 0 && r.ttft_ms > 0 && r.read_gb_s > 0, JSON.stringify(r));
    assert.ok(Math.abs(r.of_bandwidth_ceiling - r.decode_tok_s / ((r.read_gb_s * 1e9) / r.active_bytes_per_token)) < 1e-9);
  });

  it('bench decode --vs-torch pairs our decode and prefill with the peer’s', async () => {
    const r = await benchDecodeVsPeer(defaultBackend(), 'small', { command: standIn(2000), pairs: 3 });
    assert.equal(r.peer, 'pytorch stand-in');
    assert.equal(r.peer_decode_tok_s, 128 / 2);
    assert.equal(r.peer_prefill_tok_s, 256 / 2);
    assert.ok(r.decode_ratio_q1 <= r.decode_ratio && r.decode_ratio <= r.decode_ratio_q3);
    assert.ok(Math.abs(r.decode_ratio - 2000 / (128 * r.ms)) / r.decode_ratio < 0.5);
  });

  it('bench mla-vs-mha: under one KV budget MLA holds more sequences than MHA, by the ratio of their cache widths', async () => {
    const [mla, mha] = await benchMlaVsMha(defaultBackend(), 'tiny', { requests: 8 });
    assert.equal(mla!.attention, 'mla');
    assert.equal(mha!.kv_cache_mib, mla!.kv_cache_mib);
    assert.ok(mha!.kv_bytes_per_token > mla!.kv_bytes_per_token);
    const want = mha!.kv_bytes_per_token / mla!.kv_bytes_per_token;
    assert.ok(Math.abs(mla!.blocks / mha!.blocks - want) / want < 0.1, `${mla!.blocks} vs ${mha!.blocks} blocks`);
    assert.ok(mla!.max_sequences >= 8 && mha!.max_sequences < mla!.max_sequences);
    assert.ok(mla!.peak_tok_s > 0 && mha!.peak_tok_s > 0);
  });

  it('bench serve: a real server and streaming clients at each concurrency', async () => {
    const rs = await benchServe(defaultBackend(), 'small', { streams: [1, 4], maxTokens: 8, requestsPerStream: 1 });
    assert.deepEqual(
      rs.map((r) => r.streams),
      [1, 4],
    );
    for (const r of rs) {
      assert.equal(r.requests, r.streams);
      assert.ok(r.tok_s > 0 && r.itl_p50_ms > 0 && r.itl_p99_ms >= r.itl_p50_ms && r.ttft_p50_ms > 0, JSON.stringify(r));
    }
    assert.ok(rs[1]!.vs_batch1! > 0);
  });
});
