// Reference paged decode attention (see PagedAttentionParams): one query token per sequence, its keys and values
// read in place from the cache rows its block table names. Scores and the softmax in double.
import type { F32, MlaDecodeParams, PagedAttentionParams } from '../backend.js';

/** Cache row of key j of sequence n, after checking the block id and the context length. */
export function pagedRowChecks(p: PagedAttentionParams): void {
  const { N, blockSize, maxBlocks, numBlocks, blockTables, contextLens } = p;
  if (p.H % p.Hkv !== 0) throw new Error(`paged attention: ${p.H} heads do not split into ${p.Hkv} KV heads`);
  for (let n = 0; n < N; n++) {
    const len = contextLens[n]!;
    if (!(len >= 1 && len <= maxBlocks * blockSize))
      throw new Error(`paged attention: context length ${len} of token ${n} is outside [1, ${maxBlocks * blockSize}]`);
    for (let b = 0; b < Math.ceil(len / blockSize); b++) {
      const id = blockTables[n * maxBlocks + b]!;
      if (!(id >= 0 && id < numBlocks)) throw new Error(`paged attention: block id ${id} of token ${n} is outside [0, ${numBlocks})`);
    }
  }
}

export function pagedAttention(p: PagedAttentionParams, out: F32): void {
  pagedRowChecks(p);
  const { N, H, Hkv, Dk, Dv, scale, q, cache, W, blockSize, blockTables, maxBlocks, contextLens } = p;
  const G = H / Hkv;
  const row = (n: number, j: number): number => (blockTables[n * maxBlocks + Math.floor(j / blockSize)]! * blockSize + (j % blockSize)) * W;
  const acc = new Float64Array(Dv);
  for (let n = 0; n < N; n++) {
    const len = contextLens[n]!;
    const s = new Float64Array(len);
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / G);
      const qo = (n * H + h) * Dk;
      let max = -Infinity;
      for (let j = 0; j < len; j++) {
        const ko = row(n, j) + p.kOffset + g * p.kHeadStride;
        let dot = 0;
        for (let d = 0; d < Dk; d++) dot += q[qo + d]! * cache[ko + d]!;
        s[j] = dot * scale;
        if (s[j]! > max) max = s[j]!;
      }
      acc.fill(0);
      let sum = 0;
      for (let j = 0; j < len; j++) {
        const e = Math.exp(s[j]! - max);
        sum += e;
        const vo = row(n, j) + p.vOffset + g * p.vHeadStride;
        for (let d = 0; d < Dv; d++) acc[d]! += e * cache[vo + d]!;
      }
      const oo = (n * H + h) * Dv;
      for (let d = 0; d < Dv; d++) out[oo + d] = acc[d]! / sum;
    }
  }
}

/**
 * The absorbed MLA decode (see MlaDecodeParams): the query is carried into the latent space by W^UK_h (float32
 * sums, as a GEMM would make them), attends over the cache rows as pagedAttention, and the latent result is
 * carried out by W^UV_h.
 */
export function mlaDecode(p: MlaDecodeParams, out: F32): void {
  const { N, H, dn, dr, dc, dv, q, kvB } = p;
  const W = dc + dr;
  const dq = dn + dr;
  if (kvB.length < H * (dn + dv) * dc) throw new Error(`mla decode: kv_b_proj holds ${kvB.length} floats, not ${H * (dn + dv) * dc}`);
  const qAbs = new Float32Array(N * H * W);
  for (let n = 0; n < N; n++)
    for (let h = 0; h < H; h++) {
      const qo = (n * H + h) * dq;
      const ao = (n * H + h) * W;
      for (let c = 0; c < dc; c++) {
        let s = 0;
        for (let i = 0; i < dn; i++) s = Math.fround(s + Math.fround(q[qo + i]! * kvB[(h * (dn + dv) + i) * dc + c]!));
        qAbs[ao + c] = s;
      }
      for (let r = 0; r < dr; r++) qAbs[ao + dc + r] = q[qo + dn + r]!;
    }
  const lat = new Float32Array(N * H * dc);
  pagedAttention(
    {
      N, H, Hkv: 1, Dk: W, Dv: dc, scale: p.scale, q: qAbs, cache: p.cache, W, kOffset: 0, kHeadStride: 0, vOffset: 0,
      vHeadStride: 0, blockSize: p.blockSize, numBlocks: p.numBlocks, blockTables: p.blockTables, maxBlocks: p.maxBlocks,
      contextLens: p.contextLens,
    }, // prettier-ignore
    lat,
  );
  for (let n = 0; n < N; n++)
    for (let h = 0; h < H; h++) {
      const lo = (n * H + h) * dc;
      for (let v = 0; v < dv; v++) {
        const wo = (h * (dn + dv) + dn + v) * dc;
        let s = 0;
        for (let c = 0; c < dc; c++) s = Math.fround(s + Math.fround(lat[lo + c]! * kvB[wo + c]!));
        out[n * H * dv + h * dv + v] = s;
      }
    }
}
