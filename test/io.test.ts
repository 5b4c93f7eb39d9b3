// safetensors reading and writing, sharded checkpoints, corrupt files, and HF model directory round trips.
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as T from '../src/node.js';
import { assertClose } from './helpers.js';
import { Checkpoint, SafetensorsFile, writeSafetensors } from '../src/io/safetensors.js';
import { loadModel, saveModel } from '../src/model/load.js';
import { DeepseekV2ForCausalLM } from '../src/model/model.js';
import { preset } from '../src/model/presets.js';
import { configJsonText, parseConfig } from '../src/model/config.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'dsv2-io-'));

/** A hand-built safetensors file with the given header object and data bytes. */
function rawFile(header: unknown, data: Uint8Array): string {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const p = join(tmp(), 'x.safetensors');
  writeFileSync(p, Buffer.concat([len, json, data]));
  return p;
}

describe('safetensors', () => {
  it('writes sorted, 8-byte aligned files that read back exactly in F32, BF16 and F16', () => {
    const dir = tmp();
    const a = new Float32Array([1, -2.5, 3.140625, 0]);
    const b = new Float32Array([0.5, 0.25]);
    for (const dtype of ['F32', 'BF16', 'F16'] as const) {
      const p = join(dir, `${dtype}.safetensors`);
      writeSafetensors(
        p,
        [
          { name: 'z', shape: [2, 2], data: a },
          { name: 'a', shape: [2], data: b },
        ],
        dtype,
      );
      const f = new SafetensorsFile(p);
      assert.deepEqual([...f.tensors.keys()], ['a', 'z']);
      assert.equal(f.tensors.get('a')!.dtype, dtype);
      assert.deepEqual(Array.from(f.read('z')), Array.from(a));
      assert.deepEqual(f.tensors.get('z')!.shape, [2, 2]);
      const n = Number(readFileSync(p).readBigUInt64LE(0));
      assert.equal((8 + n) % 8, 0);
      f.close();
    }
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.includes('.tmp')),
      [],
      'no temp files left behind',
    );
  });

  it('rejects truncated, corrupt and inconsistent files with a message naming the problem', () => {
    const ok = { w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
    const bad: [string, RegExp][] = [
      [rawFile(ok, new Uint8Array(4)), /data ends at byte 8 but the file has only 4/],
      [
        rawFile({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
        /8 bytes of data for shape \[3\] F32 \(needs 12\)/,
      ],
      [rawFile({ w: { dtype: 'Q4', shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8)), /unknown dtype "Q4"/],
      [
        rawFile(
          { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } },
          new Uint8Array(12),
        ),
        /overlap/,
      ],
    ];
    for (const [path, re] of bad) assert.throws(() => new SafetensorsFile(path), re);
    const junk = join(tmp(), 'junk.safetensors');
    writeFileSync(junk, Buffer.from('this is not a safetensors file at all'));
    assert.throws(() => new SafetensorsFile(junk), /header length .* does not fit|not valid JSON/);
    const short = join(tmp(), 'short.safetensors');
    writeFileSync(short, Buffer.alloc(3));
    assert.throws(() => new SafetensorsFile(short), /too short/);
    assert.throws(() => new SafetensorsFile(join(tmp(), 'missing.safetensors')), /no such file/);
  });

  it('opens a sharded checkpoint through model.safetensors.index.json', () => {
    const dir = tmp();
    writeSafetensors(join(dir, 'model-00001-of-00002.safetensors'), [{ name: 'a', shape: [1], data: new Float32Array([1]) }]);
    writeSafetensors(join(dir, 'model-00002-of-00002.safetensors'), [{ name: 'b', shape: [1], data: new Float32Array([2]) }]);
    const index = { metadata: {}, weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } };
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
    const ck = Checkpoint.open(dir);
    assert.deepEqual([ck.read('a')[0], ck.read('b')[0]], [1, 2]);
    ck.close();
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: 'model-00002-of-00002.safetensors' } }));
    assert.throws(() => Checkpoint.open(dir), /does not hold it/);
  });
});

describe('HF model directories', () => {
  it('save → load round-trips config and weights (F32 exactly; BF16 to bf16 precision)', () => {
    const m = DeepseekV2ForCausalLM.init(preset('tiny'), { seed: 4, backend: T.loadBackend('ts') });
    const dir = tmp();
    saveModel(m, dir);
    const back = loadModel(dir, { trainable: false });
    assert.deepEqual(back.config, m.config);
    for (const name of m.params.names()) assert.deepEqual(back.params.get(name).toArray(), m.params.get(name).toArray(), name);
    const bdir = tmp();
    saveModel(m, bdir, 'BF16');
    const w = m.params.get('lm_head.weight').toArray();
    const got = loadModel(bdir, { trainable: false }).params.get('lm_head.weight').toArray();
    got.forEach((v, i) => assert.ok(Math.abs(v - w[i]!) <= Math.abs(w[i]!) * 2 ** -8, `bf16 rounding at ${i}`));
  });

  it('a checkpoint that does not match its config.json names every problem', () => {
    const dir = tmp();
    copyFileSync('test/golden/lite/model.safetensors', join(dir, 'model.safetensors'));
    const cfg = JSON.parse(readFileSync('test/golden/lite/config.json', 'utf8'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, q_lora_rank: 8 }));
    assert.throws(() => loadModel(dir), /missing tensor '.*q_a_proj.weight'.*unexpected tensor '.*q_proj.weight'/);
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, hidden_size: 32 }));
    assert.throws(() => loadModel(dir), /has shape \[400, 64\], expected \[400, 32\]/);
    writeFileSync(join(dir, 'config.json'), '{"hidden_size": ');
    assert.throws(() => loadModel(dir), /config.json: not valid JSON/);
  });
});

describe('config.json for Hugging Face', () => {
  it('writes float fields as floats (transformers 5 rejects routed_scaling_factor: 1) and the weights’ torch_dtype', () => {
    const c = preset('deepseek-v2-lite');
    const text = configJsonText(c);
    for (const line of [
      '"routed_scaling_factor": 1.0',
      '"rope_theta": 10000.0',
      '"factor": 40.0',
      '"beta_fast": 32.0',
      '"beta_slow": 1.0',
      '"torch_dtype": "float32"',
    ])
      assert.ok(text.includes(line), `${line} in config.json`);
    assert.ok(text.includes('"original_max_position_embeddings": 4096,'), 'integer fields stay integers');
    assert.deepEqual(parseConfig(JSON.parse(text)), c, 'the text reads back as the same config');
    assert.ok(configJsonText(c, 'bfloat16').includes('"torch_dtype": "bfloat16"'));
  });
});

/** A Python whose transformers has the native deepseek_v2: $DSV2_PYTHON, else python3 on the PATH. */
function pythonWithTransformers(): string | null {
  for (const p of [process.env['DSV2_PYTHON'], 'python3']) {
    const ok =
      p && spawnSync(p, ['-c', 'from transformers.models.deepseek_v2 import modeling_deepseek_v2'], { stdio: 'ignore' }).status === 0;
    if (ok) return p!;
  }
  return null;
}

describe('Hugging Face transformers (where a Python with it is installed)', () => {
  it('AutoModelForCausalLM.from_pretrained loads a checkpoint we save, unchanged, and gives our logits within 1e-4', (t) => {
    const python = pythonWithTransformers();
    if (!python) return t.skip('no Python with transformers ≥ 5 (set DSV2_PYTHON to one); the config.json fixture is checked above');
    const dir = mkdtempSync(join(tmpdir(), 'dsv2-hf-'));
    // small's shapes (group-limited routing over 4 groups, 2 shared experts), weights large enough to route sharply
    const m = DeepseekV2ForCausalLM.init(preset('small'), { seed: 3, std: 0.1, backend: T.loadBackend('ts') });
    saveModel(m, dir);
    const ids = [[0, 5, 9, 3, 7, 2]];
    const r = spawnSync(python, ['scripts/hf-transformers-logits.py'], {
      input: JSON.stringify({ dir, input_ids: ids }),
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
    const hf = JSON.parse(r.stdout) as { logits: number[] };
    const ours = T.noGrad(() => m.forward(T.intTensor(ids, undefined, { backend: m.backend })).logits.toArray());
    assertClose(ours, hf.logits, 1e-4, 1e-4, 'our logits against transformers’ (the golden tolerance)');
  });
});
