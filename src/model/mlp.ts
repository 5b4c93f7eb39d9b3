// SwiGLU MLP (spec §1): MLP(x) = down(silu(gate(x)) ⊙ up(x)). Used for the dense layers, every routed expert
// and the shared-expert block.
import { linear, swiglu } from '../autograd/ops/index.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Params } from './params.js';

/** x [..., d] → [..., d] */
export function mlp(w: Params, prefix: string, x: Tensor): Tensor {
  const gate = linear(x, w.get(`${prefix}.gate_proj.weight`)); // [..., I]
  const up = linear(x, w.get(`${prefix}.up_proj.weight`)); // [..., I]
  return linear(swiglu(gate, up), w.get(`${prefix}.down_proj.weight`)); // [..., d]
}
