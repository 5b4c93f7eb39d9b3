// Reference batched GEMM (see GemmParams): C_p = alpha·A_p·B_p + beta·C_p. Plain loops; the loop order is chosen
// so that the innermost loop walks memory with stride 1 where the layout allows it.
import type { GemmParams } from '../backend.js';

export function gemm(p: GemmParams): void {
  const { batch, M, N, K, a, b, c, alpha, beta } = p;
  const { aRowStride: ar, aColStride: ac, bRowStride: br, bColStride: bc } = p;
  const row = new Float64Array(N);
  for (let q = 0; q < batch; q++) {
    const aBase = p.aOffset + q * p.aBatchStride;
    const bBase = p.bOffset + q * p.bBatchStride;
    const cBase = p.cOffset + q * p.cBatchStride;
    for (let i = 0; i < M; i++) {
      const cRow = cBase + i * N;
      if (bc === 1) {
        // C[i,:] = Σ_k A[i,k] · B[k,:]  (B rows are contiguous)
        row.fill(0);
        for (let k = 0; k < K; k++) {
          const aik = a[aBase + i * ar + k * ac]!;
          if (aik === 0) continue;
          const bRow = bBase + k * br;
          for (let j = 0; j < N; j++) row[j]! += aik * b[bRow + j]!;
        }
        for (let j = 0; j < N; j++) c[cRow + j] = alpha * row[j]! + (beta === 0 ? 0 : beta * c[cRow + j]!);
      } else {
        // C[i,j] = A[i,:] · B[:,j]  (B columns are contiguous when br == 1, e.g. x·Wᵀ)
        const aRow = aBase + i * ar;
        for (let j = 0; j < N; j++) {
          const bCol = bBase + j * bc;
          let s = 0;
          for (let k = 0; k < K; k++) s += a[aRow + k * ac]! * b[bCol + k * br]!;
          c[cRow + j] = alpha * s + (beta === 0 ? 0 : beta * c[cRow + j]!);
        }
      }
    }
  }
}
