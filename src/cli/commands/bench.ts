// `dsv2 bench [gemm|kernels|train|wasm-vs-native|isa|all] [--backend B] [--threads N] [--json]` (npm run bench).
// With --json: one JSON object per line; otherwise a table. Every figure is the median of ≥ 5 timed runs.
import { benchGemm, benchKernels, type BenchRecord } from '../../bench/kernels.js';
import { benchTrainVsPeer } from '../../bench/peer.js';
import { benchTrain } from '../../bench/train.js';
import { gemmWasmVsNative, trainWasmVsNative } from '../../bench/wasm.js';
import { benchWeb } from '../../bench/web.js';
import { benchIsa } from '../../bench/isa.js';
import { availableBackends } from '../../backend/registry.js';
import { benchDecode, benchDecodeVsPeer } from '../../bench/decode.js';
import type { QuantType } from '../../quant/formats.js';
import { benchServe, benchMlaVsMha } from '../../bench/serve.js';
import { defaultBackend, loadBackend } from '../../backend/registry.js';
import { PRESET_NAMES } from '../../model/presets.js';
import { parseFlags, UsageError } from '../args.js';

const SUITES = ['gemm', 'kernels', 'train', 'decode', 'serve', 'mla-vs-mha', 'wasm-vs-native', 'isa', 'web', 'all'] as const;

function fmt(v: number | undefined, digits = 1): string {
  return v === undefined ? '' : v >= 100 ? v.toFixed(0) : v.toFixed(digits);
}

/** GEMM and train rows (kernel rows, each paired with its copy baseline, go through printKernelTable). */
function printTable(rows: BenchRecord[]): void {
  for (const r of rows) {
    const name = r.bench === 'gemm' ? (r.m! <= 4 ? 'gemv' : 'gemm') : r.bench;
    const shape = r.m !== undefined ? `${r.m}×${r.k}×${r.n}` : (r.shape ?? []).join('×');
    const rate =
      r.bench === 'train'
        ? `${fmt((r as unknown as { tok_s: number }).tok_s)} tok/s`
        : r.gflops !== undefined && r.gbps === undefined
          ? `${fmt(r.gflops)} GFLOP/s`
          : `${fmt(r.gbps)} GB/s${r.gflops !== undefined ? `  ${fmt(r.gflops)} GFLOP/s` : ''}`;
    console.log(`${name.padEnd(24)} ${shape.padEnd(22)} ${r.ms.toFixed(3).padStart(10)} ms  ${rate}`);
    if (r.bench === 'train') {
      const t = r as unknown as { forward_ms: number; backward_ms: number; optimizer_ms: number; batch: number; seq: number };
      console.log(
        `${''.padEnd(24)} batch ${t.batch}×${t.seq}: forward ${fmt(t.forward_ms)} ms, backward ${fmt(t.backward_ms)} ms, AdamW ${fmt(t.optimizer_ms)} ms`,
      );
    }
  }
}

function printKernelTable(rows: BenchRecord[]): void {
  for (let i = 0; i < rows.length; i += 2) {
    const r = rows[i]!;
    const c = rows[i + 1]!;
    const ratio = r.gbps! / c.gbps!;
    const extra = r.gflops !== undefined ? `  ${fmt(r.gflops)} GFLOP/s` : '';
    console.log(
      `${r.bench.padEnd(24)} ${(r.shape ?? []).join('×').padEnd(22)} ${r.ms.toFixed(3).padStart(10)} ms  ${fmt(r.gbps).padStart(6)} GB/s  copy ${fmt(c.gbps).padStart(6)} GB/s  ${(100 * ratio).toFixed(0).padStart(4)}% of copy${extra}`,
    );
  }
}

export async function runBench(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags(argv, {
    backend: { type: 'string', help: 'ts | native (default: the default backend)' },
    threads: { type: 'int', help: 'kernel threads (default: DSV2_THREADS or all cores)' },
    json: { type: 'bool', help: 'one JSON object per line' },
    model: { type: 'string', help: 'web: the model the page generates with (default: a random small)' },
    preset: { type: 'string', help: 'preset for train, decode, serve (small | medium | deepseek-v2-lite …)' },
    dtype: { type: 'string', help: 'decode: weight storage, f32 (default) | q8_0 | q4_0 | q4_1 | q5_0 | q5_1 | bf16 | f16' },
    'random-weights': { type: 'bool', help: 'decode: random weights of the preset’s shapes (what the decode bench always uses)' },
    steps: { type: 'int', help: 'timed training steps (≥ 5, default 10)' },
    batch: { type: 'int', help: 'override the training batch size' },
    seq: { type: 'int', help: 'override the training sequence length' },
    'vs-torch': { type: 'bool', help: 'train, decode: time the PyTorch peer in lockstep with ours and report the median ratio' },
    streams: { type: 'string', help: 'serve: concurrent streams to measure, comma-separated (default 1,4,16,64)' },
    'kv-cache-mib': { type: 'number', help: 'serve, mla-vs-mha: the KV-cache budget in MiB' },
    pairs: { type: 'int', help: '--vs-torch: lockstep step pairs (≥ 3, default 20)' },
    'peer-dir': { type: 'string', help: '--vs-torch: folder with torch_dsv2.py (default ../shared/peers)' },
    python: { type: 'string', help: '--vs-torch: Python with torch (default /usr/bin/python3)' },
  });
  if (positional.length > 1) throw new UsageError(`bench takes one suite name, got: ${positional.join(' ')}`);
  const suite = positional[0] ?? 'all';
  if (!(SUITES as readonly string[]).includes(suite)) throw new UsageError(`unknown bench suite '${suite}' (known: ${SUITES.join(', ')})`);
  const presetName = (flags['preset'] as string | undefined) ?? 'small';
  if (!PRESET_NAMES.includes(presetName)) throw new UsageError(`unknown preset '${presetName}' (known: ${PRESET_NAMES.join(', ')})`);
  const backend = flags['backend'] ? loadBackend(flags['backend'] as string) : defaultBackend();
  if (flags['threads'] !== undefined) {
    const n = flags['threads'] as number;
    if (n < 1 || n > 1024) throw new UsageError(`--threads must be in [1, 1024], got ${n}`);
    if (!backend.setThreads) {
      if (n !== 1) throw new UsageError(`the '${backend.name}' backend runs on one thread`);
    } else backend.setThreads(n);
  }
  const json = flags['json'] === true;
  const emit = (rows: BenchRecord[], kernels = false): void => {
    if (json) for (const r of rows) console.log(JSON.stringify(r));
    else if (kernels) printKernelTable(rows);
    else printTable(rows);
  };
  if (suite === 'web') {
    const native = availableBackends().includes('native') ? loadBackend('native') : null;
    for (const r of await benchWeb(loadBackend('wasm'), native, { model: flags['model'] as string | undefined }))
      console.log(
        json
          ? JSON.stringify(r)
          : `${r.what}: Chromium ${fmt(r.chromium_tok_s)} tok/s (${r.threads} threads), Node wasm ${fmt(r.node_wasm_tok_s)}, ` +
              `Node native ${r.node_native_tok_s === null ? '—' : fmt(r.node_native_tok_s)}; Chromium/Node-wasm ${r.vs_node_wasm.toFixed(2)}×` +
              (r.vs_native === null ? '' : `, Chromium/native ${r.vs_native.toFixed(2)}×`),
      );
    return 0;
  }
  if (suite === 'wasm-vs-native') {
    if (flags['backend'] !== undefined) throw new UsageError('wasm-vs-native runs both backends; --backend does not apply');
    const wasm = loadBackend('wasm');
    const native = loadBackend('native');
    const n = (flags['threads'] as number | undefined) ?? native.threads?.() ?? 1;
    wasm.setThreads?.(n);
    native.setThreads?.(n);
    for (const r of [
      gemmWasmVsNative(wasm, native),
      trainWasmVsNative(wasm, native, presetName, Math.max(3, (flags['steps'] as number | undefined) ?? 7)),
    ])
      console.log(
        json
          ? JSON.stringify(r)
          : `${r.what.padEnd(28)} wasm ${fmt(r.wasm)} ${r.unit}, native ${fmt(r.native)} ${r.unit} (${r.threads} threads, ${r.pairs} interleaved pairs): ` +
              `wasm/native ${r.ratio.toFixed(2)}× (quartiles ${r.ratio_q1.toFixed(2)}–${r.ratio_q3.toFixed(2)})`,
      );
    return 0;
  }
  if (suite === 'isa') {
    if (!backend.isas || backend.isas().length < 2)
      throw new UsageError(
        `the '${backend.name}' backend has one instruction set here (${backend.isa?.() ?? 'its own'}): nothing to compare`,
      );
    for (const r of benchIsa(backend, presetName, Math.max(3, (flags['steps'] as number | undefined) ?? 7)))
      console.log(
        json
          ? JSON.stringify(r)
          : `${r.what.padEnd(28)} ${r.isa} ${fmt(r.value)} ${r.unit}, ${r.baseline} ${fmt(r.baseline_value)} ${r.unit} (${r.threads} threads, ${r.pairs} interleaved pairs): ` +
              `${r.isa}/${r.baseline} ${r.ratio.toFixed(2)}× (quartiles ${r.ratio_q1.toFixed(2)}–${r.ratio_q3.toFixed(2)})`,
      );
    return 0;
  }
  if (!json && flags['vs-torch'] !== true)
    console.log(
      `backend ${backend.name}${backend.isa ? ` (${backend.isa()})` : ''}, ${backend.threads?.() ?? 1} thread(s); medians of ≥ 5 timed runs after warm-up`,
    );
  if (suite === 'gemm' || suite === 'all') emit(benchGemm(backend));
  if (suite === 'kernels' || suite === 'all') emit(benchKernels(backend), true);
  const vsTorch = flags['vs-torch'] === true;
  for (const f of ['pairs', 'peer-dir', 'python'])
    if (flags[f] !== undefined && !vsTorch) throw new UsageError(`--${f} goes with --vs-torch`);
  if (vsTorch && suite !== 'train' && suite !== 'decode')
    throw new UsageError('--vs-torch goes with the train or decode suite: dsv2 bench train --vs-torch');
  if (vsTorch && suite === 'decode') {
    const rec = await benchDecodeVsPeer(backend, presetName, {
      pairs: flags['pairs'] as number | undefined,
      peerDir: flags['peer-dir'] as string | undefined,
      python: flags['python'] as string | undefined,
    });
    if (json) console.log(JSON.stringify(rec));
    else
      console.log(
        `decode vs ${rec.peer} (${rec.preset}, batch 1, 128 tokens after 16, ${rec.threads} threads, ${rec.pairs} lockstep pairs): ` +
          `ours ${fmt(rec.decode_tok_s)} tok/s, PyTorch ${fmt(rec.peer_decode_tok_s)} tok/s; ratio median ${rec.decode_ratio.toFixed(2)}× ` +
          `(quartiles ${rec.decode_ratio_q1.toFixed(2)}–${rec.decode_ratio_q3.toFixed(2)})\n` +
          `prefill 1×256: ours ${fmt(rec.prefill_tok_s)} tok/s, PyTorch ${fmt(rec.peer_prefill_tok_s)} tok/s; ratio median ${rec.prefill_ratio.toFixed(2)}×`,
      );
    return 0;
  }
  if (vsTorch) {
    if ((flags['pairs'] as number | undefined) !== undefined && (flags['pairs'] as number) < 3)
      throw new UsageError('--pairs must be at least 3');
    const rec = await benchTrainVsPeer(backend, presetName, {
      pairs: flags['pairs'] as number | undefined,
      peerDir: flags['peer-dir'] as string | undefined,
      python: flags['python'] as string | undefined,
      batch: flags['batch'] as number | undefined,
      seq: flags['seq'] as number | undefined,
    });
    if (json) console.log(JSON.stringify(rec));
    else
      console.log(
        `train vs ${rec.peer} (${rec.preset}, ${rec.batch}×${rec.seq}, ${rec.threads} threads, ${rec.pairs} lockstep pairs): ` +
          `ours ${fmt(rec.tok_s)} tok/s, PyTorch ${fmt(rec.peer_tok_s)} tok/s; ratio median ${rec.ratio.toFixed(2)}× ` +
          `(quartiles ${rec.ratio_q1.toFixed(2)}–${rec.ratio_q3.toFixed(2)})`,
      );
    return 0;
  }
  const dtype = (flags['dtype'] as string | undefined) ?? 'f32';
  const DTYPES = ['f32', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'bf16', 'f16'];
  if (!DTYPES.includes(dtype)) throw new UsageError(`--dtype must be one of ${DTYPES.join(', ')}, got '${dtype}'`);
  if ((flags['dtype'] !== undefined || flags['random-weights']) && suite !== 'decode')
    throw new UsageError('--dtype and --random-weights go with the decode suite: dsv2 bench decode --preset deepseek-v2-lite --dtype q8_0');
  if (suite === 'decode' || suite === 'all') {
    const r = benchDecode(backend, presetName, { dtype: dtype as QuantType | 'f32' });
    if (json) console.log(JSON.stringify(r));
    else
      console.log(
        `decode (${r.preset}, ${r.dtype}, batch 1, ${r.new_tokens} tokens after ${r.prompt}): ${fmt(r.decode_tok_s)} tok/s (${r.ms.toFixed(2)} ms/token), ` +
          `time to first token ${r.ttft_ms.toFixed(1)} ms; prefill 1×${r.prefill_len}: ${fmt(r.prefill_tok_s)} tok/s\n` +
          `${''.padEnd(24)} ${(r.active_bytes_per_token / 2 ** 20).toFixed(1)} MiB of weights per token at ${r.read_gb_s.toFixed(1)} GB/s measured read ` +
          `bandwidth: ceiling ${fmt((r.read_gb_s * 1e9) / r.active_bytes_per_token)} tok/s, reached ${(100 * r.of_bandwidth_ceiling).toFixed(0)}%; ` +
          `weights ${(r.weight_bytes / 2 ** 30).toFixed(2)} GiB, peak RSS ${(r.peak_rss_bytes / 2 ** 30).toFixed(2)} GiB`,
      );
  }
  if (suite === 'serve') {
    const streams = ((flags['streams'] as string | undefined) ?? '1,4,16,64').split(',').map((v) => Number(v));
    if (!streams.every((v) => Number.isInteger(v) && v >= 1 && v <= 1024))
      throw new UsageError('--streams: a comma-separated list of counts in [1, 1024]');
    for (const r of await benchServe(backend, presetName, { streams, kvCacheMiB: flags['kv-cache-mib'] as number | undefined }))
      console.log(
        json
          ? JSON.stringify(r)
          : `serve (${r.preset}, ${r.streams} streams, ${r.max_tokens} tokens each): ${fmt(r.tok_s)} tok/s aggregate, ` +
              `inter-token p50 ${r.itl_p50_ms.toFixed(1)} ms p99 ${r.itl_p99_ms.toFixed(1)} ms, time to first token p50 ${r.ttft_p50_ms.toFixed(0)} ms` +
              (r.vs_batch1 ? `; ${r.vs_batch1.toFixed(2)}× the 1-stream rate` : ''),
      );
  }
  if (suite === 'mla-vs-mha') {
    for (const r of await benchMlaVsMha(backend, presetName, { kvCacheMiB: flags['kv-cache-mib'] as number | undefined }))
      console.log(
        json
          ? JSON.stringify(r)
          : `${r.attention.padEnd(4)} (${r.preset}): ${r.kv_bytes_per_token} KV bytes/token, ${r.blocks} blocks in ${r.kv_cache_mib} MiB → ` +
              `${r.max_sequences} sequences of ${r.seq_len} tokens; peak ${fmt(r.peak_tok_s)} tok/s at ${r.peak_streams} streams`,
      );
  }
  if (suite === 'train' || suite === 'all') {
    const rec = benchTrain(backend, presetName, {
      steps: flags['steps'] as number | undefined,
      batch: flags['batch'] as number | undefined,
      seq: flags['seq'] as number | undefined,
    });
    emit([rec]);
  }
  return 0;
}
