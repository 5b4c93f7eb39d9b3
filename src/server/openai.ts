// The OpenAI API's request bodies for /v1/completions and /v1/chat/completions, checked field by field into an
// engine request, and the response objects and stream chunks built from token events, as OpenAI sends them.
// Extensions beyond OpenAI's fields follow vLLM's names: top_k, min_p, repetition_penalty, ignore_eos,
// stop_token_ids; and `return_experts` (ours) adds each token's routed experts per MoE layer.
import type { RoutedExperts, TokenEvent } from '../infer/engine.js';
import { MAX_STOP_STRINGS, MAX_TOP_LOGPROBS, type SamplingParams } from '../infer/sampler.js';
import type { ChatMessage } from '../tokenizer/chat-template.js';

/** An error answered as OpenAI does: {"error": {"message", "type", "param", "code"}}. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type = status === 401
      ? 'authentication_error'
      : status === 429
        ? 'rate_limit_error'
        : status >= 500
          ? 'server_error'
          : 'invalid_request_error',
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

const bad = (param: string, message: string): ApiError => new ApiError(400, message, param, 'invalid_value');

type Body = Record<string, unknown>;

function optional<T>(b: Body, key: string, check: (v: unknown) => v is T, want: string): T | undefined {
  const v = b[key];
  if (v === undefined || v === null) return undefined;
  if (!check(v)) throw bad(key, `'${key}' must be ${want}, got ${JSON.stringify(v)?.slice(0, 80)}`);
  return v;
}

const isNum =
  (lo: number, hi: number, loOpen = false) =>
  (v: unknown): v is number =>
    typeof v === 'number' && Number.isFinite(v) && (loOpen ? v > lo : v >= lo) && v <= hi;
const isInt =
  (lo: number, hi: number) =>
  (v: unknown): v is number =>
    typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi;
const isBool = (v: unknown): v is boolean => typeof v === 'boolean';

/** What a request asks of the engine, before its prompt is tokenized. */
export interface ParsedRequest {
  model: string;
  /** Chat: the messages; completions: the prompt text or ids. */
  messages?: ChatMessage[];
  prompt?: string | number[];
  params: Partial<SamplingParams>;
  /** max_tokens as given (absent: the endpoint's default). */
  maxTokens: number | undefined;
  n: number;
  stream: boolean;
  includeUsage: boolean;
  /** Chat: logprobs true; completions: logprobs N. null: none. */
  logprobs: number | null;
}

const MAX_N = 16;

function common(b: Body, chat: boolean): Omit<ParsedRequest, 'messages' | 'prompt'> {
  const model = b['model'];
  if (typeof model !== 'string' || !model) throw bad('model', "'model' is required (a string)");
  for (const unsupported of ['tools', 'functions', 'response_format', 'suffix', 'logit_bias', 'tool_choice', 'audio'])
    if (
      b[unsupported] !== undefined &&
      b[unsupported] !== null &&
      !(unsupported === 'logit_bias' && Object.keys(b[unsupported] as object).length === 0)
    )
      throw bad(unsupported, `'${unsupported}' is not supported by this server`);
  if (b['echo'] === true) throw bad('echo', "'echo' is not supported by this server");
  const maxTokens = optional(
    b,
    chat && b['max_completion_tokens'] !== undefined ? 'max_completion_tokens' : 'max_tokens',
    isInt(1, 2 ** 31),
    'an integer ≥ 1',
  );
  const n = optional(b, 'n', isInt(1, MAX_N), `an integer in [1, ${MAX_N}]`) ?? 1;
  const best = optional(b, 'best_of', isInt(1, MAX_N), `an integer in [1, ${MAX_N}]`);
  if (best !== undefined && best !== n) throw bad('best_of', "'best_of' other than n is not supported");
  const stream = optional(b, 'stream', isBool, 'a boolean') ?? false;
  const so = b['stream_options'];
  if (so !== undefined && so !== null && (typeof so !== 'object' || Array.isArray(so)))
    throw bad('stream_options', "'stream_options' must be an object");
  const includeUsage = optional((so ?? {}) as Body, 'include_usage', isBool, 'a boolean') ?? false;
  if (so && !stream) throw bad('stream_options', "'stream_options' is only allowed with stream: true");
  let stop = b['stop'];
  if (typeof stop === 'string') stop = [stop];
  if (
    stop !== undefined &&
    stop !== null &&
    !(Array.isArray(stop) && stop.length <= MAX_STOP_STRINGS && stop.every((s) => typeof s === 'string' && s))
  )
    throw bad('stop', `'stop' must be a non-empty string or a list of up to ${MAX_STOP_STRINGS} of them`);
  let logprobs: number | null = null;
  if (chat) {
    const on = optional(b, 'logprobs', isBool, 'a boolean') ?? false;
    const top = optional(b, 'top_logprobs', isInt(0, MAX_TOP_LOGPROBS), `an integer in [0, ${MAX_TOP_LOGPROBS}]`);
    if (top !== undefined && !on) throw bad('top_logprobs', "'top_logprobs' needs 'logprobs': true");
    logprobs = on ? (top ?? 0) : null;
  } else logprobs = optional(b, 'logprobs', isInt(0, MAX_TOP_LOGPROBS), `an integer in [0, ${MAX_TOP_LOGPROBS}]`) ?? null;
  const stopIds = b['stop_token_ids'];
  if (stopIds !== undefined && stopIds !== null && !(Array.isArray(stopIds) && stopIds.every((t) => Number.isInteger(t) && t >= 0)))
    throw bad('stop_token_ids', "'stop_token_ids' must be a list of token ids");
  const topK = optional(b, 'top_k', isInt(-1, 2 ** 31), 'an integer ≥ -1');
  return {
    model,
    maxTokens,
    n,
    stream,
    includeUsage,
    logprobs,
    params: {
      temperature: optional(b, 'temperature', isNum(0, 2), 'a number in [0, 2]'),
      topP: optional(b, 'top_p', isNum(0, 1, true), 'a number in (0, 1]'),
      topK: topK === -1 ? 0 : topK,
      minP: optional(b, 'min_p', isNum(0, 1), 'a number in [0, 1]'),
      presencePenalty: optional(b, 'presence_penalty', isNum(-2, 2), 'a number in [-2, 2]'),
      frequencyPenalty: optional(b, 'frequency_penalty', isNum(-2, 2), 'a number in [-2, 2]'),
      repetitionPenalty: optional(b, 'repetition_penalty', isNum(0, 100, true), 'a number > 0'),
      seed: optional(b, 'seed', isInt(-(2 ** 53), 2 ** 53), 'an integer'),
      stop: (stop as string[] | undefined) ?? [],
      stopTokenIds: (stopIds as number[] | undefined) ?? [],
      ignoreEos: optional(b, 'ignore_eos', isBool, 'a boolean') ?? false,
      returnExperts: optional(b, 'return_experts', isBool, 'a boolean') ?? false,
      logprobs,
    },
  };
}

function asBody(body: unknown): Body {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw bad('body', 'the request body must be a JSON object');
  return body as Body;
}

export function parseCompletionRequest(body: unknown): ParsedRequest {
  const b = asBody(body);
  const out = common(b, false);
  let prompt = b['prompt'];
  if (Array.isArray(prompt) && prompt.length === 1 && typeof prompt[0] === 'string') prompt = prompt[0];
  if (Array.isArray(prompt) && prompt.length === 1 && Array.isArray(prompt[0])) prompt = prompt[0];
  if (typeof prompt === 'string') return { ...out, prompt };
  if (Array.isArray(prompt) && prompt.length && prompt.every((t) => Number.isInteger(t) && t >= 0))
    return { ...out, prompt: prompt as number[] };
  if (Array.isArray(prompt) && prompt.length > 1)
    throw bad('prompt', "one prompt per request: 'prompt' must be a string or a list of token ids");
  throw bad('prompt', "'prompt' is required: a string or a non-empty list of token ids");
}

export function parseChatRequest(body: unknown): ParsedRequest {
  const b = asBody(body);
  const out = common(b, true);
  const ms = b['messages'];
  if (!Array.isArray(ms) || ms.length === 0) throw bad('messages', "'messages' must be a non-empty list");
  const messages = ms.map((m, i): ChatMessage => {
    if (!m || typeof m !== 'object') throw bad(`messages[${i}]`, `messages[${i}] must be an object`);
    const { role, content } = m as { role?: unknown; content?: unknown };
    if (typeof role !== 'string' || !['system', 'developer', 'user', 'assistant'].includes(role))
      throw bad(`messages[${i}].role`, `messages[${i}].role must be one of system, developer, user, assistant`);
    let text: string;
    if (typeof content === 'string') text = content;
    else if (Array.isArray(content) && content.every((p) => p && typeof p === 'object' && p.type === 'text' && typeof p.text === 'string'))
      text = content.map((p: { text: string }) => p.text).join('');
    else throw bad(`messages[${i}].content`, `messages[${i}].content must be a string or a list of text parts`);
    return { role: role === 'developer' ? 'system' : role, content: text };
  });
  return { ...out, messages };
}

/** The token strings and bytes a logprobs answer reports. */
export interface TokenText {
  text(id: number): string;
  bytes(id: number): number[];
}

export function chatLogprobs(events: readonly TokenEvent[], tt: TokenText): { content: unknown[] } {
  return {
    content: events
      .filter((e) => e.logprob && e.id >= 0)
      .map((e) => ({
        token: tt.text(e.id),
        logprob: e.logprob!.logprob,
        bytes: tt.bytes(e.id),
        top_logprobs: e.logprob!.top.map((t) => ({ token: tt.text(t.id), logprob: t.logprob, bytes: tt.bytes(t.id) })),
      })),
  };
}

export function completionLogprobs(events: readonly TokenEvent[], tt: TokenText, offset0: number): unknown {
  const es = events.filter((e) => e.logprob && e.id >= 0);
  let offset = offset0;
  const textOffset: number[] = [];
  for (const e of es) {
    textOffset.push(offset);
    offset += tt.text(e.id).length;
  }
  return {
    tokens: es.map((e) => tt.text(e.id)),
    token_logprobs: es.map((e) => e.logprob!.logprob),
    top_logprobs: es.map((e) => Object.fromEntries(e.logprob!.top.map((t) => [tt.text(t.id), t.logprob]))),
    text_offset: textOffset,
  };
}

export function expertsField(events: readonly TokenEvent[]): RoutedExperts[][] | undefined {
  const with_ = events.filter((e) => e.experts);
  return with_.length ? with_.map((e) => e.experts!) : undefined;
}

export function usage(prompt: number, completion: number, cached: number): Record<string, unknown> {
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: cached },
  };
}
