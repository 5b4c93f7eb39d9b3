// Strided iteration for the reference backend: an odometer over every dim but the last, and a tight loop over
// the last. `visit(baseA, baseB, n, strideA, strideB, outBase)` is called once per innermost row.

export function forEachRow(
  shape: readonly number[],
  stridesA: readonly number[],
  offsetA: number,
  stridesB: readonly number[],
  offsetB: number,
  visit: (baseA: number, baseB: number, outBase: number) => void,
): void {
  const nd = shape.length;
  if (nd === 0) {
    visit(offsetA, offsetB, 0);
    return;
  }
  for (const d of shape) if (d === 0) return;
  const inner = shape[nd - 1]!;
  const idx = new Array<number>(nd - 1).fill(0);
  let baseA = offsetA;
  let baseB = offsetB;
  let outBase = 0;
  for (;;) {
    visit(baseA, baseB, outBase);
    outBase += inner;
    // advance the odometer over dims nd-2 … 0
    let d = nd - 2;
    for (; d >= 0; d--) {
      idx[d]!++;
      baseA += stridesA[d]!;
      baseB += stridesB[d]!;
      if (idx[d]! < shape[d]!) break;
      baseA -= stridesA[d]! * shape[d]!;
      baseB -= stridesB[d]! * shape[d]!;
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}
