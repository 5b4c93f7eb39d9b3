// Models from files held in memory (what a page gets from fetch or File objects): an HF directory's files, its
// shards with an index.json, or a GGUF, give the same model as the Node loaders read from disk; a model's files
// written from memory load back with dsv2's own loader; broken file sets get one clear error.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as T from '../src/node.js';
import { ggufMetadata, ggufTensors } from '../src/io/gguf-deepseek2.js';
import { writeGguf } from '../src/io/gguf.js';
import { generateGreedy } from '../src/infer/generate.js';
import { trainBpe } from '../src/tokenizer/train.js';

const G = 'test/golden';
const tmp = mkdtempSync(join(tmpdir(), 'dsv2-files-'));
const backend = T.loadBackend('ts');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const cases = (name: string): any => JSON.parse(readFileSync(`${G}/${name}/cases.json`, 'utf8'));

function files(dir: string, names: string[]): T.ModelFiles {
  return new Map(names.map((n) => [n.split('/').pop()!, new Uint8Array(readFileSync(join(dir, n)))]));
}
const logits = (m: T.DeepseekV2ForCausalLM, ids: number[][]): number[] =>
  T.noGrad(() => m.forward(T.intTensor(ids, undefined, { backend: m.backend })).logits.toArray());

describe('models from files in memory', () => {
  it('an HF directory’s files give the logits the disk loader gives, and the golden gen greedy tokens', () => {
    for (const name of ['lite', 'full']) {
      const { model } = T.loadModelFromFiles(files(`${G}/${name}`, ['config.json', 'model.safetensors']), { backend });
      const disk = T.loadModel(`${G}/${name}`, { trainable: false, backend });
      const ids = cases(name).input_ids as number[][];
      assert.deepEqual(logits(model, ids), logits(disk, ids), name);
    }
    const c = cases('gen');
    const { model, tokenizer } = T.loadModelFromFiles(files(`${G}/gen`, ['config.json', 'model.bf16.safetensors']), { backend });
    assert.equal(tokenizer, null);
    assert.deepEqual(generateGreedy(model, c.prompt_ids, { maxNewTokens: c.new_tokens }), c.generated_ids);
  });

  it('shards named by an index.json load, and a shard the index names but the files lack is one clear error', () => {
    const src = T.loadModel(`${G}/lite`, { trainable: false, backend });
    const names = src.params.names();
    const half = Math.ceil(names.length / 2);
    const shard = (list: string[]): Uint8Array =>
      T.encodeSafetensors(list.map((n) => ({ name: n, shape: src.params.get(n).shape, data: src.params.get(n).floats() })));
    const weightMap = Object.fromEntries(names.map((n, i) => [n, i < half ? 'a.safetensors' : 'b.safetensors']));
    const fs: T.ModelFiles = new Map([
      ['config.json', new Uint8Array(readFileSync(`${G}/lite/config.json`))],
      ['model.safetensors.index.json', new TextEncoder().encode(JSON.stringify({ weight_map: weightMap }))],
      ['a.safetensors', shard(names.slice(0, half))],
      ['b.safetensors', shard(names.slice(half))],
    ]);
    const { model } = T.loadModelFromFiles(fs, { backend });
    const ids = cases('lite').input_ids as number[][];
    assert.deepEqual(logits(model, ids), logits(src, ids));
    fs.delete('b.safetensors');
    assert.throws(
      () => T.loadModelFromFiles(fs, { backend }),
      /weight_map puts '.*' in "?b\.safetensors"?, which is not among the files given/,
    );
  });

  it('a GGUF in memory gives the model and tokenizer the GGUF file gives', () => {
    const model = T.loadModel(`${G}/lite`, { trainable: false, backend });
    const tok = trainBpe(['hello world, hello experts'], { vocabSize: 300 });
    const path = join(tmp, 'lite.gguf');
    writeGguf(
      path,
      ggufMetadata(model.config, tok, 'q8_0', 'test'),
      ggufTensors(model.config, (n) => model.params.get(n).f32(), 'q8_0'),
    );
    const fromBytes = T.loadModelFromFiles(new Map([['lite.gguf', new Uint8Array(readFileSync(path))]]), { backend });
    const fromDisk = T.loadModel(path, { trainable: false, backend });
    const ids = cases('lite').input_ids as number[][];
    assert.deepEqual(logits(fromBytes.model, ids), logits(fromDisk, ids));
    assert.deepEqual(fromBytes.tokenizer!.encode('hello experts'), tok.encode('hello experts'));
  });

  it('modelToFiles writes an HF directory dsv2 loads back exactly, tokenizer included', () => {
    const model = T.loadModel(`${G}/full`, { trainable: false, backend });
    const tok = trainBpe(['the experts of a mixture', 'route tokens'], { vocabSize: 300 });
    const dir = join(tmp, 'from-memory');
    mkdirSync(dir, { recursive: true });
    for (const [name, bytes] of T.modelToFiles(model, tok)) writeFileSync(join(dir, name), bytes);
    const back = T.loadModel(dir, { trainable: false, backend });
    const ids = cases('full').input_ids as number[][];
    assert.deepEqual(logits(back, ids), logits(model, ids));
    const tj = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')) as T.TokenizerJson;
    assert.deepEqual(T.Tokenizer.fromJSON(tj).encode('route the experts'), tok.encode('route the experts'));
    assert.ok(JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')).chat_template);
  });

  it('a file set without config.json, or with a broken one, or truncated weights, is one error naming it', () => {
    const fs = files(`${G}/lite`, ['config.json', 'model.safetensors']);
    assert.throws(
      () => T.loadModelFromFiles(new Map([['model.safetensors', fs.get('model.safetensors')!]]), { backend }),
      /config\.json is missing/,
    );
    assert.throws(
      () => T.loadModelFromFiles(new Map([...fs, ['config.json', new TextEncoder().encode('{')]]), { backend }),
      /config\.json: not valid JSON/,
    );
    const w = fs.get('model.safetensors')!;
    assert.throws(
      () => T.loadModelFromFiles(new Map([...fs, ['model.safetensors', w.subarray(0, w.length - 100)]]), { backend }),
      /model\.safetensors: .*(truncated|does not fit)/,
    );
  });
});
