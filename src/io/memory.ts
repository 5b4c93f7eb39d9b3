// How much memory this machine can give a model, for refusing one that cannot fit before anything is allocated.
import { readFileSync } from 'node:fs';
import { freemem, totalmem } from 'node:os';

/** Bytes the OS can hand out now without swapping (Linux MemAvailable; elsewhere free memory). */
export function availableMemory(): number {
  try {
    const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return freemem();
}

export const gib = (n: number): string => `${(n / 2 ** 30).toFixed(1)} GiB`;

/** Throws one message saying what a model needs and what the machine has, when `bytes` cannot fit. */
export function checkFits(bytes: number, what: string, hint = ''): void {
  const avail = availableMemory();
  if (bytes > avail) {
    throw new Error(
      `${what} needs ${gib(bytes)} of memory; this machine has ${gib(avail)} available (${gib(totalmem())} in all)${hint ? `; ${hint}` : ''}`,
    );
  }
}
