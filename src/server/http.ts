// The OpenAI-compatible HTTP server (fastify): /v1/models, /v1/completions, /v1/chat/completions (streamed as
// server-sent events exactly as OpenAI sends them), /health and /metrics. The engine runs in a worker thread, so
// this thread only parses, tokenizes and writes; a client that disconnects cancels its request and frees its blocks.
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { EngineError, EngineUnavailable, type TokenEvent } from '../infer/engine.js';
import type { EngineClient } from '../infer/runner.js';
import { SamplingError } from '../infer/sampler.js';
import type { ChatTemplate } from '../tokenizer/chat-template.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { Metrics } from './metrics.js';
import {
  ApiError,
  chatLogprobs,
  completionLogprobs,
  expertsField,
  parseChatRequest,
  parseCompletionRequest,
  usage,
  type ParsedRequest,
  type TokenText,
} from './openai.js';

export interface ServerOptions {
  modelName: string;
  tokenizer: Tokenizer;
  template: ChatTemplate;
  /** Prepended to completion prompts given as text (HF's add_bos_token). */
  bosId: number | null;
  apiKey?: string;
  /** Requests in flight (running or queued) beyond which new ones get 429. */
  maxQueue: number;
  /** Largest request body in bytes (413 above). */
  bodyLimit?: number;
  /** Seconds in-flight requests get to finish at shutdown before they are cancelled. */
  shutdownGraceSeconds?: number;
}

const SAMPLING_PARAM: Record<string, string> = {
  temperature: 'temperature',
  topK: 'top_k',
  topP: 'top_p',
  minP: 'min_p',
  repetitionPenalty: 'repetition_penalty',
  presencePenalty: 'presence_penalty',
  frequencyPenalty: 'frequency_penalty',
  maxTokens: 'max_tokens',
  seed: 'seed',
  logprobs: 'logprobs',
  stop: 'stop',
  stopTokenIds: 'stop_token_ids',
};

export class DsvServer {
  readonly app: FastifyInstance;
  readonly metrics = new Metrics();
  private engine: EngineClient | null = null;
  private inFlight = 0;
  private readonly created = Math.floor(Date.now() / 1000);
  private readonly tt: TokenText;

  constructor(readonly opts: ServerOptions) {
    const known = (id: number): boolean => id < opts.tokenizer.vocabSize; // a padded model vocabulary has ids without text
    this.tt = {
      text: (id) => (known(id) ? opts.tokenizer.decode([id]) : ''),
      bytes: (id) => Array.from(opts.tokenizer.tokenBytes(id)),
    };
    this.app = Fastify({ bodyLimit: opts.bodyLimit ?? 4 * 2 ** 20, logger: false, forceCloseConnections: 'idle' });
    this.routes();
  }

  /** The engine, once loaded: until then /health answers 503 and generation requests 503. */
  setEngine(engine: EngineClient): void {
    this.engine = engine;
  }

  async listen(host: string, port: number): Promise<string> {
    return this.app.listen({ host, port });
  }

  /** Stop accepting, let in-flight requests finish (up to the grace period), then cancel the rest. */
  async shutdown(): Promise<void> {
    const closing = this.app.close();
    const deadline = Date.now() + (this.opts.shutdownGraceSeconds ?? 10) * 1000;
    while (this.inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await this.engine?.close();
    await closing;
  }

  private routes(): void {
    const app = this.app;
    app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
      let e: ApiError;
      if (err instanceof ApiError) e = err;
      else if (err instanceof SamplingError) e = new ApiError(400, err.message, SAMPLING_PARAM[err.param] ?? err.param, 'invalid_value');
      else if (err instanceof EngineError) e = new ApiError(400, err.message, err.param, 'invalid_value');
      else if (err instanceof EngineUnavailable) e = new ApiError(503, err.message, null, 'engine_unavailable');
      else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
        e = new ApiError(413, `the request body exceeds ${this.app.initialConfig.bodyLimit} bytes`, null, 'body_too_large');
      } else if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
        e = new ApiError(415, 'the request body must be application/json', null, 'unsupported_media_type');
      else if (err.statusCode === 400 || err instanceof SyntaxError)
        e = new ApiError(400, `the request body is not valid JSON: ${err.message}`, null, 'invalid_json');
      else e = new ApiError(500, `internal error: ${err.message}`);
      this.metrics.request(req.routeOptions.url ?? 'unmatched', e.status); // route patterns only: a bounded label set
      const send = (): void => void reply.code(e.status).send(e.body());
      if (e.status !== 413 || req.raw.complete) return send();
      // a body refused for its size is still arriving: read and drop it (up to 64 MiB), then answer, so that the
      // client, still sending, reads the 413 instead of a connection reset; a bigger upload is cut off
      let seen = 0;
      req.raw.on('data', (c: Buffer) => {
        if ((seen += c.length) > 64 * 2 ** 20) req.raw.destroy();
      });
      req.raw.once('end', send);
      req.raw.resume();
    });
    app.setNotFoundHandler((req, reply) => {
      const e = new ApiError(404, `no route ${req.method} ${req.url.split('?')[0]}`, null, 'not_found');
      void reply.code(404).send(e.body());
    });
    app.addHook('onRequest', async (req) => {
      if (!this.opts.apiKey || !req.url.startsWith('/v1/')) return;
      const auth = req.headers.authorization ?? '';
      const want = Buffer.from(`Bearer ${this.opts.apiKey}`);
      const got = Buffer.from(auth);
      if (got.length !== want.length || !timingSafeEqual(got, want))
        throw new ApiError(
          401,
          auth ? 'Incorrect API key provided.' : 'Missing API key: send "Authorization: Bearer <key>".',
          null,
          'invalid_api_key',
        );
    });

    app.get('/health', async (_req, reply) => {
      if (!this.engine) return reply.code(503).send({ status: 'loading' });
      if (this.engine.failure) return reply.code(503).send({ status: 'failed', error: this.engine.failure });
      return { status: 'ok' };
    });
    app.get('/metrics', async (_req, reply) => {
      void reply.type('text/plain; version=0.0.4; charset=utf-8');
      return this.metrics.render(this.engine?.stats() ?? null);
    });
    const modelCard = (): Record<string, unknown> => ({
      id: this.opts.modelName,
      object: 'model',
      created: this.created,
      owned_by: 'deepseek-v2-ts',
      ...(this.engine ? { max_model_len: this.engine.maxModelLen } : {}),
    });
    app.get('/v1/models', async () => ({ object: 'list', data: [modelCard()] }));
    app.get<{ Params: { id: string } }>('/v1/models/:id', async (req) => {
      if (req.params.id !== this.opts.modelName)
        throw new ApiError(404, `The model '${req.params.id}' does not exist`, 'model', 'model_not_found');
      return modelCard();
    });
    app.post('/v1/completions', (req, reply) => this.generate(req, reply, 'completion'));
    app.post('/v1/chat/completions', (req, reply) => this.generate(req, reply, 'chat'));
  }

  private promptIds(p: ParsedRequest): number[] {
    const tok = this.opts.tokenizer;
    if (p.messages) {
      let text: string;
      try {
        text = this.opts.template.render(p.messages);
      } catch (e) {
        throw new ApiError(400, (e as Error).message, 'messages', 'invalid_value'); // e.g. roles that do not alternate
      }
      return tok.encode(text);
    }
    if (typeof p.prompt === 'string') return tok.encode(p.prompt, this.opts.bosId !== null ? { addBos: true, bosId: this.opts.bosId } : {});
    return p.prompt!;
  }

  private async generate(req: FastifyRequest, reply: FastifyReply, kind: 'chat' | 'completion'): Promise<unknown> {
    const chat = kind === 'chat';
    const endpoint = chat ? '/v1/chat/completions' : '/v1/completions';
    const p = chat ? parseChatRequest(req.body) : parseCompletionRequest(req.body);
    if (p.model !== this.opts.modelName) throw new ApiError(404, `The model '${p.model}' does not exist`, 'model', 'model_not_found');
    const engine = this.engine;
    if (!engine) throw new ApiError(503, 'the model is still loading', null, 'loading');
    if (this.inFlight >= this.opts.maxQueue)
      throw new ApiError(429, `the server is at its limit of ${this.opts.maxQueue} requests in flight; retry later`, null, 'queue_full');
    const prompt = this.promptIds(p);
    const maxLen = engine.maxModelLen;
    const promptParam = chat ? 'messages' : 'prompt';
    if (prompt.length >= maxLen)
      throw new ApiError(
        400,
        `This model's maximum context length is ${maxLen} tokens. However, your prompt has ${prompt.length} tokens.`,
        promptParam,
        'context_length_exceeded',
      );
    const maxTokens = p.maxTokens ?? (chat ? maxLen - prompt.length : Math.min(16, maxLen - prompt.length));
    if (prompt.length + maxTokens > maxLen)
      throw new ApiError(
        400,
        `This model's maximum context length is ${maxLen} tokens. However, you requested ${prompt.length + maxTokens} tokens (${prompt.length} in the prompt, ${maxTokens} for the completion).`,
        chat && (req.body as Record<string, unknown>)['max_completion_tokens'] !== undefined ? 'max_completion_tokens' : 'max_tokens',
        'context_length_exceeded',
      );
    let stream;
    try {
      stream = engine.generate({ prompt, params: { ...p.params, maxTokens }, n: p.n });
    } catch (e) {
      if (e instanceof SamplingError) throw new ApiError(400, e.message, SAMPLING_PARAM[e.param] ?? e.param, 'invalid_value');
      if (e instanceof EngineError) throw new ApiError(400, e.message, e.param === 'prompt' ? promptParam : e.param, 'invalid_value');
      if (e instanceof EngineUnavailable) throw new ApiError(503, e.message, null, 'engine_unavailable');
      throw e;
    }
    this.inFlight++;
    this.metrics.promptTokens += prompt.length;
    const start = performance.now();
    const lastAt = new Map<number, number>();
    const observe = (e: TokenEvent): void => {
      if (e.id < 0) return;
      this.metrics.generationTokens++;
      const now = performance.now();
      const prev = lastAt.get(e.index);
      if (prev === undefined) this.metrics.ttft.observe((now - start) / 1000);
      else this.metrics.itl.observe((now - prev) / 1000);
      lastAt.set(e.index, now);
    };
    let done = false; // the stream ended normally: nothing to cancel
    // a client gone before the end cancels its request: its sequences leave the batch and their blocks are freed
    reply.raw.on('close', () => {
      if (!done) stream.cancel();
    });
    if (reply.raw.destroyed || req.raw.socket?.destroyed) stream.cancel(); // gone before the listener was there
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`;
    const created = Math.floor(Date.now() / 1000);
    const object = chat ? 'chat.completion' : 'text_completion';
    try {
      if (!p.stream) {
        const choices = Array.from({ length: p.n }, () => ({ text: '', events: [] as TokenEvent[], finish: null as string | null }));
        let cached = 0;
        for await (const e of stream) {
          observe(e);
          const c = choices[e.index]!;
          c.text += e.text;
          c.events.push(e);
          if (e.finishReason) c.finish = e.finishReason;
          cached = e.cachedTokens;
        }
        done = true;
        const completion = choices.reduce((s, c) => s + c.events.filter((e) => e.id >= 0).length, 0);
        this.metrics.request(endpoint, 200);
        return {
          id,
          object,
          created,
          model: this.opts.modelName,
          choices: choices.map((c, index) => ({
            index,
            ...(chat ? { message: { role: 'assistant', content: c.text } } : { text: c.text }),
            logprobs: p.logprobs === null ? null : chat ? chatLogprobs(c.events, this.tt) : completionLogprobs(c.events, this.tt, 0),
            finish_reason: c.finish,
            ...(p.params.returnExperts ? { experts: expertsField(c.events) ?? [] } : {}),
          })),
          usage: usage(prompt.length, completion, cached),
        };
      }
      // server-sent events as OpenAI sends them: `data: {chunk}\n\n` lines, no `event:` field, then `data: [DONE]`
      reply.hijack();
      const raw = reply.raw;
      raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
      // a slow reader: wait until the socket drains instead of buffering the stream in memory (the engine's events
      // wait in the request's queue meanwhile, bounded by max_tokens)
      const drained = (): Promise<void> =>
        new Promise((resolve) => {
          const done = (): void => {
            raw.off('drain', done);
            raw.off('close', done);
            resolve();
          };
          raw.on('drain', done);
          raw.on('close', done);
        });
      let pending: Promise<void> | null = null;
      const send = (obj: unknown): void => {
        if (!raw.write(`data: ${JSON.stringify(obj)}\n\n`) && !raw.destroyed) pending = drained();
      };
      const chunk = (choices: unknown[], extra: Record<string, unknown> = {}): void =>
        send({
          id,
          object: chat ? 'chat.completion.chunk' : 'text_completion',
          created,
          model: this.opts.modelName,
          choices,
          ...(p.includeUsage ? { usage: null } : {}),
          ...extra,
        });
      if (chat)
        for (let i = 0; i < p.n; i++) chunk([{ index: i, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
      let completion = 0;
      let cached = 0;
      const offsets = new Array<number>(p.n).fill(0);
      try {
        for await (const e of stream) {
          if (pending) {
            await pending;
            pending = null;
          }
          observe(e);
          if (e.id >= 0) completion++;
          cached = e.cachedTokens;
          if (e.text || e.logprob || e.experts || (!chat && e.finishReason)) {
            const lp =
              p.logprobs === null || e.id < 0
                ? null
                : chat
                  ? chatLogprobs([e], this.tt)
                  : completionLogprobs([e], this.tt, offsets[e.index]!);
            const experts = e.experts ? { experts: [e.experts] } : {};
            chunk([
              chat
                ? { index: e.index, delta: { content: e.text }, logprobs: lp, finish_reason: null, ...experts }
                : { index: e.index, text: e.text, logprobs: lp, finish_reason: e.finishReason, ...experts },
            ]);
            // text_offset counts token texts, as the non-streamed answer does (held-back text included)
            if (e.id >= 0) offsets[e.index]! += this.tt.text(e.id).length;
          }
          if (chat && e.finishReason) chunk([{ index: e.index, delta: {}, logprobs: null, finish_reason: e.finishReason }]);
        }
        done = true;
        if (p.includeUsage)
          send({
            id,
            object: chat ? 'chat.completion.chunk' : 'text_completion',
            created,
            model: this.opts.modelName,
            choices: [],
            usage: usage(prompt.length, completion, cached),
          });
        raw.write('data: [DONE]\n\n');
        this.metrics.request(endpoint, 200);
      } catch (err) {
        send(new ApiError(500, (err as Error).message).body());
        this.metrics.request(endpoint, 500);
      }
      raw.end();
      return reply;
    } finally {
      if (!done) stream.cancel(); // an error on our side: the engine must not go on generating for nobody
      done = true;
      this.inFlight--;
    }
  }
}
