// dsv2 chat (piped stdin, streamed replies on the engine) and the serve/chat commands' flag and file errors.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { generate } from '../src/infer/generate.js';
import { loadChatTemplate, loadTokenizer } from '../src/io/model-dir.js';
import { loadModel } from '../src/model/load.js';
import { makeServeModel } from './serve-model.js';

const dir = join(mkdtempSync(join(tmpdir(), 'dsv2-chat-')), 'm');
makeServeModel(dir);

function dsv2(args: string[], input = ''): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['bin/dsv2.js', ...args], { encoding: 'utf8', input, timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('dsv2 chat', () => {
  it('streams a reply per line of input through the chat template; the history carries over; /reset clears it', () => {
    const r = dsv2(['chat', '--model', dir, '--temperature', '0', '--max-tokens', '6'], 'Call me\nthe whale\n/reset\nCall me\n');
    assert.equal(r.code, 0, r.err);
    const lines = r.out.split('\n');
    assert.equal(lines.length, 4, JSON.stringify(r.out)); // three replies and the final newline
    const model = loadModel(dir, { trainable: false });
    const tok = loadTokenizer(dir);
    const template = loadChatTemplate(dir, tok, 0, 1);
    const reply = (messages: { role: string; content: string }[]): string => {
      const [ids] = generate(model, [tok.encode(template.render(messages))], { maxNewTokens: 6, stopAtEos: true, eosTokenIds: [1] });
      return tok.decode(
        ids!.filter((t) => t !== 1),
        { skipSpecial: true },
      );
    };
    const first = reply([{ role: 'user', content: 'Call me' }]);
    assert.equal(lines[0], first);
    assert.equal(
      lines[1],
      reply([
        { role: 'user', content: 'Call me' },
        { role: 'assistant', content: first },
        { role: 'user', content: 'the whale' },
      ]),
    );
    assert.equal(lines[2], first, 'after /reset the same question gets the same greedy reply');
  });

  it('bad flags and files are one line and a non-zero exit', () => {
    for (const [args, code, re] of [
      [['serve', '--model', dir, '--port', '70000'], 2, /--port must be in \[0, 65535\]/],
      [['serve', '--model', join(dir, 'nowhere')], 1, /neither a model directory/],
      [['serve', '--model', dir, '--backend', 'gpu'], 1, /unknown backend 'gpu'/],
      [['serve', '--model', dir, '--kv-cache-mib', '-1'], 2, /--kv-cache-mib must be in/],
      [
        ['serve', '--model', dir, '--kv-cache-mib', '1000000'],
        2,
        /--kv-cache-mib 1000000 needs 976.6 GiB of memory; this machine has .* available/,
      ],
      [['serve'], 2, /--model DIR is required/],
      [['chat', '--model', dir, '--temperature', '-2'], 2, /--temperature: must be a number ≥ 0, got -2/],
      [['chat', '--model', dir, '--top-p', '2'], 2, /--top-p: must be in \(0, 1\], got 2/],
      [['sample', '--model', dir, '--prompt', 'x', '--top-k', '-3'], 2, /--top-k: must be an integer ≥ 0, got -3/],
    ] as const) {
      const r = dsv2([...args]);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, re);
      assert.equal(r.err.trim().split('\n').length, 1, r.err);
    }
  });

  it('serve: SIGTERM while the model loads still exits 0 (the engine worker does not outlive the server)', async () => {
    const p = spawn(process.execPath, ['bin/dsv2.js', 'serve', '--model', dir, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
      if (out.includes('listening on') && !p.killed) p.kill('SIGTERM'); // before (or just as) the worker reports ready
    });
    const code = await new Promise<number | null>((r) => p.once('exit', r));
    assert.equal(code, 0, out);
    assert.match(out, /stopped/);
  });
});
