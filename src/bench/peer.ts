// Training speed against the PyTorch peer (../shared/peers), timed in lockstep: one of our steps, then one of the
// peer's (the order alternates pair by pair), so both halves of every pair run on the same machine state. This
// machine's speed swings by ±20% within seconds; separate runs of the two benchmarks can show anything from 1.3×
// to 2×, while the median of per-pair ratios is stable. The peer runs in its own process
// (scripts/torch-peer-train.py) and answers one step per request.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../backend/backend.js';
import { threadsOf, type BenchRecord } from './kernels.js';
import { median } from './timing.js';
import { trainStepper } from './train.js';

export interface PeerBenchRecord extends BenchRecord {
  preset: string;
  batch: number;
  seq: number;
  pairs: number;
  /** Our median step as tokens/s. */
  tok_s: number;
  /** The peer's median step as tokens/s. */
  peer_tok_s: number;
  /** Median over pairs of (peer step time / our step time): how many times faster we are. */
  ratio: number;
  ratio_q1: number;
  ratio_q3: number;
  peer: string;
}

export interface PeerOptions {
  /** Folder with torch_dsv2.py and configs/ (default: ../shared/peers beside the repository). */
  peerDir?: string;
  /** The Python interpreter (default: /usr/bin/python3 where it exists: Debian's python3-torch lives there). */
  python?: string;
  /** The peer program and its leading arguments; replaces python + script (tests use a stand-in peer). */
  command?: string[];
  pairs?: number;
  batch?: number;
  seq?: number;
}

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));

/** A line-oriented conversation with the peer process: send one request, await its one JSON reply. */
export class PeerProcess {
  private lines: string[] = [];
  private waiting: ((line: string | null) => void) | null = null;
  private buf = '';
  private stderr = '';
  private exited = false;

  constructor(private readonly child: ChildProcessWithoutNullStreams) {
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) !== -1) {
        this.push(this.buf.slice(0, nl));
        this.buf = this.buf.slice(nl + 1);
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => (this.stderr = (this.stderr + d).slice(-4000)));
    child.on('error', (e) => {
      this.stderr += `\n${e.message}`;
      this.end();
    });
    child.on('close', () => this.end());
  }

  private push(line: string): void {
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = null;
      w(line);
    } else this.lines.push(line);
  }

  private end(): void {
    this.exited = true;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = null;
      w(null);
    }
  }

  /** The next reply as an object; a dead peer or a non-JSON line is an error naming the peer's last words. */
  async reply(): Promise<Record<string, unknown>> {
    const line = this.lines.shift() ?? (this.exited ? null : await new Promise<string | null>((r) => (this.waiting = r)));
    if (line === null) {
      const last = this.stderr.trim().split('\n').slice(-3).join(' | ');
      throw new Error(`the PyTorch peer stopped${last ? `: ${last}` : ''}`);
    }
    try {
      return JSON.parse(line) as Record<string, unknown>;
    } catch {
      throw new Error(`the PyTorch peer answered something that is not JSON: ${line.slice(0, 200)}`);
    }
  }

  send(request: string): void {
    if (!this.exited) this.child.stdin.write(`${request}\n`);
  }

  close(): void {
    this.send('quit');
    this.child.stdin.end();
    if (!this.exited) this.child.kill();
  }
}

export function quartile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const i = q * (s.length - 1);
  const lo = Math.floor(i);
  return s[lo]! + (s[Math.min(lo + 1, s.length - 1)]! - s[lo]!) * (i - lo);
}

/**
 * The peer program and its leading arguments: opts.command (a stand-in in tests), else a Python with torch running
 * scripts/<script> over the peer folder (../shared/peers beside the repository) with the preset's config.
 */
export function peerCommand(script: string, presetName: string, opts: Pick<PeerOptions, 'command' | 'peerDir' | 'python'>): string[] {
  if (opts.command) return opts.command;
  const peerDir = opts.peerDir ?? `${REPO}../shared/peers`;
  if (!existsSync(`${peerDir}/torch_dsv2.py`)) throw new Error(`no PyTorch peer at ${peerDir} (torch_dsv2.py not found; set --peer-dir)`);
  if (!existsSync(`${peerDir}/configs/${presetName}.json`)) throw new Error(`the PyTorch peer has no config for preset '${presetName}'`);
  const python = opts.python ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');
  return [python, `${REPO}scripts/${script}`, '--peer-dir', peerDir, '--config', presetName];
}

/** Below this, the peer's BLAS is not an optimised one (Debian's reference libblas runs ~5 GFLOP/s, OpenBLAS 100+). */
const MIN_PEER_BLAS_GFLOPS = 20;

/** The peer's ready line, checked: started, and with a BLAS worth racing. */
export async function checkReady(peer: PeerProcess): Promise<Record<string, unknown>> {
  const ready = await peer.reply();
  if (ready['ready'] !== true) throw new Error(`the PyTorch peer did not start: ${JSON.stringify(ready)}`);
  const g = ready['blas_gflops'];
  if (typeof g === 'number' && g < MIN_PEER_BLAS_GFLOPS)
    throw new Error(
      `the PyTorch peer's matmul runs at ${g.toFixed(1)} GFLOP/s: its BLAS is the reference one, not OpenBLAS ` +
        '(apt-get install libopenblas0-pthread), and a race against it would mean nothing',
    );
  return ready;
}

export async function benchTrainVsPeer(b: Backend, presetName: string, opts: PeerOptions = {}): Promise<PeerBenchRecord> {
  const stepper = trainStepper(b, presetName, opts);
  const threads = threadsOf(b);
  const command = peerCommand('torch-peer-train.py', presetName, opts);
  const args = [...command.slice(1), '--threads', String(threads), '--batch', String(stepper.batch), '--seq', String(stepper.seq)];
  const peer = new PeerProcess(spawn(command[0]!, args, { stdio: ['pipe', 'pipe', 'pipe'] }));
  try {
    const ready = await checkReady(peer);
    stepper.warmUp(); // the peer warmed up before it said ready
    const pairs = Math.max(3, opts.pairs ?? 20);
    const ours: number[] = [];
    const theirs: number[] = [];
    const peerStep = async (): Promise<number> => {
      peer.send('step');
      const r = await peer.reply();
      if (typeof r['s'] !== 'number' || !(r['s'] > 0)) throw new Error(`the PyTorch peer sent a bad step time: ${JSON.stringify(r)}`);
      return r['s'] * 1000;
    };
    const ourStep = (): number => {
      const t = stepper.step();
      return t.forward + t.backward + t.optimizer;
    };
    for (let i = 0; i < pairs; i++) {
      if (i % 2 === 0) {
        ours.push(ourStep());
        theirs.push(await peerStep());
      } else {
        theirs.push(await peerStep());
        ours.push(ourStep());
      }
    }
    const ratios = ours.map((o, i) => theirs[i]! / o);
    const tokens = stepper.batch * stepper.seq;
    const ms = median(ours);
    return {
      bench: 'train-vs-torch',
      preset: presetName,
      backend: b.name,
      threads,
      batch: stepper.batch,
      seq: stepper.seq,
      pairs,
      ms,
      tok_s: tokens / (ms / 1000),
      peer_tok_s: tokens / (median(theirs) / 1000),
      ratio: median(ratios),
      ratio_q1: quartile(ratios, 0.25),
      ratio_q3: quartile(ratios, 0.75),
      peer: `pytorch ${String(ready['torch'] ?? '?')}`,
    };
  } finally {
    peer.close();
  }
}
