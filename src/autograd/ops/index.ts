// The op set, one import away. Every op is differentiable unless its doc says otherwise.
import '../methods.js'; // the Tensor's fluent methods, for users of the library
export { contiguous, reshape, permute, transpose, narrow, expand, squeeze, unsqueeze, writeSlice } from './views.js';
export { add, sub, mul, div, neg, exp, log, sqrt, rsqrt, silu, square, abs, scale, swiglu } from './elementwise.js';
export { sum, mean, max, maxWithIndices } from './reduce.js';
export { matmul, linear, linears, groupedLinear } from './matmul.js';
export { rmsnorm } from './norm.js';
export { softmax, logSoftmax } from './softmax.js';
export { crossEntropy, type CrossEntropyOptions } from './loss.js';
export { embedding, indexSelect, indexAdd, gather, topk, argsort, maskFromIndices } from './indexing.js';
export { concat, split } from './concat.js';
export { rope, ropeTail } from './rope.js';
export { attention, type AttentionOptions } from './attention.js';
export { writeRows, readRows, pagedAttention, type PagedAttentionOptions } from './paged.js';
