// The wasm kernel module's exports. Kernels that run on several threads take a parameter block and a thread index
// and share work through an atomic counter in the block; `run` is how a worker thread calls them by number.
import { gemm, gemmMany, gemmScratchBytes, gemv } from './gemm';
import { attention, attentionBackward } from './attention';

export { gemm, gemmMany, gemmScratchBytes, gemv, attention, attentionBackward };
export {
  rmsnorm,
  rmsnormBackward,
  softmax,
  softmaxBackward,
  swiglu,
  swigluBackward,
  crossEntropy,
  crossEntropyBackward,
  rope,
  adamw,
  sumsq,
} from './fused';

/** Kernel numbers of the threaded kernels (src/backend/wasm/kernels.ts has the same table). */
export function run(kernel: i32, pb: usize, tid: i32): void {
  if (kernel == 1) gemm(pb, tid);
  else if (kernel == 2) attention(pb, tid);
  else if (kernel == 3) attentionBackward(pb, tid);
  else if (kernel == 4) gemmMany(pb, tid);
  else if (kernel == 5) gemv(pb, tid);
}
