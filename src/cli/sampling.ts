// Sampling flags of the CLI commands (sample, chat, generate): checked up front, before anything is printed or
// loaded, with the error naming the flag rather than the engine's field.
import { SamplingError, samplingParams, type SamplingParams } from '../infer/sampler.js';
import { UsageError } from './args.js';

const FLAG: Record<string, string> = {
  temperature: '--temperature',
  topK: '--top-k',
  topP: '--top-p',
  minP: '--min-p',
  repetitionPenalty: '--repetition-penalty',
  seed: '--seed',
  maxTokens: '--max-tokens',
};

/** The sampling parameters, validated; a bad value is a UsageError naming its flag (maxTokens as `maxTokensFlag`). */
export function checkedSampling(p: Partial<SamplingParams>, maxTokensFlag = '--max-tokens'): SamplingParams {
  try {
    return samplingParams(p);
  } catch (e) {
    if (!(e instanceof SamplingError)) throw e;
    const flag = e.param === 'maxTokens' ? maxTokensFlag : (FLAG[e.param] ?? e.param);
    throw new UsageError(`${flag}: ${e.message.replace(/^\S+ /, '')}`);
  }
}
