// dsv2 quantize (HF directory or GGUF → GGUF of a storage type) and dsv2 convert --to hf (GGUF → HF directory), both
// streaming tensor by tensor so that peak memory stays a few hundred MB whatever the model's size.
import { existsSync, lstatSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultBackend } from '../../backend/registry.js';
import { GgufError, isGgufFile, str, tensorBytes, writeGguf, type GgmlType } from '../../io/gguf.js';
import { ggufMetadata, ggufTensors, type TensorSource } from '../../io/gguf-deepseek2.js';
import { loadGgufModel } from '../../io/gguf-load.js';
import { loadTokenizer, resolveModelDir } from '../../io/model-dir.js';
import { Checkpoint, writeSafetensorsStreaming } from '../../io/safetensors.js';
import { configJsonText } from '../../model/config.js';
import { checkInventory, readConfig } from '../../model/load.js';
import { expectedTensors } from '../../model/weights.js';
import { dequantize } from '../../quant/formats.js';
import type { Tokenizer } from '../../tokenizer/tokenizer.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { parseFlags, UsageError } from '../args.js';
import { required } from '../io.js';

const WRITABLE = ['q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'bf16', 'f16', 'f32'];

/** Refuse an output path that exists and is not a regular file (a device, FIFO or directory is never replaced). */
function checkOutputFile(path: string): void {
  if (!existsSync(path)) return;
  const st = lstatSync(path);
  if (!st.isFile()) throw new UsageError(`--out ${path} exists and is not a regular file; give a file path`);
}

function peakRssMiB(): number {
  return Math.round(process.resourceUsage().maxRSS / 1024);
}

/** dsv2 quantize --model DIR|FILE.gguf --type T --out FILE.gguf */
export function runQuantize(argv: string[]): number {
  const { flags, positional } = parseFlags(argv, {
    model: { type: 'string', help: 'a Hugging Face model directory (F32/BF16/F16 safetensors, sharded or not) or a GGUF file' },
    type: { type: 'string', help: `storage type of the projections: ${WRITABLE.join(', ')}` },
    out: { type: 'string', help: 'the GGUF file to write (llama.cpp’s deepseek2 layout)' },
  });
  if (positional.length) throw new UsageError(`unexpected argument '${positional[0]}'`);
  const src = resolveModelDir(required(flags['model'] as string | undefined, 'model'));
  const type = required(flags['type'] as string | undefined, 'type') as GgmlType;
  if (!WRITABLE.includes(type)) throw new UsageError(`--type must be one of ${WRITABLE.join(', ')}, got '${type}'`);
  const out = required(flags['out'] as string | undefined, 'out');
  checkOutputFile(out);
  const started = Date.now();
  const config = readConfig(src);
  let read: TensorSource;
  let close = (): void => {};
  let tokenizer: Tokenizer | null = null;
  let chatTemplate: string | undefined;
  if (isGgufFile(src)) {
    // re-quantize: every tensor decoded to float32 as the writer reaches it
    const { model, file } = loadGgufModel(src, { backend: defaultBackend() });
    read = (name, rows) => {
      const t = model.params.get(name);
      const [r0, r1] = rows ?? [0, t.shape.length === 2 ? t.shape[0]! : 1];
      const K = t.shape[t.shape.length - 1]!;
      if (!t.isStored()) return t.f32().subarray(r0 * K, r1 * K);
      const rb = t.bytes().length / t.shape[0]!;
      return dequantize(t.dtype as never, t.bytes().subarray(r0 * rb, r1 * rb), r1 - r0, K);
    };
    close = () => file.close();
    tokenizer = loadTokenizer(src);
    chatTemplate = file.str('tokenizer.chat_template');
  } else {
    const ck = Checkpoint.open(src);
    checkInventory(config, ck, src);
    read = (name, rows) => (rows ? ck.readRows(name, rows[0], rows[1]) : ck.read(name));
    close = () => ck.close();
    if (existsSync(join(src, 'tokenizer.json'))) tokenizer = loadTokenizer(src);
    const tc = join(src, 'tokenizer_config.json');
    if (existsSync(tc)) {
      const t = (JSON.parse(readFileSync(tc, 'utf8')) as { chat_template?: unknown }).chat_template;
      if (typeof t === 'string') chatTemplate = t;
    }
  }
  try {
    const md = ggufMetadata(config, tokenizer, type, src.split('/').filter(Boolean).pop() ?? 'model');
    if (chatTemplate !== undefined) md.push(['tokenizer.chat_template', str(chatTemplate)]);
    const tensors = ggufTensors(config, read, type);
    writeGguf(out, md, tensors);
    const bytes = tensors.reduce((s, t) => s + tensorBytes(t.type, t.ne), 0);
    const counts: Record<string, number> = {};
    for (const t of tensors) counts[t.type] = (counts[t.type] ?? 0) + 1;
    console.log(
      JSON.stringify({
        out,
        type,
        tensors: tensors.length,
        tensor_types: counts,
        weight_bytes: bytes,
        tokenizer: tokenizer !== null,
        seconds: (Date.now() - started) / 1000,
        peak_rss_mib: peakRssMiB(),
      }),
    );
  } finally {
    close();
  }
  return 0;
}

/** dsv2 convert --to hf --model FILE.gguf --out DIR [--dtype bf16|f16|f32] */
export function runConvert(argv: string[]): number {
  const { flags, positional } = parseFlags(argv, {
    to: { type: 'string', help: 'hf (the only target: a Hugging Face model directory)' },
    model: { type: 'string', help: 'a deepseek2 GGUF file' },
    out: { type: 'string', help: 'the directory to write (config.json, model.safetensors, tokenizer files)' },
    dtype: { type: 'string', help: 'safetensors dtype: bf16 (default), f16 or f32' },
  });
  if (positional.length) throw new UsageError(`unexpected argument '${positional[0]}'`);
  if (flags['to'] !== 'hf') throw new UsageError(`--to must be 'hf', got ${flags['to'] === undefined ? 'nothing' : `'${flags['to']}'`}`);
  const src = required(flags['model'] as string | undefined, 'model');
  if (!isGgufFile(src)) throw new UsageError(`--model ${src} is not a GGUF file`);
  const out = required(flags['out'] as string | undefined, 'out');
  const dtype = ((flags['dtype'] as string | undefined) ?? 'bf16').toUpperCase();
  if (dtype !== 'BF16' && dtype !== 'F16' && dtype !== 'F32')
    throw new UsageError(`--dtype must be bf16, f16 or f32, got '${flags['dtype']}'`);
  if (existsSync(out) && !lstatSync(out).isDirectory()) throw new UsageError(`--out ${out} exists and is not a directory`);
  const started = Date.now();
  const { model, file } = loadGgufModel(src, { backend: defaultBackend() });
  try {
    const c = model.config;
    mkdirSync(out, { recursive: true });
    writeSafetensorsStreaming(
      join(out, 'model.safetensors'),
      expectedTensors(c).map((s) => ({
        name: s.name,
        shape: s.shape,
        read: () => {
          const t = model.params.get(s.name);
          return t.floats();
        },
      })),
      dtype,
    );
    const torch = dtype === 'BF16' ? 'bfloat16' : dtype === 'F16' ? 'float16' : 'float32';
    writeFileAtomic(join(out, 'config.json'), configJsonText(c, torch));
    let tokenizer = false;
    try {
      const tok = loadTokenizer(src);
      writeFileAtomic(join(out, 'tokenizer.json'), JSON.stringify(tok.toJSON()));
      const name = (id: number | null): string | null => (id === null ? null : (tok.specials.find((s) => s.id === id)?.content ?? null));
      const tc: Record<string, unknown> = {
        bos_token: name(c.bos_token_id),
        eos_token: name(c.eos_token_id),
        tokenizer_class: 'PreTrainedTokenizerFast',
      };
      const tpl = file.str('tokenizer.chat_template');
      if (tpl !== undefined) tc['chat_template'] = tpl;
      writeFileAtomic(join(out, 'tokenizer_config.json'), JSON.stringify(tc, null, 2));
      tokenizer = true;
    } catch (e) {
      if (!(e instanceof GgufError)) throw e;
      console.error(`dsv2: ${e.message}; wrote the model without a tokenizer`);
    }
    console.log(
      JSON.stringify({ out, dtype: dtype.toLowerCase(), tokenizer, seconds: (Date.now() - started) / 1000, peak_rss_mib: peakRssMiB() }),
    );
  } finally {
    file.close();
  }
  return 0;
}
