// The `ts` backend: plain TypeScript loops. It defines the semantics every faster backend must reproduce.
import type { Backend, F32, I32 } from '../backend.js';
import { adamw } from './adamw.js';
import { attention, attentionBackward } from './attention.js';
import { accumulate, binary, copy, reduce, reduceMaxBackward, unary, unaryBackward } from './elementwise.js';
import { crossEntropy, crossEntropyBackward, rmsnorm, rmsnormBackward, softmax, softmaxBackward, swiglu, swigluBackward } from './fused.js';
import { gemm } from './gemm.js';
import { argsort, gatherLast, gatherRows, scatterAddLast, scatterAddRows, scatterAddRowsBackward, scatterRows, topk } from './indexing.js';
import { mlaDecodeWith, pagedAttention } from './paged.js';
import { dequantRows, qgemm } from './quant.js';
import { quantizeRow, rowBytes } from '../../quant/formats.js';
import { rope } from './rope.js';

function sumsq(x: F32, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += x[i]! * x[i]!;
  return s;
}

export function createTsBackend(): Backend {
  return {
    name: 'ts',
    alloc: (n: number): F32 => new Float32Array(n),
    allocInt: (n: number): I32 => new Int32Array(n),
    free: () => {
      // typed arrays are reclaimed by the garbage collector once unreachable
    },
    copy,
    accumulate,
    fill: (out, n, value) => {
      out.fill(value, 0, n);
    },
    binary,
    unary,
    unaryBackward,
    reduce,
    reduceMaxBackward,
    gemm,
    gemmMany: (ps) => {
      for (const p of ps) gemm(p);
    },
    qgemm,
    qgemmMany: (ps) => ps.forEach(qgemm),
    dequantRows,
    quantizeRows: (type, x, out, rows, K) => {
      const rb = rowBytes(type, K);
      for (let r = 0; r < rows; r++) quantizeRow(type, x, r * K, K, out, r * rb);
    },
    rmsnorm,
    rmsnormBackward,
    softmax,
    softmaxBackward,
    swiglu,
    swigluBackward,
    crossEntropy,
    crossEntropyBackward,
    gatherRows,
    scatterRows,
    scatterAddRows,
    scatterAddRowsBackward,
    gatherLast,
    scatterAddLast,
    topk,
    argsort,
    rope,
    attention,
    attentionBackward,
    pagedAttention,
    mlaDecode: (p, out) => mlaDecodeWith(gemm, p, out),
    adamw,
    sumsq,
    adamwMany: (ps) => ps.forEach(adamw),
    sumsqMany: (xs, ns) => xs.reduce((s, x, i) => s + sumsq(x, ns[i]!), 0),
  };
}
