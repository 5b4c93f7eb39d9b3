// Weight storage types (src/quant/formats.ts) and the products that compute straight from them: the block layouts
// against llama.cpp's own gguf-py (a committed fixture from scripts/make-quant-fixtures.py), and every backend's
// qgemm / dequantRows against the ts reference and against float32 products with the decoded weights.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { intTensor, loadBackend, noGrad } from '../src/node.js';
import { generateGreedy } from '../src/infer/generate.js';
import { loadModel } from '../src/model/load.js';
import { quantizeParams } from '../src/quant/model.js';
import { dequantize, quantize, QUANT_FORMATS, QUANT_TYPES, rowBytes, type QuantType } from '../src/quant/formats.js';
import { Rng } from '../src/tensor/random.js';
import { assertClose, testBackends } from './helpers.js';
import { F32_ROWS } from '../src/backend/ts/quant.js';

const fixture = JSON.parse(readFileSync(new URL('../../test/fixtures/quant-gguf.json', import.meta.url), 'utf8')) as {
  K: number;
  rows: number;
  x: string;
  types: Record<string, { quantized: boolean; bytes: string; dequantized: string }>;
};
const bytesOf = (b64: string): Uint8Array => new Uint8Array(Buffer.from(b64, 'base64'));
const floatsOf = (b64: string): Float32Array => {
  const b = bytesOf(b64);
  return new Float32Array(b.buffer, b.byteOffset, b.length / 4);
};

describe('storage types against gguf-py', () => {
  const { K, rows } = fixture;
  const x = floatsOf(fixture.x);
  for (const type of QUANT_TYPES) {
    const f = fixture.types[type]!;
    it(`${type}: decodes gguf-py's blocks to gguf-py's values${f.quantized ? ' and quantizes as gguf-py' : ''}`, () => {
      const stored = bytesOf(f.bytes);
      assert.equal(stored.length, rows * rowBytes(type, K));
      const want = floatsOf(f.dequantized);
      const got = dequantize(type, stored, rows, K);
      for (let i = 0; i < got.length; i++) {
        if (Object.is(got[i], want[i]) || got[i] === want[i]) continue;
        assert.fail(`${type}: value ${i} decodes to ${got[i]}, gguf-py says ${want[i]}`);
      }
      if (f.quantized) assert.deepEqual(quantize(type, x, rows, K), stored, `${type}: our quantization differs from gguf-py's`);
    });
  }
});

/** Random weights of `type` (quantized from normal floats, or random blocks for the read-only K-quants). */
function storedWeight(type: QuantType, N: number, K: number, rng: Rng): Uint8Array {
  if (QUANT_FORMATS[type].writable) {
    const w = new Float32Array(N * K).map(() => rng.normal() * 0.5);
    return quantize(type, w, N, K);
  }
  const f = bytesOf(fixture.types[type]!.bytes); // reuse the fixture's sane blocks, row by row
  const rb = rowBytes(type, K);
  const out = new Uint8Array(N * rb);
  for (let i = 0; i < out.length; i++) out[i] = f[i % f.length]!;
  return out;
}

describe('qgemm on every backend', () => {
  const ref = loadBackend('ts');
  const shapes: [number, number, number][] = [
    [1, 37, 256],
    [3, 16, 512],
    [5, 64, 256],
    [9, 130, 768],
    [33, 70, 512], // ≥ F32_ROWS: decoded weights × float32 activations
  ];
  for (const b of testBackends()) {
    for (const type of QUANT_TYPES) {
      it(`${b.name}: ${type} products match the reference and the decoded float32 product`, () => {
        const rng = new Rng(7);
        for (const [M, N, K] of shapes) {
          const w = storedWeight(type, N, K, rng);
          const x = new Float32Array(2 + M * K).map(() => rng.normal());
          const want = new Float32Array(M * N + 3);
          const got = new Float32Array(M * N + 3).fill(0.25);
          ref.qgemm({ type, M, N, K, x, xOffset: 2, w, y: want, yOffset: 3, beta: 0 });
          b.qgemm({ type, M, N, K, x, xOffset: 2, w, y: got, yOffset: 3, beta: 0 });
          assertClose(got.subarray(3), want.subarray(3), 1e-4, 1e-4, `${type} ${M}×${N}×${K}`);
          assert.equal(got[0], 0.25, 'wrote before yOffset');
          // beta 1 adds
          const acc = Float32Array.from(got);
          b.qgemm({ type, M, N, K, x, xOffset: 2, w, y: acc, yOffset: 3, beta: 1 });
          assertClose(
            acc.subarray(3),
            Float32Array.from(want.subarray(3), (v) => 2 * v),
            2e-4,
            1e-4,
            `${type} beta 1`,
          );
          // against the float32 product with the decoded weights: exact for float activations, bounded for int16 ones
          const wf = dequantize(type, w, N, K);
          const exact = new Float32Array(M * N);
          ref.gemm({
            batch: 1, M, N, K, a: x, aOffset: 2, aBatchStride: 0, aRowStride: K, aColStride: 1,
            b: wf, bOffset: 0, bBatchStride: 0, bRowStride: 1, bColStride: K,
            c: exact, cOffset: 0, cBatchStride: 0, alpha: 1, beta: 0,
          }); // prettier-ignore
          const int16 = type !== 'bf16' && type !== 'f16' && M < F32_ROWS;
          // int16 activations: each value is off by ≤ d_x/2 = max|x_block|/65534, so |err| ≤ Σ_k |w_k|·max|x|/65534
          for (let m = 0; m < M; m++)
            for (let n = 0; n < N; n++) {
              let bound = 1e-4 * K;
              if (int16) {
                bound = 0;
                for (let k0 = 0; k0 < K; k0 += 32) {
                  let amax = 0;
                  let wsum = 0;
                  for (let j = 0; j < 32; j++) {
                    amax = Math.max(amax, Math.abs(x[2 + m * K + k0 + j]!));
                    wsum += Math.abs(wf[n * K + k0 + j]!);
                  }
                  bound += (wsum * amax) / 65534;
                }
                bound = bound * 1.001 + 1e-4;
              }
              const err = Math.abs(got[3 + m * N + n]! - exact[m * N + n]!);
              assert.ok(err <= bound, `${type} ${M}×${N}×${K} [${m},${n}]: |err| ${err} > bound ${bound}`);
            }
        }
      });
    }
    it(`${b.name}: qgemmMany runs products side by side like one qgemm each`, () => {
      const rng = new Rng(3);
      const ps = (['q8_0', 'q4_0', 'bf16', 'q6_k', 'q5_0'] as QuantType[]).map((type, i) => {
        const [M, N, K] = [1 + i, 48 + 16 * i, 256];
        return {
          type,
          M,
          N,
          K,
          x: new Float32Array(M * K).map(() => rng.normal()),
          xOffset: 0,
          w: storedWeight(type, N, K, rng),
          yOffset: 0,
        };
      });
      const one = ps.map((p) => {
        const y = new Float32Array(p.M * p.N);
        ref.qgemm({ ...p, y, beta: 0 });
        return y;
      });
      const many = ps.map((p) => new Float32Array(p.M * p.N));
      b.qgemmMany(ps.map((p, i) => ({ ...p, y: many[i]!, beta: 0 as const })));
      many.forEach((y, i) => assertClose(y, one[i]!, 1e-4, 1e-4, ps[i]!.type));
    });
    it(`${b.name}: dequantRows decodes the rows asked for, and refuses an index out of range`, () => {
      for (const type of QUANT_TYPES) {
        const rng = new Rng(11);
        const [N, K] = [20, 256];
        const w = storedWeight(type, N, K, rng);
        const full = dequantize(type, w, N, K);
        const idx = Int32Array.from([3, 0, 19, 3]);
        const out = new Float32Array(idx.length * K);
        b.dequantRows(type, w, idx, out, idx.length, N, K);
        idx.forEach((r, i) => assert.deepEqual(out.subarray(i * K, (i + 1) * K), full.subarray(r * K, (r + 1) * K), `${type} row ${r}`));
        assert.throws(() => b.dequantRows(type, w, Int32Array.from([20]), out, 1, N, K), /index 20 outside \[0, 20\)/);
      }
    });
  }
  for (const b of testBackends()) {
    it(`${b.name}: quantizeRows writes the reference's bytes for every writable type`, () => {
      const rng = new Rng(5);
      const [rows, K] = [7, 384];
      const x = new Float32Array(rows * K).map(() => rng.normal() * (rng.uniform() < 0.1 ? 30 : 1));
      x.fill(0, 32, 64); // an all-zero block
      x[100] = -0;
      for (const type of QUANT_TYPES.filter((t) => QUANT_FORMATS[t].writable)) {
        const out = new Uint8Array(rows * rowBytes(type, K));
        b.quantizeRows(type, x, out, rows, K);
        assert.deepEqual(out, quantize(type, x, rows, K), type);
      }
      const fx = floatsOf(fixture.x);
      for (const type of QUANT_TYPES.filter((t) => fixture.types[t]!.quantized)) {
        const out = new Uint8Array(fixture.rows * rowBytes(type, fixture.K));
        b.quantizeRows(type, fx, out, fixture.rows, fixture.K);
        assert.deepEqual(out, bytesOf(fixture.types[type]!.bytes), `${type} against gguf-py`);
      }
    });
  }
  it('row lengths that do not fill a block are refused with the type named', () => {
    assert.throws(() => rowBytes('q4_k', 1408), /q4_k needs rows of a multiple of 256 values, got 1408/);
    assert.equal(rowBytes('q8_0', 1408), 44 * 34);
  });
});

describe('models with stored weights against the golden cases', () => {
  const GOLDEN = 'test/golden';
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const cases = (name: string): any => JSON.parse(readFileSync(`${GOLDEN}/${name}/cases.json`, 'utf8'));
  const maxErr = (got: ArrayLike<number>, want: number[]): number => {
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
    return worst;
  };
  // Measured bounds (max |logit error| over the case; logits span ±4): bf16 weights that hold the golden values
  // exactly are within float rounding; q8_0 moves `lite` by 0.060 and `full` by 0.81 (its group-limited routing
  // flips experts for a few tokens, which a 0.4% weight error is enough to do on this random model).
  const bounds: [QuantType, string, string, number][] = [
    ['bf16', 'lite', 'model.bf16.safetensors', 1e-4],
    ['bf16', 'full', 'model.bf16.safetensors', 1e-4],
    ['q8_0', 'lite', 'model.safetensors', 0.07],
    ['q8_0', 'full', 'model.safetensors', 0.9],
  ];
  for (const b of testBackends()) {
    for (const [type, name, file, bound] of bounds) {
      it(`${b.name}: ${name} with ${type} projections: logits within ${bound} of the reference`, () => {
        const c = cases(name);
        const model = loadModel(`${GOLDEN}/${name}`, { weights: `${GOLDEN}/${name}/${file}`, trainable: false, backend: b });
        const report = quantizeParams(model.params, type);
        assert.ok(report.types[type]! > 50, `${JSON.stringify(report.types)}`);
        const out = noGrad(() => model.forward(intTensor(c.input_ids, undefined, { backend: b })));
        const err = maxErr(out.logits.toArray(), c.logits.flat(Infinity));
        assert.ok(err <= bound, `max |err| ${err} > ${bound}`);
      });
    }
    it(`${b.name}: gen with q8_0 projections (f16 embedding and head): the reference's 32 greedy tokens`, () => {
      const c = cases('gen');
      const model = loadModel(`${GOLDEN}/gen`, { trainable: false, backend: b });
      quantizeParams(model.params, 'q8_0');
      assert.equal(model.params.get('lm_head.weight').dtype, 'f16');
      assert.deepEqual(generateGreedy(model, c.prompt_ids, { maxNewTokens: c.new_tokens }), c.generated_ids);
    });
  }
  it('stored weights are inference only: training through one is refused with the weight named', () => {
    const model = loadModel(`${GOLDEN}/lite`, { trainable: true, backend: loadBackend('ts') });
    quantizeParams(model.params, 'q8_0');
    assert.throws(
      () => model.forward(intTensor([[1, 2, 3]], undefined, { backend: model.backend })),
      /'model\.layers\.0\.self_attn\.q_proj\.weight' is stored as q8_0, which is for inference only/,
    );
  });
});
