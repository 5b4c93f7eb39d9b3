// A small chat-ready model directory for the server and chat tests: random weights of a tiny DeepSeek-V2 shape
// (large enough that greedy choices are decisive), a byte-level BPE tokenizer trained on a paragraph of
// Moby-Dick, and the tokenizer_config.json a trained checkpoint gets (with the default chat template).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend } from '../src/backend/backend.js';
import { loadBackend } from '../src/backend/registry.js';
import { parseConfig } from '../src/model/config.js';
import { saveModel } from '../src/model/load.js';
import { DeepseekV2ForCausalLM } from '../src/model/model.js';
import { preset } from '../src/model/presets.js';
import { defaultTokenizerConfig } from '../src/tokenizer/chat-template.js';
import { trainBpe } from '../src/tokenizer/train.js';
import { BOS, EOS } from '../src/train/trainer.js';

export const TEXT =
  'Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, and ' +
  'nothing particular to interest me on shore, I thought I would sail about a little and see the watery part of ' +
  'the world. It is a way I have of driving off the spleen and regulating the circulation. Whenever I find myself ' +
  'growing grim about the mouth; whenever it is a damp, drizzly November in my soul; whenever I find myself ' +
  'involuntarily pausing before coffin warehouses, and bringing up the rear of every funeral I meet; then, I ' +
  'account it high time to get to sea as soon as I can. User: Assistant: the whale! the whale! 鯨 🐋 café';

export function makeServeModel(dir: string, opts: { backend?: Backend; maxPositions?: number } = {}): DeepseekV2ForCausalLM {
  mkdirSync(dir, { recursive: true });
  const tok = trainBpe([TEXT], { vocabSize: 320, specials: [BOS, EOS] });
  const config = parseConfig({
    ...preset('tiny'),
    vocab_size: tok.vocabSize,
    max_position_embeddings: opts.maxPositions ?? 512,
    bos_token_id: 0,
    eos_token_id: 1,
  });
  const model = DeepseekV2ForCausalLM.init(config, { seed: 3, std: 0.3, backend: opts.backend ?? loadBackend('ts') });
  saveModel(model, dir);
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tok.toJSON()));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(defaultTokenizerConfig(BOS, EOS)));
  return model;
}
