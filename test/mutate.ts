// Seeded JSON mutation for the parser fuzzers (test/fuzz.test.ts) and the hostile-input probe
// (scripts/hostile-probe.mjs): a random path replaced by a hostile value, deleted, or duplicated under another key.
// `log` receives what was changed, so a probe can say which mutants its parser accepted.
import type { Rng } from '../src/tensor/random.js';

/** A JSON value mutated: a random path replaced by a hostile value, deleted, or duplicated under another key. */
export function mutateJson(v: unknown, rng: Rng, depth = 0, log?: string[], path = ''): unknown {
  const hostile = [
    null,
    -1,
    0,
    1e300,
    -1e300,
    2 ** 31,
    2 ** 53,
    1.5,
    NaN,
    '',
    '__proto__',
    'x'.repeat(5000),
    [],
    {},
    true,
    [1, 2],
    { a: 1 },
  ];
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng.uniform() * xs.length)]!;
  if (depth > 4 || v === null || typeof v !== 'object' || rng.uniform() < 0.25) {
    const h = pick(hostile);
    log?.push(`${path || '(root)'} = ${typeof h === 'string' && h.length > 20 ? `"x"×${h.length}` : JSON.stringify(h)}`);
    return h;
  }
  if (Array.isArray(v)) {
    if (!v.length) {
      log?.push(`${path}[] gets an element`);
      return [pick(hostile)];
    }
    const out = v.slice();
    const i = Math.floor(rng.uniform() * out.length);
    if (rng.uniform() < 0.2) {
      log?.push(`${path}[${i}] deleted`);
      out.splice(i, 1);
    } else out[i] = mutateJson(out[i], rng, depth + 1, log, `${path}[*]`);
    return out;
  }
  const o = { ...(v as Record<string, unknown>) };
  const keys = Object.keys(o);
  if (!keys.length) {
    log?.push(`${path}{} gets a key`);
    return { [pick(['__proto__', 'constructor', 'x'])]: pick(hostile) };
  }
  const k = pick(keys);
  // paths name object keys at the first levels only (deeper ones are tensor or token names)
  const at = depth < 2 ? `${path}.${k}` : `${path}.*`;
  const r = rng.uniform();
  if (r < 0.15) {
    log?.push(`${at} deleted`);
    delete o[k];
  } else if (r < 0.25) {
    const dup = pick(['__proto__', 'constructor', 'toString', k + '_']);
    log?.push(`${at} copied to key ${dup === k + '_' ? '<key>_' : dup}`);
    o[dup] = o[k];
  } else o[k] = mutateJson(o[k], rng, depth + 1, log, at);
  return o;
}
