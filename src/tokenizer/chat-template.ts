// Chat prompts: a checkpoint's Jinja `chat_template` (tokenizer_config.json, as Hugging Face writes it) rendered
// with @huggingface/jinja, the same template engine transformers.js uses. Checkpoints this project trains get
// DEFAULT_CHAT_TEMPLATE: DeepSeek-V2-Chat's own format ("User: …\n\nAssistant: …<eos>"), so a model trained
// here and the released chat model are prompted the same way.
import { Template } from '@huggingface/jinja';

export const DEFAULT_CHAT_TEMPLATE =
  '{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{{ bos_token }}' +
  "{% for message in messages %}{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n\\n' }}" +
  "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}" +
  "{% elif message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}" +
  "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

export interface ChatMessage {
  role: string;
  content: string;
}

/** What tokenizer_config.json says about chat: the template and the special tokens it refers to. */
export interface ChatConfig {
  template: string;
  bosToken: string;
  eosToken: string;
}

function tokenString(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

/**
 * The chat settings of a parsed tokenizer_config.json (or of none: the default template). `chat_template` may be a
 * string or HF's list of named templates (the one named "default" is used). Throws naming the field when malformed.
 */
export function chatConfig(json: unknown, defaults: { bosToken: string; eosToken: string }, where = 'tokenizer_config.json'): ChatConfig {
  if (json === undefined || json === null) return { template: DEFAULT_CHAT_TEMPLATE, ...defaults };
  if (typeof json !== 'object' || Array.isArray(json)) throw new Error(`${where}: not a JSON object`);
  const j = json as Record<string, unknown>;
  let template: string = DEFAULT_CHAT_TEMPLATE;
  const t = j['chat_template'];
  if (typeof t === 'string') template = t;
  else if (Array.isArray(t)) {
    const named = t.find((x) => x && typeof x === 'object' && (x as { name?: unknown }).name === 'default') as
      { template?: unknown } | undefined;
    if (typeof named?.template !== 'string') throw new Error(`${where}: "chat_template" is a list without a "default" template`);
    template = named.template;
  } else if (t !== undefined && t !== null) throw new Error(`${where}: "chat_template" must be a string`);
  return {
    template,
    bosToken: tokenString(j['bos_token']) ?? defaults.bosToken,
    eosToken: tokenString(j['eos_token']) ?? defaults.eosToken,
  };
}

export class ChatTemplate {
  private readonly compiled: Template;

  constructor(readonly config: ChatConfig) {
    try {
      this.compiled = new Template(config.template);
    } catch (e) {
      throw new Error(`chat_template does not parse: ${(e as Error).message}`);
    }
  }

  /** The prompt text for `messages`, ending with the assistant's turn opened when addGenerationPrompt. */
  render(messages: readonly ChatMessage[], addGenerationPrompt = true): string {
    try {
      return this.compiled.render({
        messages,
        add_generation_prompt: addGenerationPrompt,
        bos_token: this.config.bosToken,
        eos_token: this.config.eosToken,
      });
    } catch (e) {
      throw new Error(`chat_template failed on these messages: ${(e as Error).message}`);
    }
  }
}

/** The tokenizer_config.json written next to the checkpoints this project trains. */
export function defaultTokenizerConfig(bosToken: string, eosToken: string): Record<string, unknown> {
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: bosToken,
    eos_token: eosToken,
    add_bos_token: true,
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
    model_max_length: 1_000_000,
    chat_template: DEFAULT_CHAT_TEMPLATE,
  };
}
