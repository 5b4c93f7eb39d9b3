// SwiGLU MLP (spec §1): MLP(x) = down(silu(gate(x)) ⊙ up(x)). Used for the dense layers, every routed expert
// and the shared-expert block.
import { linear, linears, swiglu } from '../autograd/ops/index.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Params } from './params.js';

/** x [..., d] → [..., d] */
export function mlp(w: Params, prefix: string, x: Tensor): Tensor {
  // gate and up [..., I] as one call: two products of the same size, side by side
  const [gate, up] = linears(x, [w.get(`${prefix}.gate_proj.weight`), w.get(`${prefix}.up_proj.weight`)]);
  return linear(swiglu(gate!, up!), w.get(`${prefix}.down_proj.weight`)); // [..., d]
}
