// Training checkpoints: an HF model directory (config.json, model.safetensors, tokenizer.json) plus the optimizer
// moments (optimizer.safetensors) and the trainer's own state (trainer_state.json: step, data position, RNG).
// The whole directory is replaced atomically: it is written beside the old one, then renamed into place, so an
// interrupted write never leaves a half checkpoint behind. A checkpoint is complete when its trainer_state.json
// exists (written last, atomically). The swap keeps at least one complete checkpoint on disk at every instant,
// whatever sequence of kills interrupts it and the runs that resume after it (writeCheckpoint says how).
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { SafetensorsFile, writeSafetensors } from '../io/safetensors.js';
import { loadModel, saveModel } from '../model/load.js';
import type { DeepseekV2ForCausalLM } from '../model/model.js';
import type { AdamW } from '../optim/optimizer.js';
import type { Backend } from '../backend/backend.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { tokenizerConfigText } from '../model/from-files.js';

export const CHECKPOINT_DIR = 'checkpoint';

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The moments of a checkpoint swap, for tests that interrupt it (a throw there is a kill at that instant). */
export type SwapPhase = 'written' | 'moved-old' | 'renamed';

const complete = (dir: string): boolean => existsSync(join(dir, 'trainer_state.json'));

export function writeCheckpoint(
  runDir: string,
  model: DeepseekV2ForCausalLM,
  tokenizer: Tokenizer,
  opt: AdamW,
  trainerState: Record<string, unknown>,
  onPhase?: (phase: SwapPhase) => void,
): string {
  const final = join(runDir, CHECKPOINT_DIR);
  const tmp = join(runDir, `.${CHECKPOINT_DIR}-tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  saveModel(model, tmp);
  writeFileAtomic(join(tmp, 'tokenizer.json'), JSON.stringify(tokenizer.toJSON()));
  // bos/eos and the chat template HF tooling (and `dsv2 serve`) read; ids 0 and 1 are BOS and EOS (trainer.ts)
  writeFileAtomic(join(tmp, 'tokenizer_config.json'), tokenizerConfigText(tokenizer, model.config));
  const names = model.params.names();
  const st = opt.state();
  writeSafetensors(
    join(tmp, 'optimizer.safetensors'),
    names.flatMap((name, i) => [
      { name: `${name}.exp_avg`, shape: [st.m[i]!.length], data: st.m[i]! },
      { name: `${name}.exp_avg_sq`, shape: [st.v[i]!.length], data: st.v[i]! },
    ]),
    'F32',
    { format: 'dsv2-adamw', step: String(st.step), steps: JSON.stringify(st.steps) },
  );
  writeFileAtomic(join(tmp, 'trainer_state.json'), JSON.stringify(trainerState, null, 2) + '\n'); // last: the mark
  fsyncDir(tmp);
  onPhase?.('written');
  const old = join(runDir, `${CHECKPOINT_DIR}.old`);
  if (complete(final)) {
    // `checkpoint` is complete, so `checkpoint.old` is not needed while it is removed, then `checkpoint` moves there
    rmSync(old, { recursive: true, force: true });
    renameSync(final, old);
    fsyncDir(runDir);
    onPhase?.('moved-old');
  } else {
    // an earlier swap was cut: `checkpoint.old` may be the only complete one, so it stays until the new one is in place
    rmSync(final, { recursive: true, force: true });
  }
  renameSync(tmp, final);
  fsyncDir(runDir);
  onPhase?.('renamed');
  rmSync(old, { recursive: true, force: true });
  return final;
}

/** The checkpoint directory of a run: `checkpoint`, or `checkpoint.old` if a swap was interrupted; complete ones only. */
export function findCheckpoint(runDir: string): string | null {
  for (const d of [CHECKPOINT_DIR, `${CHECKPOINT_DIR}.old`]) {
    const p = join(runDir, d);
    if (complete(p)) return p;
  }
  return null;
}

const TEMP_DIR = new RegExp(`^\\.${CHECKPOINT_DIR}-tmp-\\d+$`);
/** writeFileAtomic's temporary files: `.NAME.PID.TIME.tmp`. */
const TEMP_FILE = /^\..+\.\d+\.\d+\.tmp$/;

/** Checkpoint folders of a run that are not complete (cut writes and swaps), by name. */
export function partialCheckpoints(runDir: string): string[] {
  if (!existsSync(runDir)) return [];
  return readdirSync(runDir).filter(
    (f) => (f === CHECKPOINT_DIR || f === `${CHECKPOINT_DIR}.old` || TEMP_DIR.test(f)) && !complete(join(runDir, f)),
  );
}

/**
 * Before a resume: when neither `checkpoint` nor `checkpoint.old` is complete but a temporary folder is (a run cut
 * after writing its first checkpoint, before the rename), that folder becomes `checkpoint`. Returns whether one did.
 */
export function recoverCheckpoint(runDir: string): boolean {
  if (!existsSync(runDir) || findCheckpoint(runDir)) return false;
  const done = readdirSync(runDir).filter((f) => TEMP_DIR.test(f) && complete(join(runDir, f)));
  if (!done.length) return false;
  const stepOf = (f: string): number =>
    Number((JSON.parse(readFileSync(join(runDir, f, 'trainer_state.json'), 'utf8')) as { step?: unknown }).step) || 0;
  const newest = done.sort((a, b) => stepOf(b) - stepOf(a))[0]!;
  rmSync(join(runDir, CHECKPOINT_DIR), { recursive: true, force: true });
  renameSync(join(runDir, newest), join(runDir, CHECKPOINT_DIR));
  fsyncDir(runDir);
  return true;
}

/** Remove what interrupted runs left: temporary checkpoint folders and atomic-write temp files. Returns their names. */
export function cleanStaleTemps(runDir: string): string[] {
  if (!existsSync(runDir)) return [];
  const stale = readdirSync(runDir).filter((f) => TEMP_DIR.test(f) || TEMP_FILE.test(f));
  for (const f of stale) rmSync(join(runDir, f), { recursive: true, force: true });
  return stale;
}

export interface LoadedCheckpoint<S> {
  model: DeepseekV2ForCausalLM;
  state: S;
  tokenizerJson: unknown;
  restoreOptimizer: (opt: AdamW) => void;
}

export function readCheckpoint<S>(dir: string, backend: Backend): LoadedCheckpoint<S> {
  const readJson = (file: string): unknown => {
    const p = join(dir, file);
    if (!existsSync(p)) throw new Error(`checkpoint ${dir} has no ${file}`);
    try {
      return JSON.parse(readFileSync(p, 'utf8'));
    } catch {
      throw new Error(`checkpoint ${dir}: ${file} is corrupt (not valid JSON)`);
    }
  };
  const state = readJson('trainer_state.json') as S;
  const tokenizerJson = readJson('tokenizer.json');
  const model = loadModel(dir, { backend });
  const restoreOptimizer = (opt: AdamW): void => {
    const f = new SafetensorsFile(join(dir, 'optimizer.safetensors'));
    try {
      const names = model.params.names();
      const step = Number(f.metadata?.['step'] ?? NaN);
      if (!Number.isInteger(step)) throw new Error(`checkpoint ${dir}: optimizer.safetensors has no step count`);
      // each tensor's own update count (AdamW skips a tensor without a gradient); older checkpoints have only `step`
      let steps: number[] | undefined;
      const raw = f.metadata?.['steps'];
      if (raw !== undefined) {
        try {
          steps = JSON.parse(raw) as number[];
        } catch {
          steps = undefined;
        }
        if (!Array.isArray(steps) || steps.length !== names.length || !steps.every((x) => Number.isInteger(x) && x >= 0 && x <= step))
          throw new Error(`checkpoint ${dir}: optimizer.safetensors has malformed per-tensor step counts`);
      }
      opt.loadState({ step, steps, m: names.map((n) => f.read(`${n}.exp_avg`)), v: names.map((n) => f.read(`${n}.exp_avg_sq`)) });
    } finally {
      f.close();
    }
  };
  return { model, state, tokenizerJson, restoreOptimizer };
}
