// Inference speed on the engine: batch-1 greedy decode (128 new tokens after a 16-token prompt, as the PyTorch
// peer's `decode` metric), prefill of one 256-token prompt, and time to first token, with random weights of a
// preset's shapes. Batch-1 decode reads every active weight once per token, so it is bound by memory bandwidth:
// the record also gives the machine's read bandwidth measured in the same run and the ceiling it implies
// (bandwidth ÷ active weight bytes per token).
import { pinWeights } from '../model/from-tensors.js';
import { spawn } from 'node:child_process';
import type { Backend } from '../backend/backend.js';
import { Engine } from '../infer/engine.js';
import { DeepseekV2ForCausalLM } from '../model/model.js';
import { preset } from '../model/presets.js';
import { paramCounts } from '../model/weights.js';
import { Rng } from '../tensor/random.js';
import { checkFits } from '../io/memory.js';
import type { QuantType } from '../quant/formats.js';
import { activeBytesPerToken, randomStoredModel, storedModelBytes } from '../quant/random.js';
import { threadsOf, type BenchRecord } from './kernels.js';
import { checkReady, PeerProcess, peerCommand, quartile } from './peer.js';
import { median } from './timing.js';

export interface DecodeBenchRecord extends BenchRecord {
  preset: string;
  prompt: number;
  new_tokens: number;
  decode_tok_s: number;
  prefill_tok_s: number;
  prefill_len: number;
  ttft_ms: number;
  /** How the weights are stored (f32, or a stored type with random codes of the real shapes). */
  dtype: string;
  /** Weight bytes read per decoded token (activated parameters in their storage type). */
  active_bytes_per_token: number;
  /** Bytes of all weights, and the process's peak resident memory in this run. */
  weight_bytes: number;
  peak_rss_bytes: number;
  /** Read bandwidth of this machine, measured in this run (a parallel sum of squares over 256 MiB). */
  read_gb_s: number;
  /** decode_tok_s as a fraction of read_gb_s ÷ active_bytes_per_token. */
  of_bandwidth_ceiling: number;
}

/** Streaming read bandwidth in GB/s: the median of 5 passes of the backend's sum of squares over 256 MiB. */
export function readBandwidth(b: Backend, mib = 256): number {
  const n = (mib * 2 ** 20) / 4;
  const x = b.allocUninit ? b.allocUninit(n) : b.alloc(n);
  b.fill(x, n, 0.5);
  const runs: number[] = [];
  for (let i = 0; i < 6; i++) {
    const t0 = performance.now();
    b.sumsq(x, n);
    if (i > 0) runs.push((n * 4) / ((performance.now() - t0) / 1000) / 1e9);
  }
  return median(runs);
}

/** A model of the preset's shapes with random weights, and a decode/prefill runner on the engine. */
export class DecodeRunner {
  readonly model: DeepseekV2ForCausalLM;
  readonly engine: Engine;
  private readonly rng = new Rng(7);
  private n = 0;

  constructor(
    readonly backend: Backend,
    readonly presetName: string,
    readonly dtype: QuantType | 'f32' = 'f32',
  ) {
    const c = preset(presetName);
    checkFits(storedModelBytes(c, dtype) + 2 ** 30, `${presetName} with ${dtype} weights`, 'try a smaller --dtype (q4_0)');
    this.model = dtype === 'f32' ? DeepseekV2ForCausalLM.init(c, { seed: 0, std: 0.02, backend }) : randomStoredModel(c, dtype, backend);
    pinWeights(this.model); // inference: nothing writes the weights (a copying backend keeps them resident)
    this.engine = new Engine(this.model, { kvCacheMiB: 64, maxBatchedTokens: 512 });
  }

  private prompt(len: number): number[] {
    return Array.from({ length: len }, () => this.rng.int(this.model.config.vocab_size));
  }

  /** Milliseconds of `newTokens` decode steps after a prompt (its prefill and first token timed apart, as ttft). */
  decode(promptLen: number, newTokens: number): { decodeMs: number; ttftMs: number } {
    this.engine.add(`d${this.n++}`, this.prompt(promptLen), { temperature: 0, maxTokens: newTokens + 1, ignoreEos: true });
    const t0 = performance.now();
    this.engine.step();
    const t1 = performance.now();
    while (this.engine.hasWork) this.engine.step();
    return { decodeMs: performance.now() - t1, ttftMs: t1 - t0 };
  }

  /** Milliseconds to prefill one prompt and sample its first token. */
  prefill(len: number): number {
    this.engine.add(`p${this.n++}`, this.prompt(len), { temperature: 0, maxTokens: 1, ignoreEos: true });
    const t0 = performance.now();
    while (this.engine.hasWork) this.engine.step();
    return performance.now() - t0;
  }
}

export function benchDecode(
  b: Backend,
  presetName: string,
  opts: { runs?: number; prompt?: number; newTokens?: number; prefillLen?: number; dtype?: QuantType | 'f32' } = {},
): DecodeBenchRecord {
  // a real-size preset (billions of weights) gets shorter runs: its tokens take 100× longer
  const big = paramCounts(preset(presetName)).total_params > 2e9;
  const prompt = opts.prompt ?? 16;
  const newTokens = opts.newTokens ?? (big ? 32 : 128);
  const prefillLen = opts.prefillLen ?? (big ? 64 : 256);
  const runs = Math.max(3, opts.runs ?? (big ? 3 : 5));
  const dtype = opts.dtype ?? 'f32';
  const r = new DecodeRunner(b, presetName, dtype);
  r.decode(prompt, 8); // warm-up (JIT, first touches)
  r.prefill(prefillLen);
  const dec: number[] = [];
  const ttft: number[] = [];
  const pre: number[] = [];
  const bw: number[] = [];
  for (let i = 0; i < runs; i++) {
    // interleaved with the bandwidth measurement, so both see the same machine
    const d = r.decode(prompt, newTokens);
    dec.push(d.decodeMs);
    ttft.push(d.ttftMs);
    pre.push(r.prefill(prefillLen));
    if (i < 3) bw.push(readBandwidth(b));
  }
  const activeBytes = activeBytesPerToken(r.model.config, dtype);
  const decodeTokS = newTokens / (median(dec) / 1000);
  const readGbS = median(bw);
  return {
    bench: 'decode',
    preset: presetName,
    backend: b.name,
    threads: threadsOf(b),
    ms: median(dec) / newTokens,
    prompt,
    new_tokens: newTokens,
    decode_tok_s: decodeTokS,
    prefill_len: prefillLen,
    prefill_tok_s: prefillLen / (median(pre) / 1000),
    ttft_ms: median(ttft),
    dtype,
    active_bytes_per_token: activeBytes,
    weight_bytes: storedModelBytes(r.model.config, dtype),
    peak_rss_bytes: process.resourceUsage().maxRSS * 1024,
    read_gb_s: readGbS,
    of_bandwidth_ceiling: decodeTokS / ((readGbS * 1e9) / activeBytes),
  };
}

export interface DecodeVsPeerRecord extends BenchRecord {
  preset: string;
  pairs: number;
  decode_tok_s: number;
  peer_decode_tok_s: number;
  /** Median over pairs of (peer time / our time). */
  decode_ratio: number;
  decode_ratio_q1: number;
  decode_ratio_q3: number;
  prefill_tok_s: number;
  peer_prefill_tok_s: number;
  prefill_ratio: number;
  peer: string;
}

/** Batch-1 decode and prefill against the PyTorch peer (scripts/torch-peer-decode.py), in lockstep pairs. */
export async function benchDecodeVsPeer(
  b: Backend,
  presetName: string,
  opts: { pairs?: number; peerDir?: string; python?: string; command?: string[] } = {},
): Promise<DecodeVsPeerRecord> {
  const prompt = 16;
  const newTokens = 128;
  const prefillLen = 256;
  const command = peerCommand('torch-peer-decode.py', presetName, opts);
  const runner = new DecodeRunner(b, presetName);
  const args = [
    ...command.slice(1),
    '--threads',
    String(threadsOf(b)),
    '--prompt',
    String(prompt),
    '--new-tokens',
    String(newTokens),
    '--prefill',
    String(prefillLen),
  ];
  const peer = new PeerProcess(spawn(command[0]!, args, { stdio: ['pipe', 'pipe', 'pipe'] }));
  try {
    const ready = await checkReady(peer);
    runner.decode(prompt, 8);
    runner.prefill(prefillLen);
    const ask = async (what: string): Promise<number> => {
      peer.send(what);
      const r = await peer.reply();
      if (typeof r['s'] !== 'number' || !(r['s'] > 0)) throw new Error(`the PyTorch peer sent a bad time: ${JSON.stringify(r)}`);
      return r['s'] * 1000;
    };
    const pairs = Math.max(3, opts.pairs ?? 10);
    const [od, td, op, tp]: number[][] = [[], [], [], []];
    for (let i = 0; i < pairs; i++) {
      const ours = (): void => {
        od.push(runner.decode(prompt, newTokens).decodeMs);
        op.push(runner.prefill(prefillLen));
      };
      if (i % 2 === 0) ours();
      td.push(await ask('decode'));
      tp.push(await ask('prefill'));
      if (i % 2 === 1) ours();
    }
    const dr = od.map((o, i) => td[i]! / o);
    const pr = op.map((o, i) => tp[i]! / o);
    return {
      bench: 'decode-vs-torch',
      preset: presetName,
      backend: b.name,
      threads: threadsOf(b),
      ms: median(od) / newTokens,
      pairs,
      decode_tok_s: newTokens / (median(od) / 1000),
      peer_decode_tok_s: newTokens / (median(td) / 1000),
      decode_ratio: median(dr),
      decode_ratio_q1: quartile(dr, 0.25),
      decode_ratio_q3: quartile(dr, 0.75),
      prefill_tok_s: prefillLen / (median(op) / 1000),
      peer_prefill_tok_s: prefillLen / (median(tp) / 1000),
      prefill_ratio: median(pr),
      peer: `pytorch ${String(ready['torch'] ?? '?')}`,
    };
  } finally {
    peer.close();
  }
}
