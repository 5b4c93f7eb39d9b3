// Fused cross-entropy over logits [..., V] and int targets [...]; targets equal to ignoreIndex (−100, as in
// PyTorch) are skipped. 'mean' divides by the number of valid targets (a batch with none gives 0, not NaN).
import { uninit, type Tensor, wrap } from '../../tensor/tensor.js';
import { fmtShape } from '../../tensor/shape.js';
import { record } from '../graph.js';
import { contiguous } from './views.js';

export interface CrossEntropyOptions {
  ignoreIndex?: number;
  reduction?: 'mean' | 'sum' | 'none';
}

/**
 * loss_r = logsumexp(logits_r) − logits_r[target_r]
 * dlogits_r = dloss_r · (softmax(logits_r) − onehot(target_r))
 */
export function crossEntropy(logitsIn: Tensor, targetsIn: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const { ignoreIndex = -100, reduction = 'mean' } = opts;
  if (targetsIn.dtype !== 'i32') throw new Error('cross-entropy targets must be an int32 tensor');
  const V = logitsIn.shape[logitsIn.ndim - 1]!;
  const R = logitsIn.size / V;
  if (targetsIn.size !== R || logitsIn.shape.slice(0, -1).join() !== targetsIn.shape.join()) {
    throw new Error(`cross-entropy: logits ${fmtShape(logitsIn.shape)} and targets ${fmtShape(targetsIn.shape)} do not match`);
  }
  const logits = contiguous(logitsIn);
  const targets = contiguous(targetsIn);
  const b = logits.backend;
  const rowLoss = uninit(b, targets.shape);
  const lse = uninit(b, [R]);
  b.crossEntropy(logits.f32(), targets.i32(), rowLoss.f32(), lse.f32(), R, V, ignoreIndex);
  let valid = 0;
  const tg = targets.i32();
  for (let r = 0; r < R; r++) if (tg[r] !== ignoreIndex) valid++;
  const backwardFrom = (dRow: Float32Array): Tensor => {
    const dl = uninit(b, logits.shape);
    b.crossEntropyBackward(logits.f32(), targets.i32(), lse.f32(), dRow, dl.f32(), R, V, ignoreIndex);
    return dl;
  };
  if (reduction === 'none') {
    return record(rowLoss, 'cross_entropy', [logits], (gy) => [backwardFrom(gy.f32())]);
  }
  const denom = reduction === 'mean' ? Math.max(valid, 1) : 1;
  const out = wrap(b, b.alloc(1), []);
  b.reduce('sum', rowLoss.f32(), out.f32(), null, 1, R, 1);
  out.data[0] = out.data[0]! / denom;
  return record(out, 'cross_entropy', [logits], (gy) => {
    const dRow = b.alloc(R);
    b.fill(dRow, R, gy.item() / denom);
    return [backwardFrom(dRow)];
  });
}
