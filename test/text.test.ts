// Streaming text: incremental detokenisation never splits a UTF-8 character; stop strings are caught across pushes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IncrementalDetokenizer, StopMatcher, type TextCodec } from '../src/infer/text.js';
import { Rng } from '../src/tensor/random.js';

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

/** A codec whose token i is chunks[i]; it records the options it was called with. */
function codec(chunks: (number[] | Uint8Array)[]): TextCodec & { opts: unknown[] } {
  const opts: unknown[] = [];
  return { opts, tokenBytes: (id, o) => (opts.push(o), Uint8Array.from(chunks[id]!)) };
}

/** Push tokens 0..n−1; the text of each push. */
function detok(chunks: (number[] | Uint8Array)[]): string[] {
  const d = new IncrementalDetokenizer(codec(chunks));
  return chunks.map((_, i) => d.push(i));
}

describe('IncrementalDetokenizer', () => {
  it('holds a 4-byte emoji split over tokens until its last byte', () => {
    const e = [...utf8('😀')]; // F0 9F 98 80
    assert.deepEqual(detok(e.map((b) => [b])), ['', '', '', '😀']);
    assert.deepEqual(detok([e.slice(0, 2), e.slice(2)]), ['', '😀']);
    assert.deepEqual(
      detok([
        [0x61, ...e.slice(0, 3)],
        [e[3]!, 0x62],
      ]),
      ['a', '😀b'],
    );
  });

  it('holds a 3-byte CJK character split over tokens until its last byte', () => {
    const c = [...utf8('中')]; // E4 B8 AD
    assert.deepEqual(detok([[0x61, c[0]!], [c[1]!], [c[2]!, 0x62]]), ['a', '', '中b']);
    assert.deepEqual(detok([c.slice(0, 2), [c[2]!, ...utf8('文')]]), ['', '中文']);
  });

  it('over random byte splits, each push emits exactly the whole characters completed so far', () => {
    const text = 'añ中😀 b日本語🎉x€𝄞é!';
    const bytes = utf8(text);
    // the byte offsets where a character ends
    const ends = new Set<number>([0]);
    for (let i = 0, n = 0; i < text.length;) {
      const ch = String.fromCodePoint(text.codePointAt(i)!);
      n += utf8(ch).length;
      ends.add(n);
      i += ch.length;
    }
    const rng = new Rng(7);
    for (let t = 0; t < 200; t++) {
      const chunks: Uint8Array[] = [];
      for (let i = 0; i < bytes.length;) {
        const j = i + rng.int(5); // empty tokens too
        chunks.push(bytes.slice(i, j));
        i = j;
      }
      const d = new IncrementalDetokenizer(codec(chunks));
      let out = '';
      let pushed = 0;
      for (let i = 0; i < chunks.length; i++) {
        const s = d.push(i);
        assert.ok(!s.includes('\uFFFD'), 'no replacement character');
        out += s;
        pushed += chunks[i]!.length;
        let whole = pushed;
        while (!ends.has(whole)) whole--;
        assert.equal(utf8(out).length, whole, 'everything complete is emitted, nothing partial');
        assert.ok(text.startsWith(out));
      }
      assert.equal(out + d.flush(), text);
    }
  });

  it('flush of an incomplete character gives U+FFFD, then starts afresh', () => {
    const c = codec([[0xf0, 0x9f], [0x78], [0xe4, 0xb8]]);
    const d = new IncrementalDetokenizer(c);
    assert.equal(d.push(0), '');
    assert.equal(d.flush(), '\uFFFD');
    assert.equal(d.flush(), '');
    assert.equal(d.push(1), 'x');
    assert.equal(d.push(2), '');
    assert.equal(d.flush(), '\uFFFD');
  });

  it('passes skipSpecial to the codec (true unless told otherwise)', () => {
    const a = codec([[0x61]]);
    new IncrementalDetokenizer(a).push(0);
    const b = codec([[0x61]]);
    new IncrementalDetokenizer(b, false).push(0);
    assert.deepEqual([a.opts, b.opts], [[{ skipSpecial: true }], [{ skipSpecial: false }]]);
  });
});

/** Feed the parts until a stop; what each push emitted, and whether and at which part it stopped. */
function feed(stops: string[], parts: string[]): { emits: string[]; stoppedAt: number; tail: string } {
  const m = new StopMatcher(stops);
  const emits: string[] = [];
  for (let i = 0; i < parts.length; i++) {
    const r = m.push(parts[i]!);
    emits.push(r.emit);
    if (r.stopped) return { emits, stoppedAt: i, tail: '' };
  }
  return { emits, stoppedAt: -1, tail: m.flush() };
}

describe('StopMatcher', () => {
  it('catches a stop string split over several pushes and returns exactly the text before it', () => {
    assert.deepEqual(feed(['STOP'], ['ab S', 'T', 'O', 'Pxyz', 'more']), { emits: ['ab ', '', '', ''], stoppedAt: 3, tail: '' });
    const r = feed(['<end>'], ['hello wor', 'ld<e', 'nd>tail']);
    assert.deepEqual(r, { emits: ['hello wor', 'ld', ''], stoppedAt: 2, tail: '' });
    assert.deepEqual(feed(['<end>'], ['x<end>y']), { emits: ['x'], stoppedAt: 0, tail: '' });
    assert.deepEqual(feed(['<end>'], ['<end>']), { emits: [''], stoppedAt: 0, tail: '' });
  });

  it('releases text that starts like a stop string as soon as it diverges', () => {
    assert.deepEqual(feed(['<end>'], ['a<e', 'nx', 'b']), { emits: ['a', '<enx', 'b'], stoppedAt: -1, tail: '' });
    // the held "<e" diverges, but the new "<en" may begin the stop again
    assert.deepEqual(feed(['<end>'], ['<e', '<en', 'd>!']), { emits: ['', '<e', ''], stoppedAt: 2, tail: '' });
    assert.deepEqual(feed(['abcX', 'bcY'], ['abc', 'Z']), { emits: ['', 'abcZ'], stoppedAt: -1, tail: '' });
    assert.deepEqual(feed(['abcX', 'bcY'], ['abc', 'Y']), { emits: ['', 'a'], stoppedAt: 1, tail: '' });
  });

  it('the earliest of several stop strings wins, whatever their order in the list', () => {
    for (const stops of [
      ['world', 'lo'],
      ['lo', 'world'],
    ])
      assert.equal(feed(stops, ['hello world']).emits.join(''), 'hel');
    assert.equal(feed(['xyz', 'b'], ['ax', 'yzb']).emits.join(''), 'a');
    assert.equal(feed(['lo', 'hel'], ['hello']).emits.join(''), '');
  });

  it('flush returns the held-back text', () => {
    const m = new StopMatcher(['<end>']);
    assert.deepEqual(m.push('abc<en'), { emit: 'abc', stopped: false });
    assert.equal(m.flush(), '<en');
    assert.equal(m.flush(), '');
  });

  it('with no stop strings, text passes through unchanged', () => {
    const m = new StopMatcher([]);
    for (const s of ['', 'a', '<end> 😀 中', '\n']) assert.deepEqual(m.push(s), { emit: s, stopped: false });
    assert.equal(m.flush(), '');
  });

  // Stop sets where one stop occurs strictly inside another (not as its prefix or suffix) are left out: there the
  // result depends on the split, since the inner one completes first (['abcd', 'c']: 'ab' for 'abc' + 'd', '' for 'abcd').
  const infix = (stops: string[]): boolean =>
    stops.some((a) =>
      stops.some((b) => b.length < a.length && [...a].some((_, k) => k > 0 && k + b.length < a.length && a.startsWith(b, k))),
    );

  it('property: random texts, splits and stops emit text.slice(0, first stop), held back no more than needed', () => {
    const rng = new Rng(12);
    const str = (n: number, alphabet: string): string => Array.from({ length: n }, () => alphabet[rng.int(alphabet.length)]).join('');
    let stoppedCases = 0;
    for (let t = 0; t < 3000; t++) {
      const alphabet = t % 2 ? 'ab' : 'abc';
      const text = str(rng.int(40), alphabet);
      const stops = Array.from({ length: 1 + rng.int(3) }, () => str(1 + rng.int(4), alphabet));
      if (infix(stops)) continue;
      const firsts = stops.map((s) => text.indexOf(s)).filter((i) => i !== -1);
      const at = firsts.length ? Math.min(...firsts) : -1;
      // the push that completes the first stop: the least end over all occurrences
      const end = Math.min(...stops.map((s) => (text.includes(s) ? text.indexOf(s) + s.length : Infinity)));
      const m = new StopMatcher(stops);
      let out = '';
      let pushed = 0;
      let stopped = false;
      while (pushed < text.length) {
        const prev = pushed;
        pushed = Math.min(text.length, pushed + rng.int(6)); // empty pushes too
        const r = m.push(text.slice(prev, pushed));
        out += r.emit;
        if (r.stopped) {
          stopped = true;
          assert.ok(prev < end && end <= pushed, 'stopped on the push that completes the first stop');
          break;
        }
        assert.ok(pushed < end, `${JSON.stringify({ text, stops })}: not stopped at ${pushed} ≥ ${end}`);
        // held back: exactly the longest tail that is a proper prefix of some stop
        const seen = text.slice(0, pushed);
        let hold = 0;
        for (const s of stops)
          for (let k = 1; k < s.length && k <= seen.length; k++) if (seen.endsWith(s.slice(0, k))) hold = Math.max(hold, k);
        assert.equal(out, seen.slice(0, pushed - hold), JSON.stringify({ text, stops, pushed }));
      }
      if (!stopped) out += m.flush();
      const want = at === -1 ? text : text.slice(0, at);
      assert.equal(out, want, JSON.stringify({ text, stops }));
      assert.equal(stopped, at !== -1);
      if (stopped) stoppedCases++;
    }
    assert.ok(stoppedCases > 500, `${stoppedCases} cases stopped on a string`);
  });
});
