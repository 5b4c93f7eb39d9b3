// A model directory as the commands and the server use it: config.json + weights, tokenizer.json, and the chat
// settings of tokenizer_config.json. A training run folder stands for its latest checkpoint.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ChatTemplate, chatConfig } from '../tokenizer/chat-template.js';
import { Tokenizer, type TokenizerJson } from '../tokenizer/tokenizer.js';

/** The model directory a path names: itself (it has config.json) or a run folder's checkpoint. */
export function resolveModelDir(path: string): string {
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
  const path = join(dir, 'tokenizer_config.json');
  const name = (id: number | null): string => (id === null ? '' : (tok.specials.find((s) => s.id === id)?.content ?? ''));
  const json = existsSync(path) ? readJsonFile(path) : undefined;
  return new ChatTemplate(chatConfig(json, { bosToken: name(bosId), eosToken: name(eosId) }, path));
}
