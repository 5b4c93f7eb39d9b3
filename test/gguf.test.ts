// GGUF in and out (src/io/gguf.ts, src/io/gguf-deepseek2.ts): files we write read back bit for bit; a model from a
// GGUF computes what the same model quantized in memory computes; the config survives without our own key; the
// tokenizer survives with and without its HF JSON; truncated, mutated and inconsistent files give one GgufError;
// and the CLI goes HF → GGUF → generate/logits → HF, including a reduced-depth model of V2-Lite's real widths.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { intTensor, loadBackend, noGrad } from '../src/node.js';
import { generateGreedy } from '../src/infer/generate.js';
import { GgufError, GgufFile, str, u32, writeGguf, type GgufTensorOut, type GgufValue, type GgmlType } from '../src/io/gguf.js';
import { configFromGguf, ggufMetadata, ggufTensors, tokenizerFromGguf } from '../src/io/gguf-deepseek2.js';
import { loadGgufModel } from '../src/io/gguf-load.js';
import { ConfigError, configToJson, parseConfig } from '../src/model/config.js';
import { loadModel, saveModel } from '../src/model/load.js';
import { DeepseekV2ForCausalLM } from '../src/model/model.js';
import { preset } from '../src/model/presets.js';
import { dequantize, QUANT_FORMATS, rowBytes } from '../src/quant/formats.js';
import { quantizeParams } from '../src/quant/model.js';
import { Rng } from '../src/tensor/random.js';
import { storedWeight, wrap } from '../src/tensor/tensor.js';
import { trainBpe } from '../src/tokenizer/train.js';
import { DEEPSEEK_PRETOKENIZERS } from '../src/tokenizer/pretokenizers.js';
import { testBackends } from './helpers.js';

const G = 'test/golden';
const tmp = mkdtempSync(join(tmpdir(), 'dsv2-gguf-'));
const backend = testBackends().find((b) => b.name === 'native') ?? loadBackend('ts');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const cases = (name: string): any => JSON.parse(readFileSync(`${G}/${name}/cases.json`, 'utf8'));

function writeModel(path: string, model: DeepseekV2ForCausalLM, type: GgmlType, drop: string[] = []): void {
  const md = ggufMetadata(model.config, null, type, 'test').filter(([k]) => !drop.includes(k));
  writeGguf(
    path,
    md,
    ggufTensors(model.config, (n) => model.params.get(n).f32(), type),
  );
}

function logitsOf(model: DeepseekV2ForCausalLM, ids: number[][]): number[] {
  return noGrad(() => model.forward(intTensor(ids, undefined, { backend: model.backend })).logits.toArray());
}

const wrapF32 = (x: Float32Array, shape: number[]) => wrap(backend, x, shape);

function dsv2(...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['bin/dsv2.js', ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('GGUF files we write', () => {
  for (const type of ['f32', 'bf16', 'q8_0', 'q4_0', 'q5_1'] as GgmlType[]) {
    it(`${type}: reads back bit for bit, and rewriting what was read gives the same file`, () => {
      const model = loadModel(`${G}/full`, { trainable: false, backend });
      const path = join(tmp, `full-${type}.gguf`);
      writeModel(path, model, type);
      const g = new GgufFile(path);
      const wrote = ggufTensors(model.config, (n) => model.params.get(n).f32(), type);
      for (const t of wrote) {
        const info = g.tensors.get(t.name)!;
        assert.deepEqual(info.ne, [...t.ne], t.name);
        assert.equal(info.type, t.type, t.name);
        const want = Buffer.concat([...t.chunks()].map((c) => Buffer.from(c)));
        assert.ok(Buffer.from(g.data(t.name)).equals(want), `${t.name}: bytes differ`);
      }
      const again: GgufTensorOut[] = [...g.tensors.values()].map((t) => ({
        name: t.name,
        ne: t.ne,
        type: t.type,
        chunks: () => [g.data(t.name)],
      }));
      const path2 = join(tmp, `full-${type}-again.gguf`);
      writeGguf(path2, [...g.metadata.entries()], again);
      g.close();
      assert.ok(readFileSync(path).equals(readFileSync(path2)), 'the rewritten file differs');
    });
  }

  it('a header parsed once is reused for the same unchanged file, never for one rewritten in place', () => {
    const p = join(tmp, 'reuse.gguf');
    writeGguf(
      p,
      [
        ['general.architecture', str('deepseek2')],
        ['test.name', str('aaaa')],
        ['test.n', u32(7)],
      ],
      [],
    );
    const a = new GgufFile(p);
    const b = new GgufFile(p); // from the cache
    assert.deepEqual([...b.metadata], [...a.metadata]);
    assert.equal(b.dataOffset, a.dataOffset);
    a.close();
    b.close();
    // the same size, the same inode, likely the same modification time: the header bytes tell them apart
    const bytes = readFileSync(p);
    bytes.write('bbbb', bytes.indexOf('aaaa'));
    writeFileSync(p, bytes);
    const c = new GgufFile(p);
    assert.equal(c.str('test.name'), 'bbbb');
    c.close();
  });

  it('a model loaded from a GGUF computes exactly what the same model quantized in memory computes', () => {
    const c = cases('lite');
    for (const type of ['q8_0', 'q4_0', 'bf16'] as const) {
      const model = loadModel(`${G}/lite`, { trainable: false, backend });
      const path = join(tmp, `lite-${type}.gguf`);
      writeModel(path, model, type);
      quantizeParams(model.params, type);
      const { model: fromFile, file } = loadGgufModel(path, { backend });
      assert.equal(file.isMapped, backend.mapFile !== undefined, 'the native backend maps the file');
      for (const n of model.params.names()) assert.equal(fromFile.params.get(n).dtype, model.params.get(n).dtype, n);
      assert.deepEqual(logitsOf(fromFile, c.input_ids), logitsOf(model, c.input_ids), type);
      file.close();
    }
  });

  it('gen from a q8_0 GGUF: the reference’s 32 greedy tokens', () => {
    const c = cases('gen');
    const path = join(tmp, 'gen-q8_0.gguf');
    writeModel(path, loadModel(`${G}/gen`, { trainable: false, backend }), 'q8_0');
    const model = loadModel(path, { trainable: false, backend });
    assert.deepEqual(generateGreedy(model, c.prompt_ids, { maxNewTokens: c.new_tokens }), c.generated_ids);
  });

  it('the config comes back from the standard deepseek2 keys alone (a file llama.cpp wrote)', () => {
    for (const name of ['lite', 'full']) {
      const model = loadModel(`${G}/${name}`, { trainable: false, backend });
      const path = join(tmp, `${name}-std.gguf`);
      writeModel(path, model, 'f32', ['dsv2.hf_config']);
      const g = new GgufFile(path);
      const got = configToJson(configFromGguf(g)) as Record<string, unknown>;
      g.close();
      const want = configToJson(model.config) as Record<string, unknown>;
      // training-only fields that GGUF has no key for come back as the defaults
      for (const k of ['aux_loss_alpha', 'seq_aux', 'initializer_range']) {
        delete got[k];
        delete want[k];
      }
      assert.deepEqual(got, want, name);
      assert.deepEqual(
        logitsOf(loadModel(path, { trainable: false, backend }), cases(name).input_ids),
        logitsOf(model, cases(name).input_ids),
      );
    }
  });

  it('the legacy layout (attn_kv_b unsplit, no *_mla keys: GGUFs made before llama.cpp’s MLA form) loads to the same model', () => {
    const model = loadModel(`${G}/full`, { trainable: false, backend });
    const c = model.config;
    const H = c.num_attention_heads;
    const path = join(tmp, 'legacy.gguf');
    const md: [string, GgufValue][] = ggufMetadata(c, null, 'f32', 'legacy')
      .filter(([k]) => !k.endsWith('_mla') && k !== 'dsv2.hf_config')
      .map(([k, v]) => {
        if (k === 'deepseek2.attention.key_length') return [k, u32(c.qk_nope_head_dim + c.qk_rope_head_dim)];
        if (k === 'deepseek2.attention.value_length') return [k, u32(c.v_head_dim)];
        if (k === 'deepseek2.attention.head_count_kv') return [k, u32(H)];
        return [k, v];
      });
    const tensors = ggufTensors(c, (n) => model.params.get(n).f32(), 'f32').flatMap((t): GgufTensorOut[] => {
      const m = /^blk\.(\d+)\.attn_(k|v)_b\.weight$/.exec(t.name);
      if (!m) return [t];
      if (m[2] === 'v') return [];
      const w = model.params.get(`model.layers.${m[1]}.self_attn.kv_b_proj.weight`);
      return [
        {
          name: `blk.${m[1]}.attn_kv_b.weight`,
          ne: [...w.shape].reverse(),
          type: 'f32',
          chunks: () => [new Uint8Array(w.f32().slice().buffer)],
        },
      ];
    });
    writeGguf(path, md, tensors);
    const ids = cases('full').input_ids;
    assert.deepEqual(logitsOf(loadModel(path, { trainable: false, backend }), ids), logitsOf(model, ids));
  });

  it('the tokenizer comes back, from its HF JSON and from tokenizer.ggml.* alone', () => {
    const text = 'Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in my purse. 1234 ok';
    const tok = trainBpe([text.repeat(3)], { vocabSize: 300, specials: ['<|bos|>', '<|eos|>'] });
    const c = parseConfig({
      ...configToJson(preset('tiny')),
      vocab_size: 300,
      bos_token_id: tok.idOf('<|bos|>'),
      eos_token_id: tok.idOf('<|eos|>'),
    });
    const model = DeepseekV2ForCausalLM.init(c, { backend });
    for (const drop of [[], ['tokenizer.huggingface.json']]) {
      const path = join(tmp, `tok-${drop.length}.gguf`);
      writeGguf(
        path,
        ggufMetadata(c, tok, 'f32', 't').filter(([k]) => !drop.includes(k)),
        ggufTensors(c, (n) => model.params.get(n).f32(), 'f32'),
      );
      const g = new GgufFile(path);
      assert.equal(g.str('tokenizer.ggml.pre'), 'gpt-2');
      const back = tokenizerFromGguf(g, DEEPSEEK_PRETOKENIZERS);
      g.close();
      assert.deepEqual(back.encode(text), tok.encode(text), `without ${drop.join(',') || 'nothing'}`);
      assert.equal(back.decode(back.encode(text)), text);
      assert.equal(back.idOf('<|eos|>'), tok.idOf('<|eos|>'));
    }
  });

  it('K-quant weights (llama.cpp’s Q4_K_M files) are multiplied as stored: the float32 model of the decoded weights agrees', () => {
    const c = preset('tiny', { hidden_size: 256, intermediate_size: 512, moe_intermediate_size: 256, vocab_size: 512 });
    const plain = DeepseekV2ForCausalLM.init(c, { backend, seed: 3 });
    const stored = DeepseekV2ForCausalLM.init(c, { backend, seed: 3 });
    const rng = new Rng(9);
    const types = ['q4_k', 'q5_k', 'q6_k'] as const;
    let used = 0;
    for (const n of plain.params.names()) {
      const t = plain.params.get(n);
      if (t.ndim !== 2 || t.shape[1]! % 256 !== 0 || n.endsWith('mlp.gate.weight') || n.endsWith('kv_b_proj.weight')) continue;
      const type = types[used++ % 3]!;
      const [N, K] = t.shape as [number, number];
      const bytes = new Uint8Array(N * rowBytes(type, K)).map(() => Math.floor(rng.uniform() * 256));
      const bs = QUANT_FORMATS[type].blockBytes;
      for (let b = 0; b < bytes.length / bs; b++) {
        // small block scales (f16 0.0005 and 0.0003) so that activations stay in a realistic range
        if (type === 'q6_k') bytes.set([0x19, 0x10], b * bs + 208);
        else bytes.set([0x19, 0x10, 0xea, 0x0c], b * bs);
      }
      plain.params.set(n, wrapF32(dequantize(type, bytes, N, K), [N, K]));
      stored.params.set(n, storedWeight(backend, type, bytes, [N, K]));
    }
    assert.ok(used >= 6, `${used} K-quant weights`);
    const ids = [[1, 2, 3, 4, 5, 6]];
    const a = logitsOf(plain, ids);
    const b = logitsOf(stored, ids);
    // the stored model quantizes activations to int16 (≤ 1.5e-5 relative per value), the float32 one does not
    a.forEach((v, i) => assert.ok(Math.abs(v - b[i]!) <= 1e-3 + 1e-3 * Math.abs(v), `logit ${i}: ${b[i]} vs ${v}`));
  });
});

describe('hostile GGUF files', () => {
  const model = loadModel(`${G}/lite`, { trainable: false, backend });
  const good = join(tmp, 'hostile-base.gguf');
  writeModel(good, model, 'q8_0');
  const bytes = readFileSync(good);
  const open = (b: Uint8Array, name: string): unknown => {
    const p = join(tmp, name);
    writeFileSync(p, b);
    try {
      loadModel(p, { trainable: false, backend });
      return null;
    } catch (e) {
      return e;
    }
  };
  const clear = (e: unknown, what: string): void => {
    if (e === null) return;
    assert.ok(e instanceof GgufError || e instanceof ConfigError, `${what}: ${(e as Error).constructor.name}: ${(e as Error).message}`);
    assert.ok((e as Error).message.length < 400, `${what}: a long message`);
  };

  it('a truncated file names the file and what is missing, at any cut', () => {
    const rng = new Rng(1);
    const cuts = [0, 3, 8, 23, 100, 1000, bytes.length - 1, ...Array.from({ length: 40 }, () => Math.floor(rng.uniform() * bytes.length))];
    for (const cut of cuts) {
      const e = open(bytes.subarray(0, cut), 'cut.gguf');
      assert.ok(e instanceof GgufError, `cut at ${cut}: ${String(e)}`);
      assert.match((e as Error).message, /cut\.gguf: /);
    }
    assert.match(String(open(bytes.subarray(0, bytes.length - 40), 'cut.gguf')), /runs past the end of the file .*truncated/);
  });

  it('seeded byte mutations of the header and metadata give a model or one GgufError/ConfigError, never a crash', () => {
    const rng = new Rng(2026);
    const g = new GgufFile(good);
    const headerEnd = g.dataOffset;
    g.close();
    for (let i = 0; i < 300; i++) {
      const b = Uint8Array.from(bytes);
      const n = 1 + Math.floor(rng.uniform() * 4);
      for (let k = 0; k < n; k++) b[Math.floor(rng.uniform() * headerEnd)] = Math.floor(rng.uniform() * 256);
      clear(open(b, 'mut.gguf'), `mutant ${i}`);
    }
  });

  it('inconsistent files are refused with the field named', () => {
    const other = join(tmp, 'wrong-arch.gguf');
    const md: [string, GgufValue][] = ggufMetadata(model.config, null, 'f32', 'x').map(([k, v]) => [
      k,
      k === 'general.architecture' ? str('llama') : v,
    ]);
    writeGguf(
      other,
      md,
      ggufTensors(model.config, (n) => model.params.get(n).f32(), 'f32'),
    );
    assert.throws(() => loadModel(other, { trainable: false, backend }), /general\.architecture is "llama", not "deepseek2"/);
    const dims = join(tmp, 'wrong-dims.gguf');
    const cfg = parseConfig({ ...configToJson(model.config), hidden_size: 96 });
    writeGguf(
      dims,
      ggufMetadata(cfg, null, 'f32', 'x'),
      ggufTensors(model.config, (n) => model.params.get(n).f32(), 'f32'),
    );
    assert.throws(
      () => loadModel(dims, { trainable: false, backend }),
      /tensor 'token_embd\.weight' has dims \[64,400\], the config needs \[96,400\]/,
    );
    assert.throws(() => new GgufFile(join(tmp, 'nope.gguf')), /nope\.gguf: cannot open \(ENOENT\)/);
    writeFileSync(join(tmp, 'notgguf.gguf'), 'GGUX' + 'x'.repeat(40));
    assert.throws(() => new GgufFile(join(tmp, 'notgguf.gguf')), /not a GGUF file/);
  });
});

describe('dsv2 quantize / convert', () => {
  it('HF → GGUF q8_0 → logits equal the in-memory quantized model’s; GGUF → HF (f32) → the same logits', () => {
    const out = join(tmp, 'cli-lite.gguf');
    const r = dsv2('quantize', '--model', `${G}/lite`, '--type', 'q8_0', '--out', out);
    assert.equal(r.code, 0, r.err);
    const info = JSON.parse(r.out);
    assert.equal(info.type, 'q8_0');
    assert.ok(info.peak_rss_mib < 400, `peak RSS ${info.peak_rss_mib} MiB`);
    writeFileSync(join(tmp, 'ids.json'), JSON.stringify({ input_ids: cases('lite').input_ids }));
    assert.equal(dsv2('logits', '--model', out, '--input', join(tmp, 'ids.json'), '--output', join(tmp, 'gguf-logits.json')).code, 0);
    const model = loadModel(`${G}/lite`, { trainable: false, backend });
    quantizeParams(model.params, 'q8_0');
    const got = (JSON.parse(readFileSync(join(tmp, 'gguf-logits.json'), 'utf8')).logits as number[][][]).flat(2);
    const want = logitsOf(model, cases('lite').input_ids);
    got.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) <= 1e-5, `logit ${i}: ${v} vs ${want[i]}`));
    const hf = join(tmp, 'cli-hf');
    const c = dsv2('convert', '--to', 'hf', '--model', out, '--out', hf, '--dtype', 'f32');
    assert.equal(c.code, 0, c.err);
    // the HF directory holds the GGUF's weights decoded to float32: the same model as decoding them in memory
    const back = logitsOf(loadModel(hf, { trainable: false, backend }), cases('lite').input_ids);
    const decoded = loadModel(out, { trainable: false, backend });
    for (const n of decoded.params.names()) {
      const t = decoded.params.get(n);
      if (t.isStored()) decoded.params.set(n, wrap(backend, t.floats(), [...t.shape]));
    }
    assert.deepEqual(back, logitsOf(decoded, cases('lite').input_ids));
  });

  it('bad flags and outputs get one clear line', () => {
    const q = dsv2('quantize', '--model', `${G}/lite`, '--type', 'q4_k', '--out', join(tmp, 'x.gguf'));
    assert.equal(q.code, 2);
    assert.match(q.err, /--type must be one of q8_0, q4_0, q4_1, q5_0, q5_1, bf16, f16, f32, got 'q4_k'/);
    const d = dsv2('quantize', '--model', `${G}/lite`, '--type', 'q8_0', '--out', '/dev/null');
    assert.equal(d.code, 2);
    assert.match(d.err, /--out \/dev\/null exists and is not a regular file/);
    const c = dsv2('convert', '--to', 'hf', '--model', `${G}/lite/config.json`, '--out', join(tmp, 'y'));
    assert.equal(c.code, 2);
    assert.match(c.err, /is not a GGUF file/);
  });

  it('a 2-layer model with DeepSeek-V2-Lite’s widths goes HF → GGUF q8_0 → generate', () => {
    // hidden 2048, 16 heads, kv_lora 512, nope/rope/v 128/64/128, experts of 1408 and a dense layer of 10944 (the two
    // row lengths that are not multiples of 256); fewer experts (8, top-6) and a smaller vocabulary keep it ~200 M
    const c = preset('deepseek-v2-lite', { num_hidden_layers: 2, n_routed_experts: 8, vocab_size: 4096, bos_token_id: 0, eos_token_id: 1 });
    const dir = join(tmp, 'lite-widths');
    saveModel(DeepseekV2ForCausalLM.init(c, { backend, seed: 1 }), dir);
    const out = join(tmp, 'lite-widths-q8_0.gguf');
    const r = dsv2('quantize', '--model', dir, '--type', 'q8_0', '--out', out);
    assert.equal(r.code, 0, r.err);
    writeFileSync(
      join(tmp, 'p.json'),
      JSON.stringify({
        input_ids: [
          [5, 6, 7, 8],
          [9, 10],
        ],
      }),
    );
    const gen = dsv2('generate', '--model', out, '--input', join(tmp, 'p.json'), '--max-new-tokens', '4', '--output', join(tmp, 'g.json'));
    assert.equal(gen.code, 0, gen.err);
    const ids = JSON.parse(readFileSync(join(tmp, 'g.json'), 'utf8')).generated_ids as number[][];
    assert.deepEqual(
      ids.map((r) => r.length),
      [4, 4],
    );
    const g = new GgufFile(out);
    assert.equal(g.tensors.get('blk.1.ffn_down_exps.weight')!.type, 'q8_0');
    assert.deepEqual(g.tensors.get('blk.1.ffn_down_exps.weight')!.ne, [1408, 2048, 8]);
    assert.deepEqual(g.tensors.get('blk.0.attn_k_b.weight')!.ne, [128, 512, 16]);
    g.close();
  });
});
