// Reference paged decode attention (see PagedAttentionParams): one query token per sequence, its keys and values
// read in place from the cache rows its block table names. Scores and the softmax in double.
import type { F32, PagedAttentionParams } from '../backend.js';

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
