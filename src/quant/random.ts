// Random weights of a preset's real shapes, made straight in their stored type: DeepSeek-V2-Lite in q8_0 is 16.7 GB,
// and building it as float32 first (63 GB) or quantizing 15.7 G normal samples (minutes) is not possible or not
// sensible for a benchmark. Blocks get random codes under a scale that gives the weights a std of about `std`, so
// activations keep a sane range through the layers; the bytes read per token, which is what decode speed measures,
// are exactly a real checkpoint's. Norms, the router and kv_b_proj are float32 as in any stored model.
import type { Backend } from '../backend/backend.js';
import type { DeepseekV2Config } from '../model/config.js';
import { DeepseekV2ForCausalLM } from '../model/model.js';
import { Params } from '../model/params.js';
import { expectedTensors } from '../model/weights.js';
import { f32ToF16, f32ToBf16 } from '../tensor/dtype.js';
import { Rng } from '../tensor/random.js';
import { storedWeight, wrap } from '../tensor/tensor.js';
import { QUANT_FORMATS, rowBytes, type QuantType } from './formats.js';
import { headTypeFor, isQuantizable, storageFor } from './model.js';

/** xorshift128+ filling bytes fast (the benchmark's weights need ~10⁹ random bytes per GB). */
function fillRandom(out: Uint8Array, seed: number): void {
  const words = new Uint32Array(out.buffer, out.byteOffset, out.length >>> 2);
  let a = seed | 1;
  let b = 0x9e3779b9 ^ seed;
  for (let i = 0; i < words.length; i++) {
    let t = a ^ (a << 11);
    a = b;
    b = b ^ (b >>> 19) ^ (t ^ (t >>> 8));
    t = b;
    words[i] = (a + t) >>> 0;
  }
  for (let i = words.length * 4; i < out.length; i++) out[i] = (i * 131 + seed) & 0xff;
}

/** The std of a block's codes (uniform random bytes) in units of its scale d, per type. */
const CODE_STD: Partial<Record<QuantType, number>> = { q8_0: 73.9, q4_0: 4.6, q4_1: 4.6, q5_0: 9.2, q5_1: 9.2 };

/** Random stored bytes for an [N, K] weight in `type` with values of std ≈ std. */
export function randomStored(type: QuantType, N: number, K: number, std: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(N * rowBytes(type, K));
  if (type === 'bf16' || type === 'f16') {
    // a pool of 4096 normal values, indexed by random 12-bit numbers
    const rng = new Rng(seed);
    const pool = (type === 'bf16' ? f32ToBf16 : f32ToF16)(Float32Array.from({ length: 4096 }, () => rng.normal() * std));
    fillRandom(bytes, seed);
    const u16 = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2);
    for (let i = 0; i < u16.length; i++) u16[i] = pool[u16[i]! & 4095]!;
    return bytes;
  }
  fillRandom(bytes, seed);
  const f = QUANT_FORMATS[type];
  const d = new Uint16Array(f32ToF16(Float32Array.of(std / (CODE_STD[type] ?? 8))).buffer);
  const m = new Uint16Array(f32ToF16(Float32Array.of(-std * 1.7)).buffer); // q4_1/q5_1: centre the codes on 0
  for (let at = 0; at < bytes.length; at += f.blockBytes) {
    if (type === 'q6_k') {
      bytes[at + 208] = d[0]! & 0xff;
      bytes[at + 209] = d[0]! >> 8;
      continue;
    }
    bytes[at] = d[0]! & 0xff;
    bytes[at + 1] = d[0]! >> 8;
    if (type === 'q4_1' || type === 'q5_1' || type === 'q4_k' || type === 'q5_k') {
      bytes[at + 2] = m[0]! & 0xff;
      bytes[at + 3] = m[0]! >> 8;
    }
  }
  return bytes;
}

/** Bytes a stored model of `config` in `type` holds (what it needs in RAM), by the policy of quantizeParams. */
export function storedModelBytes(config: DeepseekV2Config, type: QuantType | 'f32'): number {
  let total = 0;
  for (const t of expectedTensors(config)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (type === 'f32' || !isQuantizable(t.name, t.shape)) total += 4 * n;
    else {
      const head = t.name === 'lm_head.weight' || t.name === 'model.embed_tokens.weight';
      const to = storageFor(head ? headTypeFor(type) : type, t.shape[1]!);
      total += to === 'f32' ? 4 * n : t.shape[0]! * rowBytes(to, t.shape[1]!);
    }
  }
  return total;
}

/** A model of `config`'s shapes with random weights stored as `type` (see the file comment). */
export function randomStoredModel(config: DeepseekV2Config, type: QuantType, backend: Backend, std = 0.02): DeepseekV2ForCausalLM {
  const rng = new Rng(1);
  const params = new Params();
  let seed = 1;
  for (const t of expectedTensors(config)) {
    seed++;
    if (t.shape.length === 1) {
      params.set(t.name, wrap(backend, new Float32Array(t.shape[0]!).fill(1), [...t.shape]));
      continue;
    }
    const [N, K] = t.shape as [number, number];
    if (!isQuantizable(t.name, t.shape)) {
      const x = backend.alloc(N * K);
      for (let i = 0; i < x.length; i++) x[i] = rng.normal() * (t.name.endsWith('mlp.gate.weight') ? 1 / Math.sqrt(K) : std);
      params.set(t.name, wrap(backend, x, [N, K]));
      continue;
    }
    const head = t.name === 'lm_head.weight' || t.name === 'model.embed_tokens.weight';
    const to = storageFor(head ? headTypeFor(type) : type, K);
    if (to === 'f32') throw new Error(`internal: ${t.name} has no stored type`);
    params.set(t.name, storedWeight(backend, to, randomStored(to, N, K, std, seed), [N, K]));
  }
  return new DeepseekV2ForCausalLM(config, params, backend);
}

/**
 * Weight bytes one decoded token reads with the model stored as `type`: every tensor but the embedding (one row) and
 * the routed experts it is not sent to (num_experts_per_tok of each MoE layer's experts are read).
 */
export function activeBytesPerToken(config: DeepseekV2Config, type: QuantType | 'f32'): number {
  let total = 0;
  for (const t of expectedTensors(config)) {
    if (t.name === 'model.embed_tokens.weight') continue;
    const ex = /\.mlp\.experts\.(\d+)\./.exec(t.name);
    if (ex && Number(ex[1]) >= config.num_experts_per_tok!) continue; // count K experts per layer
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (type === 'f32' || !isQuantizable(t.name, t.shape)) total += 4 * n;
    else {
      const to = storageFor(t.name === 'lm_head.weight' ? headTypeFor(type) : type, t.shape[1]!);
      total += to === 'f32' ? 4 * n : t.shape[0]! * rowBytes(to, t.shape[1]!);
    }
  }
  return total;
}
