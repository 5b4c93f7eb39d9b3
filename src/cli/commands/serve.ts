// `dsv2 serve`: the OpenAI-compatible server on a checkpoint; `dsv2 chat`: an interactive terminal chat that
// streams tokens. Both run on the inference engine (continuous batching over the paged latent cache).
import { checkFits } from '../../io/memory.js';
import { basename, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { defaultBackend, loadBackend } from '../../backend/registry.js';
import { Engine, type EngineOptions } from '../../infer/engine.js';
import { LocalEngine } from '../../infer/runner.js';
import { SamplingError } from '../../infer/sampler.js';
import { checkedSampling } from '../sampling.js';
import { loadChatTemplate, loadTokenizer, resolveModelDir } from '../../io/model-dir.js';
import { loadModel, readConfig } from '../../model/load.js';
import { DsvServer } from '../../server/http.js';
import { WorkerEngine } from '../../server/worker-client.js';
import type { ChatMessage } from '../../tokenizer/chat-template.js';
import { parseFlags, UsageError, type FlagSpec } from '../args.js';

const ENGINE_FLAGS: Record<string, FlagSpec> = {
  'kv-cache-mib': { type: 'number', help: 'memory for the paged KV cache in MiB (default 256)' },
  'max-num-seqs': { type: 'int', help: 'sequences decoded together (default 64)' },
  'max-batched-tokens': { type: 'int', help: 'tokens per engine step, decode and prefill chunks (default 512)' },
  'block-size': { type: 'int', help: 'tokens per KV-cache block (default 16)' },
  'no-prefix-caching': { type: 'bool', help: 'do not share computed prompt blocks between requests' },
  backend: { type: 'string', help: 'ts | native (default: native where it loads)' },
  threads: { type: 'int', help: 'kernel threads (default: all cores)' },
};

function engineOptions(flags: Record<string, unknown>): EngineOptions {
  const pos = (name: string, min: number, max = Infinity): number | undefined => {
    const v = flags[name] as number | undefined;
    if (v !== undefined && !(v >= min && v <= max)) throw new UsageError(`--${name} must be in [${min}, ${max}], got ${v}`);
    return v;
  };
  const kv = pos('kv-cache-mib', 0.001, 2 ** 20);
  // refused here, with what the machine has, rather than as an allocation failure inside the engine
  if (kv !== undefined) {
    try {
      checkFits(kv * 2 ** 20, `--kv-cache-mib ${kv}`);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  return {
    kvCacheMiB: kv,
    maxNumSeqs: pos('max-num-seqs', 1, 4096),
    maxBatchedTokens: pos('max-batched-tokens', 1, 65536),
    blockSize: pos('block-size', 1, 1024),
    prefixCaching: !flags['no-prefix-caching'],
  };
}

function threadsFlag(flags: Record<string, unknown>): number | undefined {
  const t = flags['threads'] as number | undefined;
  if (t !== undefined && !(t >= 1 && t <= 1024)) throw new UsageError(`--threads must be in [1, 1024], got ${t}`);
  return t;
}

/** dsv2 serve --model DIR [--host 127.0.0.1] [--port 8000] [--api-key KEY] … */
export async function runServe(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags(argv, {
    model: { type: 'string', help: 'model directory or training run folder' },
    host: { type: 'string', help: 'address to listen on (default 127.0.0.1)' },
    port: { type: 'int', help: 'port (default 8000; 0: any free port)' },
    'api-key': { type: 'string', help: 'require "Authorization: Bearer KEY" on /v1/* (default: DSV2_API_KEY, else none)' },
    'served-model-name': { type: 'string', help: 'the model id clients send (default: the directory name)' },
    'max-queue': { type: 'int', help: 'requests in flight before new ones get 429 (default 256)' },
    ...ENGINE_FLAGS,
  });
  if (positional.length) throw new UsageError(`unexpected argument '${positional[0]}'`);
  if (!flags['model']) throw new UsageError('--model DIR is required');
  const port = (flags['port'] as number | undefined) ?? 8000;
  if (!(port >= 0 && port <= 65535)) throw new UsageError(`--port must be in [0, 65535], got ${port}`);
  const maxQueue = (flags['max-queue'] as number | undefined) ?? 256;
  if (maxQueue < 1) throw new UsageError(`--max-queue must be ≥ 1, got ${maxQueue}`);
  const engine = engineOptions(flags);
  const threads = threadsFlag(flags);
  if (flags['backend']) loadBackend(flags['backend'] as string); // an unknown or unavailable backend fails here, clearly
  const dir = resolveModelDir(flags['model'] as string);
  const config = readConfig(dir);
  const tokenizer = loadTokenizer(dir);
  const template = loadChatTemplate(dir, tokenizer, config.bos_token_id ?? null, config.eos_token_id ?? null);
  const name =
    (flags['served-model-name'] as string | undefined) ?? basename(resolve(dir === flags['model'] ? dir : (flags['model'] as string)));
  const server = new DsvServer({
    modelName: name,
    tokenizer,
    template,
    bosId: config.bos_token_id ?? null,
    apiKey: (flags['api-key'] as string | undefined) ?? process.env['DSV2_API_KEY'],
    maxQueue,
  });
  let stopping: Promise<void> | null = null;
  const stopped = new Promise<void>((resolveStop) => {
    const stop = (sig: string): void => {
      if (stopping) return;
      console.log(`dsv2 serve: ${sig}: finishing in-flight requests, then exiting`);
      stopping = server.shutdown().then(resolveStop, resolveStop);
    };
    process.on('SIGINT', () => stop('SIGINT')); // a repeated signal while stopping is ignored, not fatal
    process.on('SIGTERM', () => stop('SIGTERM'));
  });
  if (stopping) return 0; // a signal before the server even listened
  const url = await server.listen((flags['host'] as string | undefined) ?? '127.0.0.1', port);
  console.log(`dsv2 serve: listening on ${url} (model '${name}' from ${dir}; loading)`);
  const t0 = performance.now();
  try {
    const client = await WorkerEngine.start({ dir, backend: flags['backend'] as string | undefined, threads, engine }, config.vocab_size);
    if (stopping) {
      // SIGINT/SIGTERM came while the model loaded: the worker must not outlive the server
      await client.close();
      await stopped;
      console.log('dsv2 serve: stopped');
      return 0;
    }
    server.setEngine(client);
    const s = client.stats();
    console.log(
      `dsv2 serve: ready in ${((performance.now() - t0) / 1000).toFixed(1)} s on ${client.backend} (${client.threads} threads); ` +
        `KV cache ${s.blocksFree} blocks × ${s.blockSize} tokens, max model length ${client.maxModelLen}`,
    );
  } catch (e) {
    await server.app.close();
    throw new Error(`could not load ${dir}: ${(e as Error).message}`);
  }
  await stopped;
  console.log('dsv2 serve: stopped');
  return 0;
}

/** dsv2 chat --model DIR: read a message, stream the reply, repeat; /reset clears the history, /exit leaves. */
export async function runChat(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags(argv, {
    model: { type: 'string', help: 'model directory or training run folder' },
    system: { type: 'string', help: 'a system prompt' },
    'max-tokens': { type: 'int', help: 'longest reply in tokens (default 256)' },
    temperature: { type: 'number', help: 'sampling temperature (default 0.7; 0: greedy)' },
    'top-p': { type: 'number', help: 'nucleus mass (default 0.95)' },
    'top-k': { type: 'int', help: 'keep the k most likely tokens (default 0: all)' },
    seed: { type: 'int', help: 'random seed (default 0)' },
    ...ENGINE_FLAGS,
  });
  if (positional.length) throw new UsageError(`unexpected argument '${positional[0]}'`);
  if (!flags['model']) throw new UsageError('--model DIR is required');
  const opts = engineOptions(flags);
  const threads = threadsFlag(flags);
  const dir = resolveModelDir(flags['model'] as string);
  const backend = flags['backend'] ? loadBackend(flags['backend'] as string) : defaultBackend();
  if (threads) backend.setThreads?.(threads);
  const model = loadModel(dir, { backend, trainable: false });
  const tok = loadTokenizer(dir);
  const template = loadChatTemplate(dir, tok, model.config.bos_token_id ?? null, model.config.eos_token_id ?? null);
  const engine = new LocalEngine(new Engine(model, { ...opts, tokenizer: tok }));
  const params = {
    temperature: (flags['temperature'] as number | undefined) ?? 0.7,
    topP: (flags['top-p'] as number | undefined) ?? 0.95,
    topK: (flags['top-k'] as number | undefined) ?? 0,
    seed: (flags['seed'] as number | undefined) ?? 0,
  };
  checkedSampling({ ...params, maxTokens: (flags['max-tokens'] as number | undefined) ?? 256 });
  const system = flags['system'] as string | undefined;
  const history: ChatMessage[] = system ? [{ role: 'system', content: system }] : [];
  const tty = process.stdin.isTTY;
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: tty });
  if (tty) console.log(`dsv2 chat: ${dir} (${backend.name}). /reset clears the conversation, /exit or Ctrl-D leaves.`);
  const prompt = (): void => {
    if (!tty) return;
    rl.setPrompt('> ');
    rl.prompt();
  };
  prompt();
  for await (const line of rl) {
    const text = line.trim();
    if (text === '/exit' || text === '/quit') break;
    if (text === '/reset') {
      history.splice(system ? 1 : 0);
      prompt();
      continue;
    }
    if (!text) {
      prompt();
      continue;
    }
    history.push({ role: 'user', content: text });
    const ids = tok.encode(template.render(history));
    const room = engine.maxModelLen - ids.length;
    if (room < 1) {
      console.log(`[the conversation has ${ids.length} tokens, more than this model's ${engine.maxModelLen - 1}: /reset to start over]`);
      history.pop();
      prompt();
      continue;
    }
    let reply = '';
    try {
      const stream = engine.generate({
        prompt: ids,
        params: { ...params, maxTokens: Math.min((flags['max-tokens'] as number | undefined) ?? 256, room) },
      });
      for await (const e of stream) {
        process.stdout.write(e.text);
        reply += e.text;
      }
    } catch (e) {
      if (e instanceof SamplingError) throw new UsageError(e.message);
      throw e;
    }
    process.stdout.write('\n');
    history.push({ role: 'assistant', content: reply });
    prompt();
  }
  rl.close();
  await engine.close();
  return 0;
}
