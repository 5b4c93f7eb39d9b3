// Which weights of a DeepSeek-V2 model are kept in a stored type, and quantizing a loaded model in memory. The
// projections that dominate the bytes read per token go to the chosen type: q/kv/o projections, the dense and
// expert MLPs, the LM head and the embedding table. Kept float32, as llama.cpp keeps them: the norms (1-D), the
// router (`mlp.gate.weight`: a few KiB, and its softmax decides the routing), and `kv_b_proj`, which the absorbed
// decode reads per head in both orientations (spec §4.2; 2 M values a layer in V2-Lite).
import { quantize, fitsRow, QUANT_FORMATS, type QuantType } from './formats.js';
import { storedWeight, type Tensor } from '../tensor/tensor.js';
import type { Params } from '../model/params.js';

/** Whether a parameter is a projection that may be stored in a quantized type. */
export function isQuantizable(name: string, shape: readonly number[]): boolean {
  if (shape.length !== 2) return false;
  if (name.endsWith('.mlp.gate.weight') || name.endsWith('.kv_b_proj.weight')) return false;
  return /(_proj|_proj_with_mqa|lm_head|embed_tokens)\.weight$/.test(name);
}

/**
 * The type a projection with rows of `K` values is stored in when `type` is asked for: `type` itself when its
 * blocks fill the rows, else the fallback llama.cpp uses (K-quants → 32-value types, then f16).
 */
export function storageFor(type: QuantType, K: number): QuantType | 'f32' {
  if (fitsRow(type, K)) return type;
  const fallback: Partial<Record<QuantType, QuantType>> = { q4_k: 'q5_0', q5_k: 'q5_1', q6_k: 'q8_0' };
  const next = fallback[type];
  if (next && fitsRow(next, K)) return next;
  return 'f16';
}

export interface QuantizeReport {
  /** Bytes of the parameters before and after. */
  before: number;
  after: number;
  /** How many tensors went to each type. */
  types: Record<string, number>;
}

/**
 * The type of the embedding table and the LM head when the body is stored as `type`: one step more precise than the
 * body, as llama.cpp's mixes keep output.weight (f16 under q8_0, q8_0 under the 4/5-bit types; bf16/f16 keep
 * theirs). Measured on the golden gen case: with them in q8_0 too, greedy decoding leaves the reference's tokens at
 * step 10 (where its top-2 logit margin is 0.03); with them in f16 all 32 tokens agree. The embedding costs no
 * bandwidth (one row per token); the head is 8.6% of what V2-Lite reads per token.
 */
export function headTypeFor(type: QuantType): QuantType {
  if (type === 'bf16' || type === 'f16') return type;
  return type === 'q8_0' ? 'f16' : 'q8_0';
}

const isHead = (name: string): boolean => name === 'lm_head.weight' || name === 'model.embed_tokens.weight';

/** Quantize a model's float32 projections in place (the Params map gets stored tensors); inference only after. */
export function quantizeParams(params: Params, type: QuantType, headType: QuantType = headTypeFor(type)): QuantizeReport {
  for (const t of [type, headType])
    if (!QUANT_FORMATS[t].writable) throw new Error(`${t} cannot be written; choose q8_0, q4_0, q4_1, q5_0, q5_1, bf16 or f16`);
  const report: QuantizeReport = { before: 0, after: 0, types: {} };
  for (const name of params.names()) {
    const t: Tensor = params.get(name);
    const bytes = t.isStored() ? t.bytes().length : t.size * 4;
    report.before += bytes;
    if (t.isStored() || t.dtype !== 'f32' || !isQuantizable(name, t.shape)) {
      report.after += bytes;
      report.types[t.dtype] = (report.types[t.dtype] ?? 0) + 1;
      continue;
    }
    const [N, K] = t.shape as [number, number];
    const to = storageFor(isHead(name) ? headType : type, K);
    if (to === 'f32') continue;
    const q = storedWeight(t.backend, to, quantize(to, t.f32(), N, K), [N, K]);
    params.set(name, q);
    report.after += q.bytes().length;
    report.types[to] = (report.types[to] ?? 0) + 1;
  }
  return report;
}
