// The live terminal view of a training run: a small block redrawn in place on a terminal, one summary line every
// few percent of the run otherwise (logs, CI).
import type { RunInfo, StepMetrics } from './trainer.js';

function dur(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const m = Math.floor(s / 60);
  return m ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${s.toFixed(0)}s`;
}

function bar(frac: number, width = 24): string {
  const n = Math.round(Math.max(0, Math.min(1, frac)) * width);
  return '█'.repeat(n) + '░'.repeat(width - n);
}

export class LiveView {
  private drawn = 0;
  private lastVal: number | null = null;
  private lastPrinted = -1;
  private tokS: number[] = [];

  constructor(
    private readonly out: NodeJS.WriteStream = process.stdout,
    private readonly tty = Boolean(process.stdout.isTTY) && process.env['CI'] === undefined,
  ) {}

  lines(m: StepMetrics, info: RunInfo): string[] {
    if (m.val_loss !== undefined) this.lastVal = m.val_loss;
    this.tokS.push(m.tok_s);
    if (this.tokS.length > 20) this.tokS.shift();
    const tokS = [...this.tokS].sort((a, b) => a - b)[this.tokS.length >> 1]!;
    const total = info.totalSteps || m.step;
    const frac = m.step / total;
    const eta = ((total - m.step) * (m.tokens / m.step)) / tokS;
    const val = this.lastVal === null ? '—' : this.lastVal.toFixed(3);
    return [
      `step ${m.step}/${total} ${bar(frac)} ${(100 * frac).toFixed(0).padStart(3)}%  ETA ${dur(eta)}  ${Math.round(tokS).toLocaleString('en-US')} tok/s`,
      `loss ${m.loss.toFixed(3)}  val ${val}  (unigram ${info.unigramLoss.toFixed(2)})  lr ${m.lr.toExponential(1)}  |grad| ${m.grad_norm.toFixed(2)}`,
      `expert load max/mean by layer: ${m.load_max_over_mean.map((v) => v.toFixed(2)).join(' ')}  dropped ${(100 * m.dropped_frac).toFixed(1)}%  ` +
        `L_exp ${m.l_exp.toExponential(1)} L_dev ${m.l_dev.toExponential(1)} L_comm ${m.l_comm.toExponential(1)}`,
    ];
  }

  update(m: StepMetrics, info: RunInfo): void {
    const lines = this.lines(m, info);
    if (this.tty) {
      const up = this.drawn ? `\x1b[${this.drawn}A` : '';
      this.out.write(up + lines.map((l) => `\x1b[2K${l}\n`).join(''));
      this.drawn = lines.length;
      return;
    }
    const total = info.totalSteps || m.step;
    const every = Math.max(1, Math.round(total / 20));
    if (m.step === 1 || m.step % every === 0 || m.val_loss !== undefined || m.step === total) {
      if (m.step === this.lastPrinted) return;
      this.lastPrinted = m.step;
      this.out.write(lines.join(' | ') + '\n');
    }
  }

  /** Print a message above the live block. */
  note(msg: string): void {
    if (this.tty && this.drawn) {
      this.out.write(`\x1b[${this.drawn}A\x1b[2K${msg}\n` + '\n'.repeat(this.drawn));
    } else this.out.write(msg + '\n');
  }
}
