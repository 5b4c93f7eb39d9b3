// JSON in and out for the CLI commands, with one clear error per problem.
import { existsSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../io/atomic.js';
import { UsageError } from './args.js';

export function readJson(path: string, what: string): unknown {
  if (!existsSync(path)) throw new Error(`${what} ${path}: no such file`);
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`${what} ${path}: not valid JSON (${(e as Error).message})`);
  }
}

export function writeJson(path: string, value: unknown): void {
  writeFileAtomic(path, JSON.stringify(value) + '\n');
}

export function required<T>(v: T | undefined, flag: string): T {
  if (v === undefined) throw new UsageError(`--${flag} is required`);
  return v;
}

/** A [B][T] array of integer token ids in [0, vocab), all rows of one length. */
export function tokenMatrix(v: unknown, key: string, vocab: number, where: string, ragged = false): number[][] {
  const bad = (msg: string): never => {
    throw new Error(`${where}: "${key}" ${msg}`);
  };
  if (!Array.isArray(v) || v.length === 0) bad('must be a non-empty [batch][seq] array of token ids');
  const rows = v as unknown[];
  const T = Array.isArray(rows[0]) ? (rows[0] as unknown[]).length : -1;
  rows.forEach((r, b) => {
    if (!Array.isArray(r)) bad(`row ${b} is not an array`);
    if ((!ragged && (r as unknown[]).length !== T) || (r as unknown[]).length === 0)
      bad(`rows must be non-empty and of equal length (row 0 has ${T}, row ${b} has ${(r as unknown[]).length})`);
    (r as unknown[]).forEach((id, t) => {
      if (typeof id !== 'number' || !Number.isInteger(id)) bad(`[${b}][${t}] is not an integer`);
      if (id !== -100 && ((id as number) < 0 || (id as number) >= vocab))
        bad(`[${b}][${t}] = ${id} is outside the vocabulary [0, ${vocab})`);
    });
  });
  return rows as number[][];
}
