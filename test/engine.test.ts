// The inference engine: paged-cache kernels against dense attention, the block manager, the scheduler's batching,
// preemption and prefix caching against generating each sequence alone, cancellation, and the routing in events.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as T from '../src/node.js';
import { BlockManager } from '../src/infer/block-manager.js';
import { Engine, type TokenEvent } from '../src/infer/engine.js';
import { generateGreedy, generateWithoutCache } from '../src/infer/generate.js';
import { LocalEngine } from '../src/infer/runner.js';
import { parseConfig } from '../src/model/config.js';
import { DeepseekV2ForCausalLM } from '../src/model/model.js';
import { preset } from '../src/model/presets.js';
import { assertClose, testBackends } from './helpers.js';

/** A `tiny`-shaped model with weights large enough that greedy choices are decisive (no near-ties). */
function model(backend: T.Backend, over: Record<string, unknown> = {}): DeepseekV2ForCausalLM {
  const c = parseConfig({ ...preset('tiny'), vocab_size: 96, max_position_embeddings: 256, ...over });
  return DeepseekV2ForCausalLM.init(c, { seed: 11, std: 0.3, backend });
}

function prompts(seed: number, lengths: number[], V: number): number[][] {
  const rng = new T.Rng(seed);
  return lengths.map((n) => Array.from({ length: n }, () => rng.int(V)));
}

/** Run an engine to the end, feeding `arrivals` [step, requestId, prompt] as the steps come; ids per request. */
function drive(
  engine: Engine,
  arrivals: [number, string, number[]][],
  maxTokens: number,
  events: TokenEvent[] = [],
): Map<string, number[]> {
  const out = new Map<string, number[]>();
  let step = 0;
  const pending = [...arrivals];
  while (pending.length || engine.hasWork) {
    while (pending.length && pending[0]![0] <= step) {
      const [, id, p] = pending.shift()!;
      engine.add(id, p, { temperature: 0, maxTokens, ignoreEos: true });
      out.set(id, []);
    }
    for (const e of engine.step()) {
      events.push(e);
      if (e.id >= 0) out.get(e.requestId)!.push(e.id);
    }
    step++;
    assert.ok(step < 10_000, 'the engine does not finish');
  }
  return out;
}

for (const backend of testBackends()) {
  describe(`paged attention kernels [${backend.name}]`, () => {
    it('pagedAttention equals dense attention over the gathered rows (MLA layout and per-head MHA layout)', () => {
      const rng = new T.Rng(4);
      const blockSize = 4;
      const numBlocks = 12;
      for (const [H, Hkv, Dk, Dv, kHS, vOff, vHS, W] of [
        [4, 1, 12, 8, 0, 0, 0, 12], // MLA: key = whole row [latent | rope], value = the latent prefix
        [4, 2, 6, 5, 6, 12, 5, 22], // GQA: two KV heads, keys then values in each row
      ] as const) {
        const cache = Float32Array.from({ length: numBlocks * blockSize * W }, () => rng.normal());
        const lens = [1, 5, 9, 16];
        const N = lens.length;
        const maxBlocks = 4;
        // scattered, distinct blocks per sequence
        const perm = Array.from({ length: numBlocks }, (_, i) => i).sort(() => rng.uniform() - 0.5);
        const tables = new Int32Array(N * maxBlocks).fill(-1);
        let next = 0;
        lens.forEach((len, n) => {
          for (let b = 0; b < Math.ceil(len / blockSize); b++) tables[n * maxBlocks + b] = perm[next++ % numBlocks]!;
        });
        const q = Float32Array.from({ length: N * H * Dk }, () => rng.normal());
        const out = new Float32Array(N * H * Dv);
        const scale = 0.3;
        backend.pagedAttention(
          {
            N, H, Hkv, Dk, Dv, scale, q, cache, W, kOffset: 0, kHeadStride: kHS, vOffset: vOff, vHeadStride: vHS,
            blockSize, numBlocks, blockTables: tables, maxBlocks, contextLens: Int32Array.from(lens),
          }, // prettier-ignore
          out,
        );
        lens.forEach((len, n) => {
          for (let h = 0; h < H; h++) {
            const g = Math.floor(h / (H / Hkv));
            const rows = Array.from(
              { length: len },
              (_, j) => (tables[n * maxBlocks + Math.floor(j / blockSize)]! * blockSize + (j % blockSize)) * W,
            );
            const s = rows.map((r) => {
              let d = 0;
              for (let i = 0; i < Dk; i++) d += q[(n * H + h) * Dk + i]! * cache[r + g * kHS + i]!;
              return d * scale;
            });
            const mx = Math.max(...s);
            const e = s.map((v) => Math.exp(v - mx));
            const z = e.reduce((a, b) => a + b, 0);
            const want = Array.from({ length: Dv }, (_, i) =>
              rows.reduce((acc, r, j) => acc + (e[j]! / z) * cache[r + vOff + g * vHS + i]!, 0),
            );
            assertClose(out.subarray((n * H + h) * Dv, (n * H + h + 1) * Dv), want, 1e-5, 1e-4, `token ${n} head ${h}`);
          }
        });
      }
    });

    it('mlaDecode equals the absorbed attention computed from its definition (odd widths, token groups and a rest)', () => {
      const rng = new T.Rng(9);
      const [H, dn, dr, dc, dv] = [3, 5, 6, 20, 7]; // dc 20: a 16-wide chunk and a masked 4-wide one
      const W = dc + dr;
      const blockSize = 4;
      const numBlocks = 16;
      const lens = [1, 5, 9, 16, 3, 7]; // six tokens: a group of four, then two
      const N = lens.length;
      const maxBlocks = 4;
      const cache = Float32Array.from({ length: numBlocks * blockSize * W }, () => rng.normal());
      const kvB = Float32Array.from({ length: H * (dn + dv) * dc }, () => rng.normal() * 0.3);
      const q = Float32Array.from({ length: N * H * (dn + dr) }, () => rng.normal());
      const perm = Array.from({ length: numBlocks }, (_, i) => i).sort(() => rng.uniform() - 0.5);
      const tables = new Int32Array(N * maxBlocks).fill(-1);
      let next = 0;
      lens.forEach((len, n) => {
        for (let b = 0; b < Math.ceil(len / blockSize); b++) tables[n * maxBlocks + b] = perm[next++ % numBlocks]!;
      });
      const out = new Float32Array(N * H * dv);
      const scale = 0.25;
      const params = {
        N, H, dn, dr, dc, dv, scale, q, kvB, cache, blockSize, numBlocks, blockTables: tables, maxBlocks,
        contextLens: Int32Array.from(lens),
      }; // prettier-ignore
      backend.mlaDecode(params, out);
      lens.forEach((len, n) => {
        const rows = Array.from(
          { length: len },
          (_, j) => (tables[n * maxBlocks + Math.floor(j / blockSize)]! * blockSize + (j % blockSize)) * W,
        );
        for (let h = 0; h < H; h++) {
          // the non-absorbed form: decompress each row's key and value with kv_b_proj, then plain attention
          const qo = (n * H + h) * (dn + dr);
          const s = rows.map((r) => {
            let dot = 0;
            for (let i = 0; i < dn; i++) {
              let k = 0;
              for (let c = 0; c < dc; c++) k += kvB[(h * (dn + dv) + i) * dc + c]! * cache[r + c]!;
              dot += q[qo + i]! * k;
            }
            for (let i = 0; i < dr; i++) dot += q[qo + dn + i]! * cache[r + dc + i]!;
            return dot * scale;
          });
          const mx = Math.max(...s);
          const e = s.map((v) => Math.exp(v - mx));
          const z = e.reduce((a, b) => a + b, 0);
          const want = Array.from({ length: dv }, (_, v) =>
            rows.reduce((acc, r, j) => {
              let val = 0;
              for (let c = 0; c < dc; c++) val += kvB[(h * (dn + dv) + dn + v) * dc + c]! * cache[r + c]!;
              return acc + (e[j]! / z) * val;
            }, 0),
          );
          assertClose(out.subarray((n * H + h) * dv, (n * H + h + 1) * dv), want, 1e-5, 1e-4, `token ${n} head ${h}`);
        }
      });
      assert.throws(() => backend.mlaDecode({ ...params, contextLens: Int32Array.from([1, 5, 9, 17, 3, 7]) }, out), /context length 17/);
      const bad = tables.slice();
      bad[0] = numBlocks;
      assert.throws(() => backend.mlaDecode({ ...params, blockTables: bad }, out), new RegExp(`block id ${numBlocks}`));
    });

    it('pagedAttention and scatterRows refuse out-of-range block ids, context lengths and slots', () => {
      const base = {
        N: 1, H: 2, Hkv: 1, Dk: 4, Dv: 4, scale: 1, q: new Float32Array(8), cache: new Float32Array(2 * 4 * 4), W: 4,
        kOffset: 0, kHeadStride: 0, vOffset: 0, vHeadStride: 0, blockSize: 4, numBlocks: 2, maxBlocks: 2,
      }; // prettier-ignore
      const out = new Float32Array(8);
      assert.throws(
        () => backend.pagedAttention({ ...base, blockTables: Int32Array.from([5, 0]), contextLens: Int32Array.from([3]) }, out),
        /block id 5/,
      );
      assert.throws(
        () => backend.pagedAttention({ ...base, blockTables: Int32Array.from([0, 1]), contextLens: Int32Array.from([9]) }, out),
        /context length 9/,
      );
      assert.throws(() => backend.scatterRows(new Float32Array(4), Int32Array.from([8]), new Float32Array(32), 1, 8, 4), /index 8/);
    });
  });

  describe(`engine [${backend.name}]`, () => {
    const m = model(backend);
    const V = m.config.vocab_size;

    it('one batch of mixed prompt lengths = each prompt alone = recomputing without a cache; logits within 1e-4', () => {
      const ps = prompts(1, [3, 9, 1, 17, 6], V);
      const alone = ps.map((p) => generateWithoutCache(m, [p], 12)[0]!);
      const logits = new Map<string, Float32Array[]>();
      const batched = generateGreedy(m, ps, {
        maxNewTokens: 12,
        onLogits: (r, _i, s, l) => ((logits.get(r) ?? logits.set(r, []).get(r)!)[s] = Float32Array.from(l)),
      });
      assert.deepEqual(batched, alone);
      ps.forEach((p, i) => {
        generateWithoutCache(m, [p], 12, (s, want) => assertClose(logits.get(String(i))![s]!, want, 1e-4, 1e-4, `prompt ${i} step ${s}`));
      });
    });

    it('arrivals at different steps, chunked prefill, preemption and prefix-cache hits leave every sequence as generated alone', () => {
      const shared = prompts(2, [20], V)[0]!; // a shared "system prompt" of more than one block
      const tails = prompts(3, [2, 7, 1, 11, 4, 9], V);
      const ps = tails.map((t, i) => (i % 2 ? [...shared, ...t] : t.concat(prompts(10 + i, [5], V)[0]!)));
      const want = ps.map((p) => generateGreedy(m, [p], { maxNewTokens: 14 })[0]!);
      const arrivals = ps.map((p, i): [number, string, number[]] => [i * 3, `r${i}`, p]);
      for (const opts of [
        { blockSize: 4, maxBatchedTokens: 8 }, // chunked prefill: long prompts take several steps
        { blockSize: 4, numBlocks: 14, maxBatchedTokens: 64 }, // too few blocks: preemption and recompute
        { blockSize: 8, maxNumSeqs: 2 }, // a queue: admission as sequences finish
        { blockSize: 4, absorb: false }, // the naive path for decode tokens too
      ]) {
        const engine = new Engine(m, opts);
        const events: TokenEvent[] = [];
        const got = drive(engine, arrivals, 14, events);
        for (const e of events) assert.ok(e.cachedTokens <= e.promptTokens, `${e.cachedTokens} cached of ${e.promptTokens} prompt tokens`);
        ps.forEach((_, i) => assert.deepEqual(got.get(`r${i}`), want[i], `${JSON.stringify(opts)}: request ${i}`));
        const s = engine.stats();
        assert.equal(s.blocksUsed, 0, 'every block is free at the end');
        if (opts.numBlocks) assert.ok(s.preemptions > 0, 'the small pool preempts');
        if (opts.blockSize === 4 && !opts.numBlocks) assert.ok(s.prefixHitTokens >= 16, `prefix cache hits: ${s.prefixHitTokens} tokens`);
      }
    });

    it('a prompt repeated later is served from the prefix cache and gives the same tokens', () => {
      const p = prompts(5, [37], V)[0]!;
      const engine = new Engine(m, { blockSize: 8 });
      const first = drive(engine, [[0, 'a', p]], 6).get('a');
      const hits = engine.stats().prefixHitTokens;
      const second = drive(engine, [[0, 'b', p]], 6).get('b');
      assert.deepEqual(second, first);
      assert.equal(engine.stats().prefixHitTokens - hits, 32, 'four full blocks of the 37-token prompt are reused (never the last token)');
    });

    it('n > 1: the choices prefill their shared prompt once (prefix cache) and, under greedy, agree', () => {
      const p = prompts(13, [40], V)[0]!;
      const engine = new Engine(m, { blockSize: 8 });
      engine.add('x', p, { temperature: 0, maxTokens: 6, ignoreEos: true }, 3);
      const out = new Map<number, number[]>();
      while (engine.hasWork) for (const e of engine.step()) (out.get(e.index) ?? out.set(e.index, []).get(e.index)!).push(e.id);
      assert.deepEqual(out.get(1), out.get(0));
      assert.deepEqual(out.get(2), out.get(0));
      assert.deepEqual(out.get(0), generateGreedy(m, [p], { maxNewTokens: 6 })[0]);
      assert.equal(engine.stats().prefixHitTokens, 2 * 32, 'the second and third choice take the four full blocks');
    });

    it('MHA and GQA baselines page their caches the same way and match their own no-cache decoding', () => {
      for (const attention_type of ['mha', 'gqa']) {
        const b = model(backend, { attention_type, v_head_dim: 12, num_key_value_heads: attention_type === 'gqa' ? 1 : 2 });
        const ps = prompts(7, [4, 10, 2], V);
        const alone = ps.map((p) => generateWithoutCache(b, [p], 8)[0]!);
        assert.deepEqual(generateGreedy(b, ps, { maxNewTokens: 8, blockSize: 4, maxBatchedTokens: 6 }), alone, attention_type);
      }
    });

    it('cancelling a request frees its blocks at once; the others finish', async () => {
      const engine = new Engine(m, { blockSize: 4 });
      const local = new LocalEngine(engine);
      const ps = prompts(8, [9, 9], V);
      const a = local.generate({ prompt: ps[0]!, params: { temperature: 0, maxTokens: 200, ignoreEos: true } });
      const b = local.generate({ prompt: ps[1]!, params: { temperature: 0, maxTokens: 20, ignoreEos: true } });
      let seen = 0;
      for await (const e of a) {
        void e;
        if (++seen === 3) {
          const before = engine.stats().blocksUsed;
          a.cancel();
          assert.ok(engine.stats().blocksUsed < before, 'cancel frees blocks');
        }
      }
      assert.equal(seen, 3);
      const rest: TokenEvent[] = [];
      for await (const e of b) rest.push(e);
      assert.equal(rest.length, 20);
      assert.equal(rest.at(-1)!.finishReason, 'length');
      assert.equal(engine.stats().blocksUsed, 0);
    });

    it('leaving a stream early (break) cancels its request: its blocks are free', async () => {
      const engine = new Engine(m, { blockSize: 4 });
      const local = new LocalEngine(engine);
      let n = 0;
      for await (const e of local.generate({
        prompt: prompts(12, [7], V)[0]!,
        params: { temperature: 0, maxTokens: 100, ignoreEos: true },
      })) {
        void e;
        if (++n === 2) break;
      }
      assert.equal(engine.stats().blocksUsed, 0);
      assert.equal(engine.hasWork, false);
    });

    it('events carry the routed experts of the position each token came from, as the router returned them', () => {
      const p = prompts(9, [6], V)[0]!;
      const engine = new Engine(m);
      engine.add('x', p, { temperature: 0, maxTokens: 3, ignoreEos: true, returnExperts: true });
      const events: TokenEvent[] = [];
      while (engine.hasWork) events.push(...engine.step());
      const seq = [...p, ...events.map((e) => e.id)];
      events.forEach((e, s) => {
        const upto = seq.slice(0, p.length + s);
        const r = T.noGrad(() => m.forward(T.intTensor([upto], undefined, { backend })).router);
        assert.equal(e.experts!.length, r.length);
        e.experts!.forEach((l, j) => {
          const K = m.config.num_experts_per_tok!;
          const row = upto.length - 1;
          assert.equal(l.layer, r[j]!.layer);
          assert.deepEqual(l.experts, r[j]!.indices.toArray().slice(row * K, row * K + K));
          assertClose(l.weights, r[j]!.weights.toArray().slice(row * K, row * K + K), 1e-5, 1e-4, 'gate weights');
        });
      });
    });

    it('refuses bad requests with the field named', () => {
      const engine = new Engine(m, { numBlocks: 4, blockSize: 4 });
      assert.throws(() => engine.add('a', [], {}), /prompt is empty/);
      assert.throws(() => engine.add('a', [V], {}), /outside the vocabulary/);
      assert.throws(() => engine.add('a', new Array(16).fill(1), {}), /at most 15/);
      assert.throws(() => engine.add('a', [1], { temperature: -1 }), /temperature/);
      assert.throws(() => engine.add('a', [1], { topP: 0 }), /topP/);
      assert.throws(() => engine.add('a', [1], { maxTokens: 0 }), /maxTokens/);
      assert.throws(() => engine.add('a', [1], {}, 0), /n must be/);
    });

    it('a sequence that outgrows the whole cache ends with finish reason length', () => {
      const engine = new Engine(m, { numBlocks: 3, blockSize: 4 });
      engine.add('a', [1, 2, 3], { temperature: 0, maxTokens: 100, ignoreEos: true });
      const events: TokenEvent[] = [];
      while (engine.hasWork) events.push(...engine.step());
      assert.equal(events.at(-1)!.finishReason, 'length');
      assert.equal(events.length, 12 - 3, 'prompt + output fill the 12 slots');
    });
  });
}

describe('block manager', () => {
  it('reference counts, prefix hits on full blocks only, reuse of freed blocks oldest first', () => {
    const bm = new BlockManager(6, 4);
    const ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    const a: number[] = [];
    assert.ok(bm.ensure(a, ids.length));
    assert.equal(a.length, 3);
    let prev = '';
    for (let b = 0; b < 2; b++) prev = bm.register(a, b, ids, prev);
    const hit = bm.lookup(ids);
    assert.deepEqual(hit, a.slice(0, 2));
    assert.deepEqual(bm.lookup([1, 2, 3, 4, 5, 6, 7, 8]), a.slice(0, 1), 'never the last token: 8 tokens hit one block');
    assert.deepEqual(bm.lookup([1, 2, 3, 9, 5, 6, 7, 8, 9]), [], 'a different first block breaks the chain');
    const b: number[] = [];
    bm.share(hit, b);
    assert.equal(bm.refCount(a[0]!), 2);
    bm.release(a);
    assert.equal(bm.refCount(b[0]!), 1);
    assert.equal(bm.freeBlocks, 4);
    bm.release(b);
    assert.equal(bm.freeBlocks, 6);
    // freed blocks keep their hash until handed out again
    assert.equal(bm.lookup(ids).length, 2);
    const c: number[] = [];
    assert.ok(bm.ensure(c, 24));
    assert.equal(bm.lookup(ids).length, 0, 'overwritten blocks are forgotten');
    assert.ok(!bm.ensure([], 4), 'no free block left');
  });
});
