// A model directory as the commands and the server use it: config.json + weights, tokenizer.json, and the chat
// settings of tokenizer_config.json. A training run folder stands for its latest checkpoint.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GgufFile, isGgufFile } from './gguf.js';

export { isGgufFile };
import { tokenizerFromGguf } from './gguf-deepseek2.js';
import { DEEPSEEK_PRETOKENIZERS } from '../tokenizer/pretokenizers.js';
import { ChatTemplate, chatConfig } from '../tokenizer/chat-template.js';
import { Tokenizer, type TokenizerJson } from '../tokenizer/tokenizer.js';

/** The model a path names: a GGUF file, a directory with config.json, or a run folder's checkpoint. */
export function resolveModelDir(path: string): string {
  if (isGgufFile(path)) return path;
  if (existsSync(join(path, 'config.json'))) return path;
  for (const d of ['checkpoint', 'checkpoint.old']) if (existsSync(join(path, d, 'config.json'))) return join(path, d);
  throw new Error(`${path} is neither a model directory (config.json) nor a run folder with a checkpoint`);
}

function readJsonFile(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

export function loadTokenizer(dir: string): Tokenizer {
  if (isGgufFile(dir)) {
    const g = new GgufFile(dir);
    try {
      return tokenizerFromGguf(g, DEEPSEEK_PRETOKENIZERS);
    } finally {
      g.close();
    }
  }
  const path = join(dir, 'tokenizer.json');
  if (!existsSync(path)) throw new Error(`${dir} has no tokenizer.json`);
  try {
    return Tokenizer.fromJSON(readJsonFile(path) as TokenizerJson);
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`);
  }
}

/** The checkpoint's chat template (tokenizer_config.json), or the default one, with its BOS/EOS strings. */
export function loadChatTemplate(dir: string, tok: Tokenizer, bosId: number | null, eosId: number | null): ChatTemplate {
  const name = (id: number | null): string => (id === null ? '' : (tok.specials.find((s) => s.id === id)?.content ?? ''));
  if (isGgufFile(dir)) {
    const g = new GgufFile(dir);
    const tpl = g.str('tokenizer.chat_template');
    g.close();
    return new ChatTemplate(
      chatConfig(tpl === undefined ? undefined : { chat_template: tpl }, { bosToken: name(bosId), eosToken: name(eosId) }, dir),
    );
  }
  const path = join(dir, 'tokenizer_config.json');
  const json = existsSync(path) ? readJsonFile(path) : undefined;
  return new ChatTemplate(chatConfig(json, { bosToken: name(bosId), eosToken: name(eosId) }, path));
}
