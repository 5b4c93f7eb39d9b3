import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { corpusHash, loadCorpus, splitDocs } from '../src/data/corpus.js';
import { MATH_KINDS, mathProblems, type MathKind } from '../src/data/math.js';
import { MIX_DOMAINS, mixCorpus } from '../src/data/mix.js';

function gcd(a: number, b: number): number {
  a = Math.abs(a);
  b = Math.abs(b);
  while (b) [a, b] = [b, a % b];
  return a;
}

const int = (s: string | undefined): number => {
  assert.ok(s !== undefined && /^-?\d+$/.test(s), `not an integer: ${s}`);
  return Number(s);
};

/**
 * Reads a problem's question and its "Answer:" line and checks the answer with arithmetic of its own (not the
 * generator's); returns the kind it recognised.
 */
function checkProblem(text: string): MathKind {
  const lines = text.split('\n');
  const q = lines[0]!;
  const answer = lines[lines.length - 1]!;
  assert.match(answer, /^Answer: /, `no Answer line in:\n${text}`);
  const a = answer.slice('Answer: '.length);
  let m: RegExpExecArray | null;
  if ((m = /^Compute (\d+) \+ (\d+)\.$/.exec(q))) {
    assert.equal(BigInt(a), BigInt(m[1]!) + BigInt(m[2]!));
    return 'add';
  }
  if ((m = /^Compute (\d+) - (\d+)\.$/.exec(q))) {
    assert.equal(BigInt(a), BigInt(m[1]!) - BigInt(m[2]!));
    return 'subtract';
  }
  if ((m = /^Compute (\d+) × (\d+)\.$/.exec(q))) {
    assert.equal(BigInt(a), BigInt(m[1]!) * BigInt(m[2]!));
    return 'multiply';
  }
  if ((m = /^Divide (\d+) by (\d+)\.$/.exec(q))) {
    const r = /^quotient (\d+), remainder (\d+)$/.exec(a);
    assert.ok(r, a);
    const [n, d, qq, rr] = [int(m[1]), int(m[2]), int(r[1]), int(r[2])];
    assert.equal(d * qq + rr, n);
    assert.ok(rr >= 0 && rr < d);
    return 'divide';
  }
  if ((m = /^Evaluate (\d+) \+ (\d+) × \((\d+) - (\d+)\)\.$/.exec(q))) {
    assert.equal(int(a), int(m[1]) + int(m[2]) * (int(m[3]) - int(m[4])));
    return 'order';
  }
  if ((m = /^Solve (-?\d*)x ([+-]) (\d+) = (-?\d+)\.$/.exec(q))) {
    const c = m[1] === '' ? 1 : m[1] === '-' ? -1 : int(m[1]);
    const b = (m[2] === '-' ? -1 : 1) * int(m[3]);
    const x = /^x = (-?\d+)$/.exec(a);
    assert.ok(x, a);
    assert.equal(c * int(x[1]) + b, int(m[4]));
    return 'linear';
  }
  if ((m = /^Add (\d+)\/(\d+) \+ (\d+)\/(\d+)\.$/.exec(q))) {
    const f = /^(\d+)(?:\/(\d+))?$/.exec(a); // a whole number is written without "/1"
    assert.ok(f, a);
    assert.notEqual(f[2], '1', `${a}: write a whole number as such`);
    const [p, qd, r, s, n, d] = [m[1], m[2], m[3], m[4], f[1], f[2] ?? '1'].map(int) as [number, number, number, number, number, number];
    assert.equal(n * qd * s, (p * s + r * qd) * d, `${q} ≠ ${a}`);
    assert.equal(gcd(n, d), 1, `${a} is not in lowest terms`);
    return 'fraction';
  }
  if ((m = /^What is (\d+)% of (\d+)\?$/.exec(q))) {
    assert.ok(Math.abs(Number(a) * 100 - int(m[1]) * int(m[2])) < 1e-9, `${q} ${a}`);
    return 'percent';
  }
  if ((m = /^Solve the system x \+ y = (-?\d+), x - y = (-?\d+)\.$/.exec(q))) {
    const s = /^x = (-?\d+), y = (-?\d+)$/.exec(a);
    assert.ok(s, a);
    assert.equal(int(s[1]) + int(s[2]), int(m[1]));
    assert.equal(int(s[1]) - int(s[2]), int(m[2]));
    return 'system';
  }
  if ((m = /^Solve x\^2(?: ([+-]) (\d*)x)?(?: ([+-]) (\d+))? = 0\.$/.exec(q))) {
    const b = m[1] ? (m[1] === '-' ? -1 : 1) * (m[2] === '' ? 1 : int(m[2])) : 0;
    const c = m[3] ? (m[3] === '-' ? -1 : 1) * int(m[4]) : 0;
    const roots = a.split(' or ').map((r) => {
      const x = /^x = (-?\d+)$/.exec(r);
      assert.ok(x, a);
      return int(x[1]);
    });
    for (const r of roots) assert.equal(r * r + b * r + c, 0, `${r} is not a root of ${q}`);
    if (roots.length === 2) {
      assert.notEqual(roots[0], roots[1]);
      assert.equal(roots[0]! + roots[1]! + b, 0); // both roots, not one twice
    } else assert.equal(b * b - 4 * c, 0, `${q} has two roots, the answer gives one`);
    return 'quadratic';
  }
  assert.fail(`unrecognised problem: ${q}`);
}

describe('math problems', () => {
  it('every answer is correct (checked independently of the generator), over all ten kinds', () => {
    const seen = new Map<MathKind, number>();
    let i = 0;
    for (const p of mathProblems(0)) {
      if (i++ >= 5000) break;
      const kind = checkProblem(p.text);
      assert.equal(kind, p.kind, p.text);
      seen.set(kind, (seen.get(kind) ?? 0) + 1);
    }
    assert.deepEqual([...seen.keys()].sort(), [...MATH_KINDS].sort());
    for (const [k, n] of seen) assert.ok(n > 300, `${k}: only ${n} of 5000`);
  });

  it('the worked steps hold: every "a + b = c" and "a × b = c" of a step line is true', () => {
    let i = 0;
    let checked = 0;
    for (const p of mathProblems(3)) {
      if (i++ >= 2000) break;
      for (const line of p.text.split('\n').slice(1, -1)) {
        // a whole "x op y = z": not the tail of a longer sum ("5 + 1 + 1 = 7") nor the head of one ("= 678 × 90 + …")
        for (const m of line.matchAll(/(?<![\d/]|[+×-] )(\d+) ([+×]) (\d+) = (\d+)(?![\d/]| [+×-])/g)) {
          const [x, y, z] = [BigInt(m[1]!), BigInt(m[3]!), BigInt(m[4]!)];
          if (m[2] === '+') assert.equal(x + y, z, line);
          if (m[2] === '×') assert.equal(x * y, z, line);
          checked++;
        }
      }
    }
    assert.ok(checked > 500, `only ${checked} step equations checked`);
  });

  it('is the same sequence for the same seed, another for another', () => {
    const take = (seed: number): string[] => {
      const out: string[] = [];
      for (const p of mathProblems(seed)) {
        out.push(p.text);
        if (out.length === 50) break;
      }
      return out;
    };
    assert.deepEqual(take(1), take(1));
    assert.notDeepEqual(take(1), take(2));
  });
});

describe('the mixed corpus', () => {
  const small = mixCorpus(60_000);

  it('labels every document with its domain, and each domain comes from its own source', () => {
    const prefix: Record<string, RegExp> = { prose: /^(moby-dick|sotu)\//, poetry: /^tang\//, code: /^rxjs\/.*\.ts$/, math: /^math\// };
    const bytes = new Map<string, number>();
    for (const d of small.docs) {
      assert.ok(MIX_DOMAINS.includes(d.domain as (typeof MIX_DOMAINS)[number]), `${d.name}: domain ${d.domain}`);
      assert.match(d.name, prefix[d.domain!]!);
      assert.ok(d.text.length > 0, d.name);
      bytes.set(d.domain!, (bytes.get(d.domain!) ?? 0) + Buffer.byteLength(d.text));
    }
    for (const k of MIX_DOMAINS) assert.ok(bytes.get(k)! >= 60_000, `${k}: ${bytes.get(k)} bytes`);
    assert.ok(small.docs.some((d) => d.name.startsWith('sotu/')) && small.docs.some((d) => d.name.startsWith('moby-dick/')));
    assert.ok(
      small.docs.some((d) => d.domain === 'poetry' && /[\u4e00-\u9fff]{5}/.test(d.text)),
      'Chinese characters in the poems',
    );
    assert.ok(
      small.docs.some((d) => d.domain === 'code' && /\bexport (function|class|interface)\b/.test(d.text)),
      'TypeScript in the code',
    );
  });

  it('is deterministic: the same documents in the same order every time, and mix:SIZE names the size', () => {
    assert.equal(corpusHash(mixCorpus(60_000)), corpusHash(small));
    assert.equal(corpusHash(loadCorpus('mix:60k')), corpusHash(small));
    assert.notEqual(corpusHash(mixCorpus(30_000)), corpusHash(small));
    assert.throws(() => loadCorpus('mix:lots'), /mix:200k/);
    assert.throws(() => loadCorpus('mix:10'), /between 1k and 800k/);
    assert.throws(() => loadCorpus('mix:2M'), /between 1k and 800k/);
  });

  it('splits per domain: every domain keeps held-out documents, none is in both halves, and the split repeats', () => {
    const a = splitDocs(small, 0.1);
    const b = splitDocs(mixCorpus(60_000), 0.1);
    assert.deepEqual(
      a.val.map((d) => d.name),
      b.val.map((d) => d.name),
    );
    assert.equal(a.train.length + a.val.length, small.docs.length);
    // no text on both sides (names are unique by construction, so compare the texts: a math problem drawn twice
    // would otherwise be a validation document the model was trained on)
    const trainTexts = new Set(a.train.map((d) => d.text));
    for (const d of a.val) assert.ok(!trainTexts.has(d.text), `${d.name}'s text is also a training document`);
    assert.equal(new Set(small.docs.map((d) => d.text)).size, small.docs.length, 'no document twice');
    for (const k of MIX_DOMAINS) {
      const all = small.docs.filter((d) => d.domain === k).length;
      const held = a.val.filter((d) => d.domain === k).length;
      assert.ok(held >= 1, `${k}: no held-out document`);
      assert.ok(Math.abs(held - all / 10) <= 1, `${k}: ${held} of ${all} held out`);
    }
    // interleaved by domain: the first documents of the validation stream already cover all four domains
    assert.deepEqual(new Set(a.val.slice(0, 4).map((d) => d.domain)), new Set(MIX_DOMAINS));
  });

  it('a .jsonl corpus may carry its own "domain" labels, split per domain the same way', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dsv2-domains-'));
    const rows = Array.from({ length: 20 }, (_, i) => ({ text: `document ${i}`, domain: i < 15 ? 'a' : 'b' }));
    writeFileSync(join(dir, 'd.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n'));
    const c = loadCorpus(join(dir, 'd.jsonl'));
    assert.deepEqual([...new Set(c.docs.map((d) => d.domain))], ['a', 'b']);
    const { val } = splitDocs(c, 0.2);
    assert.deepEqual(new Set(val.map((d) => d.domain)), new Set(['a', 'b']));
    // a domain of 2 documents (fewer than k/2 = 10 at 5%) and one of a single document still hold text out, labelled
    const few = {
      name: 'few',
      docs: [
        ...Array.from({ length: 30 }, (_, i) => ({ name: `a${i}`, text: `a ${i}`, domain: 'a' })),
        { name: 'b0', text: 'b zero', domain: 'b' },
        { name: 'b1', text: 'b one', domain: 'b' },
        { name: 'c0', text: 'c para one\n\nc para two\n\nc para three', domain: 'c' },
      ],
    };
    const s = splitDocs(few, 0.05);
    assert.deepEqual(new Set(s.val.map((d) => d.domain)), new Set(['a', 'b', 'c']));
    assert.ok(s.train.some((d) => d.domain === 'b') && s.train.some((d) => d.domain === 'c'));
    writeFileSync(join(dir, 'bad.jsonl'), JSON.stringify({ text: 'x', domain: 3 }) + '\n');
    assert.throws(() => loadCorpus(join(dir, 'bad.jsonl')), /bad\.jsonl:1: "domain" must be a non-empty string, got 3/);
  });
});
