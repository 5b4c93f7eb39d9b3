// Serving benchmarks. `serve`: a real server (HTTP on loopback, the engine in its worker thread) on random weights
// of a preset's shapes, driven by a closed-loop load generator: each of C clients streams a completion, then the
// next, and the figures are aggregate tokens/s, inter-token latency percentiles and time to first token.
// `mla-vs-mha`: the paper's serving claim in miniature: the same model with MLA and with MHA under one KV-cache
// budget: how many sequences each cache holds, and the generation throughput each reaches with many requests.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../backend/backend.js';
import { loadCorpus } from '../data/corpus.js';
import { Engine } from '../infer/engine.js';
import { cacheWidth } from '../model/attention.js';
import { parseConfig } from '../model/config.js';
import { saveModel } from '../model/load.js';
import { DeepseekV2ForCausalLM } from '../model/model.js';
import { preset } from '../model/presets.js';
import { defaultTokenizerConfig } from '../tokenizer/chat-template.js';
import { trainBpe } from '../tokenizer/train.js';
import { Rng } from '../tensor/random.js';
import { threadsOf, type BenchRecord } from './kernels.js';
import { quartile } from './peer.js';

export interface ServeBenchRecord extends BenchRecord {
  preset: string;
  streams: number;
  requests: number;
  max_tokens: number;
  tok_s: number;
  itl_p50_ms: number;
  itl_p99_ms: number;
  ttft_p50_ms: number;
  ttft_p99_ms: number;
  /** tok_s ÷ the 1-stream tok_s of the same run (when 1 was measured first). */
  vs_batch1?: number;
}

/** A model directory of the preset's shapes with random weights and a BPE tokenizer of its vocabulary size. */
async function benchModelDir(b: Backend, presetName: string): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), `dsv2-bench-${presetName}-`));
  const config = preset(presetName);
  const corpus = await loadCorpus('moby-dick');
  const tok = trainBpe(
    corpus.docs.slice(0, 40).map((d) => d.text),
    { vocabSize: config.vocab_size, specials: ['<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>'] },
  );
  saveModel(DeepseekV2ForCausalLM.init(config, { seed: 0, std: 0.02, backend: b }), dir);
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tok.toJSON()));
  writeFileSync(
    join(dir, 'tokenizer_config.json'),
    JSON.stringify(defaultTokenizerConfig('<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>')),
  );
  return dir;
}

/** One streamed completion; the arrival time of each token's chunk. */
async function streamOnce(base: string, prompt: number[], maxTokens: number): Promise<{ start: number; times: number[] }> {
  const start = performance.now();
  const r = await fetch(`${base}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'bench', prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true, logprobs: 0 }),
  });
  if (!r.ok || !r.body) throw new Error(`bench serve: the server answered ${r.status}: ${await r.text()}`);
  const times: number[] = [];
  const decoder = new TextDecoder();
  let buf = '';
  for await (const part of r.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(part, { stream: true });
    let at: number;
    while ((at = buf.indexOf('\n\n')) !== -1) {
      const ev = buf.slice(0, at);
      buf = buf.slice(at + 2);
      // every token's chunk carries its logprob (logprobs: 0), so chunks count tokens even when text is held back
      if (ev.startsWith('data: {') && ev.includes('"token_logprobs":[')) times.push(performance.now());
    }
  }
  return { start, times };
}

export async function benchServe(
  b: Backend,
  presetName: string,
  opts: { streams?: number[]; maxTokens?: number; promptLen?: number; requestsPerStream?: number; kvCacheMiB?: number } = {},
): Promise<ServeBenchRecord[]> {
  const streams = opts.streams ?? [1, 4, 16, 64];
  const maxTokens = opts.maxTokens ?? 64;
  const promptLen = opts.promptLen ?? 32;
  const dir = await benchModelDir(b, presetName);
  const config = preset(presetName);
  // the server in its own process (its engine in a worker thread), as a user runs it; this process only loads it
  const maxSeqs = Math.max(...streams);
  const bin = fileURLToPath(new URL('../../../bin/dsv2.js', import.meta.url));
  const args = [bin, 'serve', '--model', dir, '--port', '0', '--served-model-name', 'bench', '--backend', b.name];
  args.push('--threads', String(threadsOf(b)), '--max-num-seqs', String(maxSeqs), '--kv-cache-mib', String(opts.kvCacheMiB ?? 256));
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => (log += d));
  const base = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d) => {
      log += d;
      const m = /listening on (http:\/\/[\d.:]+)/.exec(log);
      if (m && /ready in/.test(log)) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`bench serve: dsv2 serve exited (${code}): ${log.slice(-400)}`)));
  });
  const rng = new Rng(3);
  const prompt = (): number[] => Array.from({ length: promptLen }, () => 2 + rng.int(config.vocab_size - 2));
  const out: ServeBenchRecord[] = [];
  try {
    await streamOnce(base, prompt(), 8); // warm-up
    let batch1: number | undefined;
    for (const c of streams) {
      const perStream = opts.requestsPerStream ?? (c >= 16 ? 2 : 3);
      const itl: number[] = [];
      const ttft: number[] = [];
      let tokens = 0;
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: c }, async () => {
          for (let i = 0; i < perStream; i++) {
            const { start, times } = await streamOnce(base, prompt(), maxTokens);
            tokens += times.length;
            if (times.length) ttft.push(times[0]! - start);
            for (let j = 1; j < times.length; j++) itl.push(times[j]! - times[j - 1]!);
          }
        }),
      );
      const secs = (performance.now() - t0) / 1000;
      const tokS = tokens / secs;
      if (c === 1) batch1 = tokS;
      out.push({
        bench: 'serve',
        preset: presetName,
        backend: b.name,
        threads: threadsOf(b),
        ms: (secs * 1000) / Math.max(1, tokens),
        streams: c,
        requests: c * perStream,
        max_tokens: maxTokens,
        tok_s: tokS,
        itl_p50_ms: quartile(itl, 0.5),
        itl_p99_ms: quartile(itl, 0.99),
        ttft_p50_ms: quartile(ttft, 0.5),
        ttft_p99_ms: quartile(ttft, 0.99),
        ...(batch1 && c !== 1 ? { vs_batch1: tokS / batch1 } : {}),
      });
    }
  } finally {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

export interface MlaVsMhaRecord extends BenchRecord {
  preset: string;
  attention: string;
  kv_bytes_per_token: number;
  kv_cache_mib: number;
  blocks: number;
  seq_len: number;
  /** Sequences of seq_len tokens the cache holds at once. */
  max_sequences: number;
  /** Most sequences the engine ran together during the run. */
  peak_streams: number;
  peak_tok_s: number;
}

/**
 * The same preset with MLA and with MHA (its v_head_dim widened to the q/k head dim, as MHA needs), each given the
 * same KV-cache budget and the same 64 requests (32-token prompts, 96 new tokens): the engine admits what the cache
 * holds, so MHA runs fewer sequences at once.
 */
export async function benchMlaVsMha(
  b: Backend,
  presetName: string,
  opts: { kvCacheMiB?: number; requests?: number } = {},
): Promise<MlaVsMhaRecord[]> {
  const base = preset(presetName);
  const requests = opts.requests ?? 64;
  const [promptLen, newTokens] = [32, 96];
  const seqLen = promptLen + newTokens;
  // a budget that holds every request with MLA: the comparison is what MHA loses under it
  const mlaBytes = 4 * cacheWidth(base) * base.num_hidden_layers;
  const mib = opts.kvCacheMiB ?? Math.ceil((requests * (seqLen + 16) * mlaBytes) / 2 ** 20);
  const out: MlaVsMhaRecord[] = [];
  for (const attention of ['mla', 'mha'] as const) {
    const c =
      attention === 'mla'
        ? base
        : parseConfig({ ...base, attention_type: 'mha', v_head_dim: base.qk_nope_head_dim + base.qk_rope_head_dim });
    const model = DeepseekV2ForCausalLM.init(c, { seed: 0, std: 0.02, backend: b });
    const engine = new Engine(model, { kvCacheMiB: mib, maxNumSeqs: requests, maxBatchedTokens: 1024 });
    const rng = new Rng(5);
    for (let i = 0; i < requests; i++)
      engine.add(
        `r${i}`,
        Array.from({ length: promptLen }, () => rng.int(c.vocab_size)),
        { temperature: 0, maxTokens: newTokens, ignoreEos: true },
      );
    let tokens = 0;
    let peak = 0;
    const t0 = performance.now();
    while (engine.hasWork) {
      tokens += engine.step().filter((e) => e.id >= 0).length;
      peak = Math.max(peak, engine.scheduler.running.length);
    }
    const secs = (performance.now() - t0) / 1000;
    const bytes = 4 * cacheWidth(c) * c.num_hidden_layers;
    const s = engine.stats();
    out.push({
      bench: 'mla-vs-mha',
      backend: b.name,
      threads: threadsOf(b),
      ms: (secs * 1000) / tokens,
      preset: presetName,
      attention,
      kv_bytes_per_token: bytes,
      kv_cache_mib: mib,
      blocks: s.blocksFree,
      seq_len: seqLen,
      max_sequences: Math.floor(s.blocksFree / Math.ceil(seqLen / s.blockSize)),
      peak_streams: peak,
      peak_tok_s: tokens / secs,
    });
  }
  return out;
}
