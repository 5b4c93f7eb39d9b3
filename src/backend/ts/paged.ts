// Reference paged decode attention (see PagedAttentionParams): one query token per sequence, its keys and values
// read in place from the cache rows its block table names. Scores and the softmax in double.
import type { F32, GemmParams, MlaDecodeParams, PagedAttentionParams } from '../backend.js';

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
 * The absorbed MLA decode (see MlaDecodeParams) from a backend's batched GEMM and the reference paged attention: the
 * query into the latent space by W^UK_h (one product per head), attention over the cache rows, the latent result
 * out by W^UV_h. The `ts` backend runs it with its own GEMM; the wasm backend with its threaded one.
 */
export function mlaDecodeWith(gemm: (p: GemmParams) => void, p: MlaDecodeParams, out: F32): void {
  const { N, H, dn, dr, dc, dv } = p;
  const W = dc + dr;
  const dq = dn + dr;
  const per = (dn + dv) * dc; // kv_b_proj rows of one head
  if (p.kvB.length < H * per) throw new Error(`mla decode: kv_b_proj holds ${p.kvB.length} floats, not ${H * per}`);
  const tmp = new Float32Array(H * N * Math.max(dc, dv));
  gemm({
    batch: H, M: N, N: dc, K: dn, a: p.q, aOffset: 0, aBatchStride: dq, aRowStride: H * dq, aColStride: 1,
    b: p.kvB, bOffset: 0, bBatchStride: per, bRowStride: dc, bColStride: 1, c: tmp, cOffset: 0, cBatchStride: N * dc,
    alpha: 1, beta: 0,
  }); // prettier-ignore
  const qAbs = new Float32Array(N * H * W); // [N, H, dc + dr]: the latent query, then q_pe
  for (let h = 0; h < H; h++)
    for (let n = 0; n < N; n++) {
      const at = (n * H + h) * W;
      qAbs.set(tmp.subarray((h * N + n) * dc, (h * N + n + 1) * dc), at);
      qAbs.set(p.q.subarray((n * H + h) * dq + dn, (n * H + h + 1) * dq), at + dc);
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
  gemm({
    batch: H, M: N, N: dv, K: dc, a: lat, aOffset: 0, aBatchStride: dc, aRowStride: H * dc, aColStride: 1,
    b: p.kvB, bOffset: dn * dc, bBatchStride: per, bRowStride: 1, bColStride: dc, c: tmp, cOffset: 0, cBatchStride: N * dv,
    alpha: 1, beta: 0,
  }); // prettier-ignore
  for (let h = 0; h < H; h++)
    for (let n = 0; n < N; n++) out.set(tmp.subarray((h * N + n) * dv, (h * N + n + 1) * dv), n * H * dv + h * dv);
}
