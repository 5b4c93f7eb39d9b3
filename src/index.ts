// Public API of deepseek-v2-ts.
export type { Backend, BinaryOp, UnaryOp, GemmParams, AttentionParams, AdamWParams } from './backend/backend.js';
export { availableBackends, defaultBackend, loadBackend, useBackend, BACKEND_NAMES, type BackendName } from './backend/registry.js';
export { Tensor, tensor, intTensor, scalar, zeros, ones, full, arange, randn, rand, type CreateOptions } from './tensor/tensor.js';
export { Rng, type RngState } from './tensor/random.js';
export { bf16ToF32, f32ToBf16, f16ToF32, f32ToF16, type DType } from './tensor/dtype.js';
export { noGrad, isGradEnabled, record } from './autograd/graph.js';
export { gradcheck, type GradcheckOptions, type GradcheckResult } from './autograd/gradcheck.js';
export * from './autograd/ops/index.js';
export { SGD, AdamW, zeroGrad, globalGradNorm, type AdamWOptions } from './optim/optimizer.js';
