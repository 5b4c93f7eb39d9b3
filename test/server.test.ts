// `dsv2 serve` as a real process on 127.0.0.1, driven by the official `openai` client: completions and chat,
// streamed and not, usage, logprobs, stop strings, typed errors, 32 concurrent streams with the right tokens, a
// client that disconnects (its blocks free again in /metrics), bad requests that leave the server serving, and a
// clean exit on SIGTERM. Expected tokens come from generating each prompt alone in this process.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { generate } from '../src/infer/generate.js';
import { loadChatTemplate, loadTokenizer } from '../src/io/model-dir.js';
import { loadModel } from '../src/model/load.js';
import type { DeepseekV2ForCausalLM } from '../src/model/model.js';
import { DsvServer } from '../src/server/http.js';
import type { ChatTemplate } from '../src/tokenizer/chat-template.js';
import type { Tokenizer } from '../src/tokenizer/tokenizer.js';
import { makeServeModel } from './serve-model.js';

const KEY = 'test-key';
const dir = join(mkdtempSync(join(tmpdir(), 'dsv2-serve-')), 'tiny-chat');
let proc: ChildProcess;
let base = '';
let client: OpenAI;
let model: DeepseekV2ForCausalLM;
let tok: Tokenizer;
let template: ChatTemplate;

/** Greedy text for prompt ids, generated alone in this process (the server must give the same). */
function expected(ids: number[], maxTokens: number): { text: string; ids: number[] } {
  const [out] = generate(model, [ids], { maxNewTokens: maxTokens, stopAtEos: true, eosTokenIds: [1] });
  const ends = out!.at(-1) === 1;
  return { text: tok.decode(ends ? out!.slice(0, -1) : out!, { skipSpecial: true }), ids: out! };
}
const completionIds = (text: string): number[] => tok.encode(text, { addBos: true, bosId: 0 });
const chatIds = (content: string): number[] => tok.encode(template.render([{ role: 'user', content }]));

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `metric ${name} missing`);
  return Number(line.split(' ')[1]);
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

async function raw(
  path: string,
  body: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: Record<string, unknown> }> {
  // node:http rather than fetch: the server may answer (413) before a big body is sent, and close; the response must
  // still be read, and the request's EPIPE that follows ignored, as a robust client does
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${KEY}`,
        'content-length': Buffer.byteLength(body),
        ...headers,
      },
    });
    let answered = false;
    req.on('response', (res) => {
      answered = true;
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> });
        } catch (e) {
          reject(e);
        }
      });
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (!(answered || e.code === 'EPIPE' || e.code === 'ECONNRESET')) reject(e);
    });
    req.on('close', () => {
      if (!answered) reject(new Error(`${path}: the connection closed without a response`));
    });
    req.end(body);
  });
}

before(async () => {
  makeServeModel(dir);
  model = loadModel(dir, { trainable: false });
  tok = loadTokenizer(dir);
  template = loadChatTemplate(dir, tok, 0, 1);
  proc = spawn(
    process.execPath,
    ['bin/dsv2.js', 'serve', '--model', dir, '--port', '0', '--api-key', KEY, '--kv-cache-mib', '2', '--block-size', '8'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  proc.stderr!.on('data', (d) => (out += d));
  base = await new Promise<string>((resolve, reject) => {
    proc.stdout!.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/[\d.:]+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    proc.once('exit', (code) => reject(new Error(`dsv2 serve exited (${code}): ${out}`)));
  });
  for (let i = 0; i < 200; i++) {
    if ((await fetch(`${base}/health`)).status === 200) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  client = new OpenAI({ baseURL: `${base}/v1`, apiKey: KEY, maxRetries: 0 });
});

after(() => {
  if (proc.exitCode === null) proc.kill('SIGKILL');
});

describe('dsv2 serve with the openai client', () => {
  it('lists the served model', async () => {
    const models = await client.models.list();
    assert.deepEqual(
      models.data.map((m) => m.id),
      ['tiny-chat'],
    );
  });

  it('completions: greedy text equals generating alone; usage; streamed text equals the whole', async () => {
    const prompt = 'Call me Ishmael. Some years';
    const want = expected(completionIds(prompt), 24);
    const r = await client.completions.create({ model: 'tiny-chat', prompt, max_tokens: 24, temperature: 0 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices[0]!.text, want.text);
    assert.equal(r.usage!.prompt_tokens, completionIds(prompt).length);
    assert.equal(r.usage!.completion_tokens, want.ids.length);
    assert.equal(r.choices[0]!.finish_reason, want.ids.length === 24 && want.ids.at(-1) !== 1 ? 'length' : 'stop');
    let text = '';
    let finish: string | null = null;
    for await (const c of await client.completions.create({ model: 'tiny-chat', prompt, max_tokens: 24, temperature: 0, stream: true })) {
      text += c.choices[0]?.text ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(text, want.text);
    assert.equal(finish, r.choices[0]!.finish_reason);
  });

  it('chat: the chat template, streamed deltas with role first, include_usage as a last chunk without choices', async () => {
    const content = 'whenever I find myself growing grim';
    const want = expected(chatIds(content), 20);
    const r = await client.chat.completions.create({
      model: 'tiny-chat',
      messages: [{ role: 'user', content }],
      max_tokens: 20,
      temperature: 0,
    });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices[0]!.message.role, 'assistant');
    assert.equal(r.choices[0]!.message.content, want.text);
    assert.equal(r.usage!.prompt_tokens, chatIds(content).length);
    const chunks = [];
    const s = await client.chat.completions.create({
      model: 'tiny-chat',
      messages: [{ role: 'user', content }],
      max_tokens: 20,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const c of s) chunks.push(c);
    assert.equal(chunks[0]!.choices[0]!.delta.role, 'assistant');
    assert.equal(chunks.map((c) => c.choices[0]?.delta.content ?? '').join(''), want.text);
    const last = chunks.at(-1)!;
    assert.deepEqual(last.choices, []);
    assert.deepEqual(
      { p: last.usage!.prompt_tokens, c: last.usage!.completion_tokens },
      { p: r.usage!.prompt_tokens, c: r.usage!.completion_tokens },
    );
    assert.ok(chunks.slice(0, -1).every((c) => c.usage === null));
    assert.equal(chunks.at(-2)!.choices[0]!.finish_reason, r.choices[0]!.finish_reason);
  });

  it('logprobs: chat top_logprobs and completions logprobs, the chosen token first under greedy', async () => {
    const r = await client.chat.completions.create({
      model: 'tiny-chat',
      messages: [{ role: 'user', content: 'the whale' }],
      max_tokens: 5,
      temperature: 0,
      logprobs: true,
      top_logprobs: 3,
    });
    const lp = r.choices[0]!.logprobs!.content!;
    assert.equal(lp.length, r.usage!.completion_tokens);
    for (const t of lp) {
      assert.equal(t.top_logprobs.length, 3);
      assert.ok(t.logprob <= 0);
      assert.equal(t.top_logprobs[0]!.logprob, t.logprob, 'greedy: the chosen token is the most likely');
      assert.ok(t.top_logprobs[0]!.logprob >= t.top_logprobs[1]!.logprob);
    }
    const c = await client.completions.create({ model: 'tiny-chat', prompt: 'Call me', max_tokens: 4, temperature: 0, logprobs: 2 });
    const l = c.choices[0]!.logprobs!;
    const streamed: number[] = [];
    for await (const ch of await client.completions.create({
      model: 'tiny-chat',
      prompt: 'Call me',
      max_tokens: 4,
      temperature: 0,
      logprobs: 2,
      stream: true,
    }))
      streamed.push(...(ch.choices[0]?.logprobs?.text_offset ?? []));
    assert.deepEqual(streamed, l.text_offset, 'streamed text_offset equals the whole answer’s');
    assert.equal(l.tokens!.length, 4);
    assert.equal(l.top_logprobs![0]!.constructor, Object);
    assert.equal(Object.keys(l.top_logprobs![0]!).length <= 2, true);
  });

  it('stop strings: the text up to the first one, finish_reason stop, also when streamed', async () => {
    const prompt = 'Call me Ishmael. Some years';
    const want = expected(completionIds(prompt), 40).text;
    const stop = want.slice(5, 8);
    const cut = want.indexOf(stop);
    assert.ok(stop.length === 3 && cut >= 0, `a stop string from the expected text: ${JSON.stringify(want)}`);
    const r = await client.completions.create({ model: 'tiny-chat', prompt, max_tokens: 40, temperature: 0, stop: [stop, 'zzzz'] });
    assert.equal(r.choices[0]!.text, want.slice(0, cut));
    assert.equal(r.choices[0]!.finish_reason, 'stop');
    let text = '';
    for await (const c of await client.completions.create({
      model: 'tiny-chat',
      prompt,
      max_tokens: 40,
      temperature: 0,
      stop,
      stream: true,
    }))
      text += c.choices[0]?.text ?? '';
    assert.equal(text, want.slice(0, cut));
  });

  it('n > 1 with a seed: n choices, reproducible with the same seed', async () => {
    const ask = (): Promise<OpenAI.Completions.Completion> =>
      client.completions.create({ model: 'tiny-chat', prompt: 'Call me', max_tokens: 8, temperature: 1, n: 3, seed: 42 });
    const [a, b] = [await ask(), await ask()];
    assert.equal(a.choices.length, 3);
    assert.deepEqual(
      a.choices.map((c) => c.text),
      b.choices.map((c) => c.text),
    );
    assert.ok(
      a.usage!.completion_tokens >= 3 && a.usage!.completion_tokens <= 24,
      `usage counts all choices: ${a.usage!.completion_tokens}`,
    );
  });

  it('typed errors: 400 names the field, 401 bad key, 404 unknown model and route; the server keeps serving', async () => {
    const good = async (): Promise<void> => {
      const r = await client.completions.create({ model: 'tiny-chat', prompt: 'Call', max_tokens: 2, temperature: 0 });
      assert.equal(r.choices.length, 1);
    };
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const cases: [() => Promise<unknown>, new (...a: any[]) => Error, number, string | null][] = [
      [
        () => client.completions.create({ model: 'tiny-chat', prompt: 'x', temperature: 'hot' as unknown as number }),
        OpenAI.BadRequestError,
        400,
        'temperature',
      ],
      [() => client.completions.create({ model: 'tiny-chat', prompt: 'x', top_p: 0 }), OpenAI.BadRequestError, 400, 'top_p'],
      [() => client.chat.completions.create({ model: 'tiny-chat', messages: [] }), OpenAI.BadRequestError, 400, 'messages'],
      [() => client.completions.create({ model: 'tiny-chat', prompt: 'x', max_tokens: 1e9 }), OpenAI.BadRequestError, 400, 'max_tokens'],
      [() => client.completions.create({ model: 'tiny-chat', prompt: 'whale '.repeat(600) }), OpenAI.BadRequestError, 400, 'prompt'],
      [() => client.completions.create({ model: 'nope', prompt: 'x' }), OpenAI.NotFoundError, 404, 'model'],
      [
        () => new OpenAI({ baseURL: `${base}/v1`, apiKey: 'wrong', maxRetries: 0 }).completions.create({ model: 'tiny-chat', prompt: 'x' }),
        OpenAI.AuthenticationError,
        401,
        null,
      ],
    ];
    for (const [call, type, status, param] of cases) {
      await assert.rejects(call, (e: InstanceType<typeof OpenAI.APIError>) => {
        assert.ok(e instanceof type, `${e.constructor.name}: ${e.message}`);
        assert.equal(e.status, status);
        assert.equal((e.error as { param?: unknown }).param ?? null, param);
        return true;
      });
      await good();
    }
    for (const [body, status] of [
      ['{"model": "tiny-chat", "prompt": ', 400],
      ['[1, 2]', 400],
      ['{"model": "tiny-chat"}', 400],
      [JSON.stringify({ model: 'tiny-chat', prompt: 'x'.repeat(5 * 2 ** 20) }), 413],
    ] as const) {
      const r = await raw('/v1/completions', body);
      assert.equal(r.status, status, body.slice(0, 40));
      assert.equal(typeof (r.json['error'] as { message?: unknown }).message, 'string');
      await good();
    }
    assert.equal((await fetch(`${base}/v1/nothing`, { headers: { authorization: `Bearer ${KEY}` } })).status, 404);
  });

  it('32 concurrent streaming clients all finish with the tokens each would get alone; RSS stays bounded', async () => {
    const prompts = [
      'Call me',
      'the whale',
      'Some years ago',
      'a damp, drizzly November',
      'coffin warehouses',
      '鯨 🐋',
      'I thought I would',
      'sail',
    ];
    const wants = prompts.map((p) => expected(completionIds(p), 16).text);
    const run = async (i: number): Promise<void> => {
      let text = '';
      const s = await client.completions.create({
        model: 'tiny-chat',
        prompt: prompts[i % 8]!,
        max_tokens: 16,
        temperature: 0,
        stream: true,
      });
      for await (const c of s) text += c.choices[0]?.text ?? '';
      assert.equal(text, wants[i % 8], `client ${i}`);
    };
    await Promise.all(Array.from({ length: 32 }, (_, i) => run(i))); // warm-up round
    const rss0 = rssMiB(proc.pid!);
    for (let round = 0; round < 3; round++) await Promise.all(Array.from({ length: 32 }, (_, i) => run(i)));
    const rss1 = rssMiB(proc.pid!);
    assert.ok(rss1 < rss0 * 1.25 + 64, `RSS ${rss0.toFixed(0)} → ${rss1.toFixed(0)} MiB over three rounds of 32 streams`);
    assert.equal(await metric('dsv2_kv_cache_blocks_used'), 0);
  });

  it('a client that disconnects mid-stream cancels its request: its blocks are free again in /metrics', async () => {
    const ctl = new AbortController();
    const s = await client.completions.create(
      {
        model: 'tiny-chat',
        prompt: 'Call me Ishmael.',
        max_tokens: 400,
        temperature: 0,
        stream: true,
        ignore_eos: true,
      } as OpenAI.CompletionCreateParamsStreaming,
      { signal: ctl.signal },
    );
    let n = 0;
    try {
      for await (const c of s) {
        void c;
        if (++n === 3) {
          assert.ok((await metric('dsv2_kv_cache_blocks_used')) > 0, 'the stream holds blocks');
          ctl.abort();
        }
      }
    } catch (e) {
      assert.ok(e instanceof OpenAI.APIUserAbortError, String(e));
    }
    assert.ok(n >= 3 && n < 100, `the stream stopped after the abort (${n} chunks)`);
    let used = -1;
    for (let i = 0; i < 100 && used !== 0; i++) {
      used = await metric('dsv2_kv_cache_blocks_used');
      if (used) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(used, 0);
    assert.equal(await metric('dsv2_num_requests_running'), 0);
  });

  it('a reader that stalls mid-stream (socket backpressure) still gets the whole stream, in order', async () => {
    const body = JSON.stringify({
      model: 'tiny-chat',
      prompt: 'Call me',
      max_tokens: 200,
      temperature: 0,
      ignore_eos: true,
      stream: true,
      logprobs: 20,
    });
    const whole = await client.completions.create({
      model: 'tiny-chat',
      prompt: 'Call me',
      max_tokens: 200,
      temperature: 0,
      ignore_eos: true,
    } as OpenAI.CompletionCreateParamsNonStreaming);
    const { request } = await import('node:http');
    const text = await new Promise<string>((resolve, reject) => {
      const req = request(
        `${base}/v1/completions`,
        { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` } },
        (res) => {
          let raw = '';
          let paused = false;
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            raw += d;
            if (!paused) {
              paused = true; // stop reading for a while: the server's writes fill the socket and must wait for it
              res.pause();
              setTimeout(() => res.resume(), 400);
            }
          });
          res.on('end', () => resolve(raw));
          res.on('error', reject);
        },
      );
      req.end(body);
    });
    const events = text.split('\n\n').filter((l) => l.startsWith('data: {'));
    const got = events.map((l) => (JSON.parse(l.slice(6)) as { choices: { text: string }[] }).choices[0]?.text ?? '').join('');
    assert.equal(got, whole.choices[0]!.text);
    assert.ok(text.trimEnd().endsWith('data: [DONE]'));
  });

  it('SIGTERM: the server finishes and exits 0', async () => {
    const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
    proc.kill('SIGTERM');
    assert.equal(await exited, 0);
  });
});

describe('server without an engine yet', () => {
  it('/health answers 503 while the model loads, and generation requests 503', async () => {
    const s = new DsvServer({ modelName: 'm', tokenizer: tok, template, bosId: 0, maxQueue: 4 });
    assert.equal((await s.app.inject({ method: 'GET', url: '/health' })).statusCode, 503);
    const r = await s.app.inject({ method: 'POST', url: '/v1/completions', payload: { model: 'm', prompt: 'x' } });
    assert.equal(r.statusCode, 503);
    assert.equal(JSON.parse(r.body).error.code, 'loading');
    await s.app.close();
  });
});
