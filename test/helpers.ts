// Shared test helpers: the backends under test and numeric comparisons.
import assert from 'node:assert/strict';
import { availableBackends, loadBackend, type Backend } from '../src/node.js';

/** Backends the suite runs on: every one that loads here, or the list in DSV2_TEST_BACKENDS (comma-separated). */
export function testBackends(): Backend[] {
  const env = process.env['DSV2_TEST_BACKENDS'];
  const names = env
    ? env
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : availableBackends();
  return names.map((n) => loadBackend(n));
}

export function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, atol = 1e-5, rtol = 1e-5, what = 'values'): void {
  assert.equal(got.length, want.length, `${what}: length ${got.length} vs ${want.length}`);
  for (let i = 0; i < got.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    if (Number.isNaN(w) && Number.isNaN(g)) continue;
    if (g === w) continue;
    const err = Math.abs(g - w);
    if (!(err <= atol + rtol * Math.abs(w))) {
      assert.fail(`${what}[${i}]: got ${g}, want ${w} (|err| ${err.toExponential(2)} > ${atol} + ${rtol}·|want|)`);
    }
  }
}
