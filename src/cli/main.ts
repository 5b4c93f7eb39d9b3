// dsv2: the command-line entry point. Every command reports failures as one line and a non-zero exit code.
import '../backend/node.js'; // registers the native and wasm backends (Node)
import { readFileSync } from 'node:fs';
import { availableBackends, defaultBackend, loadBackend } from '../backend/registry.js';
import { HelpRequest, UsageError } from './args.js';
import { runBench } from './commands/bench.js';
import { runExperts } from './commands/experts.js';
import { runExperimentCommand } from './commands/experiment.js';
import { runConvert, runQuantize } from './commands/gguf.js';
import { runGenerate, runInspect, runLogits, runStep } from './commands/model.js';
import { runChat, runServe } from './commands/serve.js';
import { runStart } from './commands/start.js';
import { runSample, runTrain } from './commands/train.js';
import { runWeb } from './commands/web.js';

interface Command {
  summary: string;
  run: (argv: string[]) => Promise<number> | number;
}

const commands: Record<string, Command> = {
  start: {
    summary:
      'the main job (npm start): train small on the mixed corpus for 7 minutes with a live view, then samples and the experts report',
    run: runStart,
  },
  train: {
    summary: 'train --preset small --data moby-dick --out runs/NAME (--steps N | --tokens N | --minutes M) [--resume] [--key=value …]',
    run: runTrain,
  },
  sample: {
    summary: 'sample --model runs/NAME --prompt "Call me" [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P]',
    run: runSample,
  },
  experts: {
    summary: 'experts --model runs/NAME [--data mix] [--out DIR]: which expert takes which domain, per MoE layer (JSON + HTML report)',
    run: runExperts,
  },
  experiment: {
    summary:
      'experiment attention|ffn|balance|devices [--scale small|micro] [--tokens N] [--seeds 0,1]: an ablation at equal budget, resumable, with its report',
    run: runExperimentCommand,
  },
  serve: {
    summary:
      'serve --model DIR [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--kv-cache-mib M] [--max-num-seqs N]: OpenAI-compatible API',
    run: runServe,
  },
  web: {
    summary:
      'web [--model DIR] [--api URL] [--port 8080] [--export DIR]: the browser app (generate with expert colours, train in a worker)',
    run: runWeb,
  },
  chat: { summary: 'chat --model DIR [--system TEXT] [--temperature T]: an interactive terminal chat that streams tokens', run: runChat },
  inspect: { summary: 'inspect (<model-dir> | --preset NAME): parameter counts and KV-cache sizes as JSON', run: runInspect },
  logits: { summary: 'logits --model DIR --input ids.json --output out.json', run: runLogits },
  generate: {
    summary:
      'generate --model DIR --input ids.json --max-new-tokens N [--greedy | --temperature T] --output out.json (prompts of any lengths)',
    run: runGenerate,
  },
  quantize: {
    summary:
      'quantize --model DIR|FILE.gguf --type q8_0|q4_0|q4_1|q5_0|q5_1|bf16|f16|f32 --out FILE.gguf: llama.cpp deepseek2 GGUF, streamed',
    run: runQuantize,
  },
  convert: {
    summary: 'convert --to hf --model FILE.gguf --out DIR [--dtype bf16|f16|f32]: a GGUF back to a Hugging Face directory',
    run: runConvert,
  },
  step: { summary: 'step --model DIR --batch batch.json --output DIR: one verification training step', run: runStep },
  bench: {
    summary: 'bench [gemm|kernels|train|all] [--backend B] [--threads N] [--preset P] [--json] [--vs-torch]: speed, medians of ≥ 5 runs',
    run: runBench,
  },
  backends: {
    summary: 'list the compute backends available on this machine, the default one and the native kernels’ instruction sets',
    run: () => {
      const available = availableBackends();
      const out: Record<string, unknown> = { available, default: defaultBackend().name };
      if (available.includes('native')) {
        const native = loadBackend('native');
        out['native_isa'] = native.isa?.();
        out['native_isas'] = native.isas?.();
      }
      console.log(JSON.stringify(out));
      return 0;
    },
  },
  version: {
    summary: 'print the package version',
    run: () => {
      const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
      console.log(pkg.version);
      return 0;
    },
  },
};

export function helpText(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length));
  return [
    'dsv2 — DeepSeek-V2 (MLA + DeepSeekMoE) in TypeScript',
    '',
    'Usage: dsv2 <command> [options]',
    '',
    'Commands:',
    ...Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    'Environment: DSV2_BACKEND=ts|native|wasm selects the compute backend; DSV2_THREADS=N sets kernel threads;',
    '             DSV2_DEBUG=1 prints stack traces; DSV2_TRACE=1 makes dsv2 serve print its engine step time;',
    '             DSV2_API_KEY sets dsv2 serve --api-key.',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(helpText());
    return 0;
  }
  if (name === '--version') return commands['version']!.run([]);
  const cmd = commands[name];
  if (!cmd) {
    console.error(`dsv2: unknown command '${name}'. Run 'dsv2 --help' for the list.`);
    return 2;
  }
  try {
    return await cmd.run(rest);
  } catch (e) {
    if (e instanceof HelpRequest) {
      const extra =
        name === 'train' || name === 'start' ? '\n  --<config field>=<value>  any config.json field of the preset, type-checked' : '';
      console.log(`dsv2 ${name}: ${cmd.summary}\n\nOptions:\n${e.options}${extra}`);
      return 0;
    }
    const err = e as Error;
    if (process.env['DSV2_DEBUG']) console.error(err.stack);
    console.error(`dsv2 ${name}: ${err.message}`);
    return e instanceof UsageError ? 2 : 1;
  }
}
