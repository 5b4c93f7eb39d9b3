import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { mutualInformation, specialisation, type TokenRouting } from '../src/experts/stats.js';
import { visibleToken } from '../src/experts/report.js';

const BIN = new URL('../../bin/dsv2.js', import.meta.url).pathname;
const close = (a: number, b: number, what: string): void => assert.ok(Math.abs(a - b) < 1e-12, `${what}: ${a} vs ${b}`);

/** A routing from per-token (domain, token, experts) rows, one MoE layer. */
function routing(rows: [domain: number, token: number, experts: number[]][], parts?: [number, number][]): TokenRouting {
  return {
    domain: Int32Array.from(rows.map((r) => r[0])),
    token: Int32Array.from(rows.map((r) => r[1])),
    chosen: [Int32Array.from(rows.flatMap((r) => r[2]))],
    ...(parts ? { parts: [{ shared: Float32Array.from(parts.map((p) => p[0])), routed: Float32Array.from(parts.map((p) => p[1])) }] } : {}),
    layerIds: [3],
  };
}

describe('specialisation numbers on hand-built routings', () => {
  it('experts 0,1 take only domain A and 2,3 only domain B: NMI 2/3, I/H(D) 1, concentration 1', () => {
    // 4 tokens of A → experts 0,1,0,1; 4 tokens of B → 2,3,2,3; one expert per token
    const rows: [number, number, number[]][] = [
      [0, 10, [0]],
      [0, 11, [1]],
      [0, 10, [0]],
      [0, 12, [1]],
      [1, 20, [2]],
      [1, 21, [3]],
      [1, 20, [2]],
      [1, 21, [3]],
    ];
    const r = specialisation(routing(rows), ['A', 'B'], 4, 1);
    const l = r.layers[0]!;
    assert.equal(l.layer, 3);
    // I = H(D) = ln 2, H(E) = ln 4: NMI = 2 ln2 / (ln2 + ln4) = 2/3
    close(l.mutualInformation, Math.log(2), 'I');
    close(l.nmi, 2 / 3, 'NMI');
    close(l.domainInformation, 1, 'I/H(D)');
    assert.deepEqual(
      l.experts.map((e) => e.dominant),
      [0, 0, 1, 1],
    );
    for (const e of l.experts) {
      close(e.concentration, 1, `expert ${e.expert} concentration`);
      close(e.load, 0.25, 'load');
    }
    assert.deepEqual(l.experts[0]!.shareOfDomain, [0.5, 0]);
    assert.deepEqual(l.experts[2]!.domainShare, [0, 1]);
    assert.deepEqual(l.experts[2]!.lift, [0, 2]);
    assert.deepEqual(l.experts[0]!.topTokens, [{ id: 10, count: 2, share: 1 }]);
    assert.deepEqual(l.experts[1]!.topTokens, [
      { id: 11, count: 1, share: 1 },
      { id: 12, count: 1, share: 1 },
    ]);
    assert.equal(l.sharedCarry, null);
    assert.deepEqual(r.domainTokens, [4, 4]);
  });

  it('a choice independent of the domain scores 0, whatever the domain sizes', () => {
    // one expert per token; A (6 tokens) and B (2 tokens) each split half and half over experts 0 and 1
    const rows: [number, number, number[]][] = [
      ...Array.from({ length: 6 }, (_, i): [number, number, number[]] => [0, i, [i % 2]]),
      [1, 7, [1]],
      [1, 8, [0]],
    ];
    const l = specialisation(routing(rows), ['A', 'B'], 2, 1).layers[0]!;
    close(l.mutualInformation, 0, 'I');
    close(l.nmi, 0, 'NMI');
    for (const e of l.experts) {
      close(e.concentration, 0.5, 'concentration');
      close(e.lift[0]!, 1, 'lift');
      close(e.lift[1]!, 1, 'lift');
    }
  });

  it('a partial preference gives the closed-form value, and domain sizes do not decide the dominant domain', () => {
    // joint counts [[3,1],[1,3]]: I = ¾ ln(3/2) − ¼ ln 2, H(E) = H(D) = ln 2
    const rows: [number, number, number[]][] = [
      [0, 1, [0]],
      [0, 1, [0]],
      [0, 1, [0]],
      [0, 2, [1]],
      [1, 3, [0]],
      [1, 4, [1]],
      [1, 4, [1]],
      [1, 4, [1]],
    ];
    const l = specialisation(routing(rows), ['A', 'B'], 2, 1).layers[0]!;
    const I = 0.75 * Math.log(1.5) - 0.25 * Math.log(2);
    close(l.mutualInformation, I, 'I');
    close(l.nmi, I / Math.log(2), 'NMI');
    close(l.experts[0]!.concentration, 0.75, 'concentration');
    // an expert no token chose has no domain
    const unused = specialisation(routing(rows), ['A', 'B'], 3, 1).layers[0]!.experts[2]!;
    assert.equal(unused.dominant, null);
    assert.equal(unused.concentration, 0);
    // 9 tokens of A all to expert 1 except 3 to expert 0; 1 token of B, to expert 0: expert 0 takes 1/4 of A's
    // assignments and all of B's, so its domain is B although most of its tokens are A's
    const skew: [number, number, number[]][] = [
      ...Array.from({ length: 3 }, (): [number, number, number[]] => [0, 1, [0]]),
      ...Array.from({ length: 9 }, (): [number, number, number[]] => [0, 2, [1]]),
      [1, 3, [0]],
    ];
    const e0 = specialisation(routing(skew), ['A', 'B'], 2, 1).layers[0]!.experts[0]!;
    assert.equal(e0.dominant, 1);
    close(e0.domainShare[0]!, 0.75, 'p(A | e0)');
    close(e0.concentration, 1 / (1 + 0.25), 'q(B | e0)');
  });

  it('distinctive tokens: those an expert takes the largest share of, among tokens seen at least 5 times', () => {
    const rows: [number, number, number[]][] = [
      ...Array.from({ length: 10 }, (_, i): [number, number, number[]] => [0, 1, [i < 8 ? 0 : 1]]),
      ...Array.from({ length: 10 }, (_, i): [number, number, number[]] => [1, 2, [i < 5 ? 0 : 1]]),
      [1, 3, [1]], // seen once: too rare to tell
    ];
    const l = specialisation(routing(rows), ['A', 'B'], 2, 1).layers[0]!;
    assert.deepEqual(l.experts[0]!.distinctive, [
      { id: 1, count: 8, share: 0.8 },
      { id: 2, count: 5, share: 0.5 },
    ]);
    assert.deepEqual(l.experts[1]!.distinctive, [
      { id: 2, count: 5, share: 0.5 },
      { id: 1, count: 2, share: 0.2 },
    ]);
    assert.deepEqual(l.experts[1]!.topTokens[0], { id: 2, count: 5, share: 0.5 });
  });

  it('the shared carry is the mean of |shared| / (|shared| + |routed|) over each domain’s tokens', () => {
    const rows: [number, number, number[]][] = [
      [0, 1, [0]],
      [0, 1, [0]],
      [1, 2, [1]],
    ];
    const l = specialisation(
      routing(rows, [
        [3, 1],
        [1, 1],
        [0, 2],
      ]),
      ['A', 'B'],
      2,
      1,
    ).layers[0]!;
    close(l.sharedCarry![0]!, (0.75 + 0.5) / 2, 'A');
    close(l.sharedCarry![1]!, 0, 'B');
  });

  it('names a broken routing instead of computing on it', () => {
    assert.throws(() => specialisation(routing([[2, 1, [0]]]), ['A', 'B'], 2, 1), /domain index 2 is outside 0…1/);
    assert.throws(() => specialisation(routing([[0, 1, [5]]]), ['A', 'B'], 2, 1), /names expert 5, outside 0…1/);
    assert.throws(() => specialisation(routing([[0, 1, [0]]]), ['A', 'B'], 2, 2), /1 choices for 1 tokens × 2/);
    close(mutualInformation([[0, 0]]).nmi, 0, 'empty');
  });

  it('shows tokens with visible whitespace', () => {
    assert.equal(visibleToken(' the\n\t\u0001'), '·the⏎⇥\\u0001');
  });
});

describe('dsv2 experts', () => {
  it('routes the held-out documents of a trained run and writes experts.json and report.html', () => {
    const root = mkdtempSync(join(tmpdir(), 'dsv2-experts-'));
    const data = join(root, 'labelled.jsonl');
    const rows = Array.from({ length: 40 }, (_, i) =>
      i % 2
        ? { text: `${i} + ${i + 3} = ${2 * i + 3}. ${i * 7} - ${i} = ${i * 6}.`.repeat(4), domain: 'sums' }
        : { text: `The whale swam past the ship number ${i}, and the sailors watched it go.`.repeat(3), domain: 'words' },
    );
    writeFileSync(data, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const out = join(root, 'run');
    const env = { ...process.env, DSV2_QUIET: '1' };
    const t = spawnSync(
      process.execPath,
      [
        BIN,
        'train',
        '--preset',
        'tiny',
        '--vocab_size=300',
        '--data',
        data,
        '--out',
        out,
        '--steps',
        '4',
        '--batch',
        '2',
        '--seq',
        '32',
        '--val-fraction',
        '0.25',
        '--cache-dir',
        join(root, 'cache'),
      ],
      { encoding: 'utf8', env },
    );
    assert.equal(t.status, 0, t.stderr);
    const r = spawnSync(process.execPath, [BIN, 'experts', '--model', out, '--seq', '32'], { encoding: 'utf8', env });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /MoE layer 1: I\/H\(domain\) \d\.\d{3}, NMI \d\.\d{3}/);
    const j = JSON.parse(readFileSync(join(out, 'experts', 'experts.json'), 'utf8')) as {
      domains: string[];
      domainTokens: number[];
      domainLoss: number[];
      layers: { layer: number; nmi: number; experts: { shareOfDomain: number[] }[]; sharedCarry: number[] }[];
      data: string;
    };
    assert.equal(j.data, data, "the run's corpus is the default");
    assert.deepEqual(j.domains, ['words', 'sums']);
    assert.ok(j.domainTokens.every((n) => n > 0));
    assert.ok(
      j.domainLoss.every((l) => l > 0 && l < Math.log(300) + 1),
      `loss by domain ${j.domainLoss}`,
    );
    assert.match(r.stdout, /validation loss by domain: words \d\.\d{3}, sums \d\.\d{3}/);
    assert.equal(j.layers.length, 1); // tiny: layer 0 dense, layer 1 MoE
    assert.equal(j.layers[0]!.layer, 1);
    const l = j.layers[0]!;
    assert.ok(l.nmi >= 0 && l.nmi <= 1);
    // p(e | d) sums to 1 over the experts for each domain (each token's K choices count 1/K each)
    for (let d = 0; d < 2; d++)
      close(
        l.experts.reduce((s, e) => s + e.shareOfDomain[d]!, 0),
        1,
        `Σ_e p(e|d=${d})`,
      );
    assert.ok(
      l.sharedCarry.every((v) => v > 0 && v < 1),
      'tiny has a shared expert',
    );
    const html = readFileSync(join(out, 'experts', 'report.html'), 'utf8');
    assert.match(html, /MoE layer 1 — I\/H\(domain\) \d\.\d{3}, NMI/);
    assert.doesNotMatch(html, /<script src=|https?:\/\//, 'self-contained');

    // bad input: one clear message, no stack trace
    const bad = spawnSync(process.execPath, [BIN, 'experts', '--model', out, '--val-fraction', '2'], { encoding: 'utf8', env });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /--val-fraction must be between 0 and 1, got 2/);
    assert.doesNotMatch(bad.stderr, /at .*\.js:\d+/);
    const none = spawnSync(process.execPath, [BIN, 'experts', '--model', join(root, 'nowhere')], { encoding: 'utf8', env });
    assert.notEqual(none.status, 0);
    assert.match(none.stderr, /nowhere is neither a model directory/);
    assert.ok(!existsSync(join(root, 'nowhere')));
  });
});
