// Named parameters with Hugging Face tensor names; the layers look their weights up here.
import type { Tensor } from '../tensor/tensor.js';

export class Params {
  readonly map = new Map<string, Tensor>();

  get(name: string): Tensor {
    const t = this.map.get(name);
    if (!t) throw new Error(`model has no parameter '${name}'`);
    return t;
  }

  set(name: string, t: Tensor): void {
    t.name = name;
    this.map.set(name, t);
  }

  list(): Tensor[] {
    return [...this.map.values()];
  }

  names(): string[] {
    return [...this.map.keys()];
  }
}
