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
    this.families.clear();
  }

  /** The tensors `pattern` names with `*` replaced by 0 … n−1 (an MoE layer's experts), looked up once and kept. */
  family(pattern: string, n: number): Tensor[] {
    let f = this.families.get(pattern);
    if (!f || f.length !== n) {
      f = Array.from({ length: n }, (_, i) => this.get(pattern.replace('*', String(i))));
      this.families.set(pattern, f);
    }
    return f;
  }

  private readonly families = new Map<string, Tensor[]>();

  list(): Tensor[] {
    return [...this.map.values()];
  }

  names(): string[] {
    return [...this.map.keys()];
  }
}
