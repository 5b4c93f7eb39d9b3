// The native backend's instruction sets: every kernel with an AVX-512 form gives bit-identical results to its AVX2
// form (the same FMA chains, only wider), checked by forcing each set on this machine in turn. The rest of the suite
// runs native with the best set the CPU has, against the `ts` reference; this file covers the others. On a CPU with
// one set only the selection checks run.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { AttentionParams, Backend, GemmParams, QGemmParams } from '../src/backend/backend.js';
import { QUANT_FORMATS, QUANT_TYPES, quantize, rowBytes, type QuantType } from '../src/quant/formats.js';
import { availableBackends, loadBackend } from '../src/node.js';

const native: Backend | null = availableBackends().includes('native') ? loadBackend('native') : null;

function rand(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    a[i] = s / 2 ** 32 - 0.5;
  }
  return a;
}

/** What `run` returns under each instruction set of the backend, which must be the same bits under all of them. */
function sameUnderEverySet(b: Backend, what: string, run: () => Float32Array[]): void {
  const sets = b.isas!();
  const start = b.isa!();
  try {
    let first: Float32Array[] | null = null;
    for (const isa of sets) {
      b.setIsa!(isa);
      const got = run();
      if (!first) {
        first = got;
        continue;
      }
      got.forEach((g, j) => {
        const w = first![j]!;
        assert.equal(g.length, w.length);
        for (let i = 0; i < g.length; i++)
          if (!Object.is(g[i], w[i])) assert.fail(`${what}: output ${j}[${i}] is ${g[i]} under ${isa}, ${w[i]} under ${sets[0]}`);
      });
    }
  } finally {
    b.setIsa!(start);
  }
}

/** N rows of `type`: quantized from random floats, or for the read-only K-quants the committed fixture's blocks. */
function storedWeight(type: QuantType, N: number, K: number, seed: number): Uint8Array {
  if (QUANT_FORMATS[type].writable) return quantize(type, rand(N * K, seed), N, K);
  const fixture = JSON.parse(readFileSync(new URL('../../test/fixtures/quant-gguf.json', import.meta.url), 'utf8')) as {
    types: Record<string, { bytes: string }>;
  };
  const f = Buffer.from(fixture.types[type]!.bytes, 'base64');
  return Uint8Array.from({ length: N * rowBytes(type, K) }, (_, i) => f[(i + seed) % f.length]!);
}

function gemmCase(
  M: number,
  N: number,
  K: number,
  tA: boolean,
  tB: boolean,
  alpha: number,
  beta: number,
  seed: number,
): () => Float32Array[] {
  const a = rand(M * K, seed);
  const w = rand(K * N, seed + 1);
  const c0 = rand(M * N, seed + 2);
  return () => {
    const c = c0.slice();
    const p: GemmParams = {
      batch: 1, M, N, K,
      a, aOffset: 0, aBatchStride: 0, aRowStride: tA ? 1 : K, aColStride: tA ? M : 1,
      b: w, bOffset: 0, bBatchStride: 0, bRowStride: tB ? 1 : N, bColStride: tB ? K : 1,
      c, cOffset: 0, cBatchStride: 0, alpha, beta,
    }; // prettier-ignore
    native!.gemm(p);
    return [c];
  };
}

describe('native instruction sets', { skip: native ? false : 'the native backend is not built here' }, () => {
  it('lists what the CPU runs, the best first in use, and refuses what it cannot run by name', () => {
    const b = native!;
    const sets = b.isas!();
    assert.ok(sets.includes('avx2'));
    assert.equal(b.isa!(), process.env['DSV2_ISA'] ?? sets[sets.length - 1]);
    assert.throws(() => b.setIsa!('sse9'), /unknown instruction set 'sse9' \(avx2 or avx512\)/);
    if (!sets.includes('avx512')) assert.throws(() => b.setIsa!('avx512'), /this CPU lacks AVX-512/);
    // DSV2_ISA picks the set at load; a wrong value is one clear error
    const script = "import('./dist/src/node.js').then((m) => { const b = m.loadBackend('native'); console.log(b.isa()); })";
    const ok = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, DSV2_ISA: 'avx2' }, encoding: 'utf8' });
    assert.equal(ok.stdout.trim(), 'avx2', ok.stderr);
    const bad = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, DSV2_ISA: 'avx1024' }, encoding: 'utf8' });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /DSV2_ISA=avx1024: unknown instruction set 'avx1024'/);
  });

  it('GEMM: every path (GEMV, in-place A, small M, whole B, blocked) and layout gives the same bits', () => {
    const shapes: [number, number, number][] = [
      [1, 64, 256], [3, 100, 77], [5, 33, 17], [6, 32, 16], [7, 48, 300], [64, 1024, 512], [130, 70, 513],
      [200, 40, 1000], [300, 300, 300], [2048, 256, 256], [512, 4096, 64], [100, 31, 257], [144, 48, 2048], [700, 520, 600],
    ]; // prettier-ignore
    let seed = 1;
    for (const [M, N, K] of shapes)
      for (const tA of [false, true])
        for (const tB of [false, true])
          for (const [alpha, beta] of [
            [1, 0],
            [1, 1],
            [0.7, 0.5],
          ] as const)
            // prettier-ignore
            sameUnderEverySet(native!, `gemm ${M}×${N}×${K} tA=${tA} tB=${tB} α=${alpha} β=${beta}`, gemmCase(M, N, K, tA, tB, alpha, beta, seed++));
  });

  it('gemmMany (an MoE layer’s experts, forward and backward shapes) gives the same bits', () => {
    const items = [
      [157, 256, 64], [40, 64, 256], [1, 64, 256], [3, 512, 128], [254, 64, 256], [19, 96, 200],
    ].map(([M, N, K], i) => ({ M: M!, N: N!, K: K!, a: rand(M! * K!, 10 + i), w: rand(K! * N!, 20 + i) })); // prettier-ignore
    for (const tB of [false, true])
      sameUnderEverySet(native!, `gemmMany tB=${tB}`, () => {
        const cs = items.map((it) => new Float32Array(it.M * it.N));
        native!.gemmMany(
          items.map((it, i): GemmParams => ({
            batch: 1, M: it.M, N: it.N, K: it.K,
            a: it.a, aOffset: 0, aBatchStride: 0, aRowStride: it.K, aColStride: 1,
            b: it.w, bOffset: 0, bBatchStride: 0, bRowStride: tB ? 1 : it.N, bColStride: tB ? it.K : 1,
            c: cs[i]!, cOffset: 0, cBatchStride: 0, alpha: 1, beta: 0,
          })), // prettier-ignore
        );
        return cs;
      });
  });

  it('attention forward and backward (causal, masked, grouped heads, odd widths) give the same bits', () => {
    const cases = [
      { B: 2, H: 4, Hkv: 4, T: 37, S: 37, Dk: 48, Dv: 32, causal: true, mask: false },
      { B: 1, H: 4, Hkv: 2, T: 20, S: 50, Dk: 24, Dv: 40, causal: true, mask: false },
      { B: 2, H: 2, Hkv: 1, T: 13, S: 29, Dk: 64, Dv: 64, causal: false, mask: true },
      { B: 1, H: 3, Hkv: 3, T: 100, S: 100, Dk: 192, Dv: 128, causal: true, mask: false },
    ];
    for (const [i, c] of cases.entries()) {
      const q = rand(c.B * c.H * c.T * c.Dk, 100 + i);
      const k = rand(c.B * c.Hkv * c.S * c.Dk, 200 + i);
      const v = rand(c.B * c.Hkv * c.S * c.Dv, 300 + i);
      const mask = c.mask ? rand(c.B * c.T * c.S, 400 + i) : null;
      const dout = rand(c.B * c.H * c.T * c.Dv, 500 + i);
      const p: AttentionParams = { ...c, scale: 1 / Math.sqrt(c.Dk), q, k, v, mask, maskBatch: c.mask ? c.B : 1 };
      sameUnderEverySet(native!, `attention case ${i}`, () => {
        const out = new Float32Array(c.B * c.H * c.T * c.Dv);
        const lse = new Float32Array(c.B * c.H * c.T);
        native!.attention(p, out, lse);
        const dq = new Float32Array(q.length),
          dk = new Float32Array(k.length),
          dv = new Float32Array(v.length);
        native!.attentionBackward(p, out, lse, dout, dq, dk, dv);
        return [out, lse, dq, dk, dv];
      });
    }
  });

  it('products with stored weights (decode rows, batched rows, prefill) give the same bits', () => {
    for (const type of QUANT_TYPES) {
      const K = type.endsWith('_k') ? 512 : 352; // 11 blocks: pairs and an odd last one
      for (const [M, N] of [
        [1, 67],
        [3, 40],
        [4, 16],
        [80, 70],
      ] as const) {
        const w = storedWeight(type, N, K, 7 + M);
        const x = rand(M * K, 9 + N);
        for (const beta of [0, 1] as const)
          sameUnderEverySet(native!, `qgemm ${type} ${M}×${N}×${K} β=${beta}`, () => {
            const y = rand(M * N, 3);
            const p: QGemmParams = { type, M, N, K, x, xOffset: 0, w, y, yOffset: 0, beta };
            native!.qgemm(p);
            return [y];
          });
      }
    }
  });
});
