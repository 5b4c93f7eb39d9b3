// Worked arithmetic and algebra problems, generated deterministically from a seed: the `math` domain of the mixed
// corpus (data/mix.ts). Every problem states its question, the steps a student would write, and a last line
// "Answer: …" whose value the tests check independently of this generator (test/mix.test.ts).
import { Rng } from '../tensor/random.js';

export type MathKind = 'add' | 'subtract' | 'multiply' | 'divide' | 'order' | 'linear' | 'fraction' | 'percent' | 'system' | 'quadratic';

export const MATH_KINDS: readonly MathKind[] = [
  'add',
  'subtract',
  'multiply',
  'divide',
  'order',
  'linear',
  'fraction',
  'percent',
  'system',
  'quadratic',
];

export interface MathProblem {
  kind: MathKind;
  /** Question, worked steps, and the final "Answer: …" line. */
  text: string;
}

function gcd(a: number, b: number): number {
  a = Math.abs(a);
  b = Math.abs(b);
  while (b) [a, b] = [b, a % b];
  return a;
}

/** `+ 7` / `- 7` after a term (never `+ -7`). */
function signed(n: number): string {
  return n < 0 ? `- ${-n}` : `+ ${n}`;
}

/** `3x`, `x`, `-x`, `-3x`. */
function coef(a: number, v: string): string {
  return a === 1 ? v : a === -1 ? `-${v}` : `${a}${v}`;
}

function between(rng: Rng, lo: number, hi: number): number {
  return lo + rng.int(hi - lo + 1);
}

function nonZero(rng: Rng, lo: number, hi: number): number {
  for (;;) {
    const v = between(rng, lo, hi);
    if (v !== 0) return v;
  }
}

/** Column addition with the carries written out. */
function add(rng: Rng): string {
  const a = between(rng, 10, 99999);
  const b = between(rng, 10, 9999);
  const da = String(a).split('').reverse();
  const db = String(b).split('').reverse();
  const steps: string[] = [];
  let carry = 0;
  const names = ['ones', 'tens', 'hundreds', 'thousands', 'ten-thousands', 'hundred-thousands'];
  for (let i = 0; i < Math.max(da.length, db.length); i++) {
    const x = Number(da[i] ?? 0);
    const y = Number(db[i] ?? 0);
    const s = x + y + carry;
    steps.push(`${names[i]}: ${x} + ${y}${carry ? ' + 1' : ''} = ${s}, write ${s % 10}${s >= 10 ? ', carry 1' : ''}.`);
    carry = s >= 10 ? 1 : 0;
  }
  if (carry) steps.push(`The last carry gives the leading 1.`);
  return `Compute ${a} + ${b}.\n${steps.join('\n')}\nAnswer: ${a + b}`;
}

function subtract(rng: Rng): string {
  const a = between(rng, 100, 99999);
  const b = between(rng, 10, a);
  return `Compute ${a} - ${b}.\n${a} - ${b} = ${a - b}, since ${a - b} + ${b} = ${a}.\nAnswer: ${a - b}`;
}

/** Split the second factor into tens and ones. */
function multiply(rng: Rng): string {
  const a = between(rng, 12, 999);
  const b = between(rng, 12, 99);
  const tens = b - (b % 10);
  const ones = b % 10;
  const parts = ones ? ` = ${a} × ${tens} + ${a} × ${ones} = ${a * tens} + ${a * ones}` : '';
  return `Compute ${a} × ${b}.\n${a} × ${b}${parts} = ${a * b}.\nAnswer: ${a * b}`;
}

function divide(rng: Rng): string {
  const d = between(rng, 2, 19);
  const q = between(rng, 3, 999);
  const r = rng.int(d);
  const n = d * q + r;
  return (
    `Divide ${n} by ${d}.\n${d} × ${q} = ${d * q}, and ${n} - ${d * q} = ${r}, which is less than ${d}.\n` +
    `So ${n} = ${d} × ${q} + ${r}.\nAnswer: quotient ${q}, remainder ${r}`
  );
}

/** a + b × (c − d): brackets first, then the product, then the sum. */
function order(rng: Rng): string {
  const a = between(rng, 1, 50);
  const b = between(rng, 2, 12);
  const d = between(rng, 1, 20);
  const c = d + between(rng, 1, 20);
  const inner = c - d;
  return (
    `Evaluate ${a} + ${b} × (${c} - ${d}).\nBrackets first: ${c} - ${d} = ${inner}.\n` +
    `Then the product: ${b} × ${inner} = ${b * inner}.\nThen the sum: ${a} + ${b * inner} = ${a + b * inner}.\nAnswer: ${a + b * inner}`
  );
}

/** a·x + b = c with an integer root. */
function linear(rng: Rng): string {
  const a = nonZero(rng, -9, 12);
  const x = between(rng, -20, 20);
  const b = nonZero(rng, -50, 50);
  const c = a * x + b;
  return (
    `Solve ${coef(a, 'x')} ${signed(b)} = ${c}.\n` +
    `${b > 0 ? `Subtract ${b} from` : `Add ${-b} to`} both sides: ${coef(a, 'x')} = ${c - b}.\n` +
    (a === 1 ? '' : `Divide both sides by ${a}: x = ${x}.\n`) +
    `Check: ${a} × ${x < 0 ? `(${x})` : x} ${signed(b)} = ${c}.\nAnswer: x = ${x}`
  );
}

/** p/q + r/s over the least common denominator, reduced. */
function fraction(rng: Rng): string {
  const q = between(rng, 2, 12);
  const s = between(rng, 2, 12);
  const p = between(rng, 1, q * 2);
  const r = between(rng, 1, s * 2);
  const l = (q * s) / gcd(q, s);
  const num = p * (l / q) + r * (l / s);
  const g = gcd(num, l);
  const simplest = l / g === 1 ? String(num / g) : `${num / g}/${l / g}`; // 3/1 is written 3
  const reduced = g > 1 ? ` = ${simplest}` : '';
  return (
    `Add ${p}/${q} + ${r}/${s}.\nThe least common denominator of ${q} and ${s} is ${l}.\n` +
    `${p}/${q} = ${p * (l / q)}/${l} and ${r}/${s} = ${r * (l / s)}/${l}.\n` +
    `${p * (l / q)}/${l} + ${r * (l / s)}/${l} = ${num}/${l}${reduced}.\nAnswer: ${simplest}`
  );
}

function percent(rng: Rng): string {
  const pct = [5, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 80][rng.int(12)]!;
  const base = between(rng, 1, 200) * 5;
  const v = (base * pct) / 100;
  return `What is ${pct}% of ${base}?\n${pct}% of ${base} = ${base} × ${pct} / 100 = ${base * pct} / 100 = ${v}.\nAnswer: ${v}`;
}

/** x + y = s, x − y = d, solved by elimination. */
function system(rng: Rng): string {
  const x = between(rng, -30, 40);
  const y = between(rng, -30, 40);
  const s = x + y;
  const d = x - y;
  return (
    `Solve the system x + y = ${s}, x - y = ${d}.\nAdd the two equations: 2x = ${s + d}, so x = ${x}.\n` +
    `Substitute into the first: ${x} + y = ${s}, so y = ${y}.\nAnswer: x = ${x}, y = ${y}`
  );
}

/** x² + b·x + c = 0 with integer roots, by factoring. */
function quadratic(rng: Rng): string {
  let r1 = between(rng, -20, 20);
  let r2 = between(rng, -20, 20);
  if (r1 > r2) [r1, r2] = [r2, r1];
  const b = -(r1 + r2);
  const c = r1 * r2;
  const bx = b === 0 ? '' : b === 1 ? ' + x' : b === -1 ? ' - x' : ` ${signed(b)}x`;
  const lhs = `x^2${bx}${c ? ` ${signed(c)}` : ''}`;
  const factor = (r: number): string => (r === 0 ? 'x' : `(x ${signed(-r)})`);
  // x(x + 9), not (x + 9)x; x·x for x² = 0
  const factors = r1 === 0 && r2 === 0 ? 'x·x' : r2 === 0 ? factor(r2) + factor(r1) : factor(r1) + factor(r2);
  const roots = r1 === r2 ? `x = ${r1} (a double root)` : `x = ${r1} or x = ${r2}`;
  return (
    `Solve ${lhs} = 0.\nLook for two numbers with product ${c} and sum ${-b}: ${r1} and ${r2}.\n` +
    `Factor: ${factors} = 0.\nSo ${roots}.\nAnswer: ${r1 === r2 ? `x = ${r1}` : `x = ${r1} or x = ${r2}`}`
  );
}

const GENERATORS: Record<MathKind, (rng: Rng) => string> = {
  add,
  subtract,
  multiply,
  divide,
  order,
  linear,
  fraction,
  percent,
  system,
  quadratic,
};

/** An endless sequence of problems, kinds and numbers drawn from the seed's generator. */
export function* mathProblems(seed: number): Generator<MathProblem> {
  const rng = new Rng(seed * 7919 + 17);
  for (;;) {
    const kind = MATH_KINDS[rng.int(MATH_KINDS.length)]!;
    yield { kind, text: GENERATORS[kind](rng) };
  }
}
