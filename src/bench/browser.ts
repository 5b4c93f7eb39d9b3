// A real `dsv2` process and headless Chromium, for `dsv2 bench web` and the browser tests: the command's URL read
// off its first lines, and Chromium started the way this machine's closed network needs (no background networking).
import { spawn, type ChildProcess } from 'node:child_process';

/** Chromium: DSV2_CHROMIUM, else Debian's. */
export const CHROMIUM = process.env['DSV2_CHROMIUM'] ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const BIN = decodeURIComponent(new URL('../../../bin/dsv2.js', import.meta.url).pathname);

/** Start `dsv2 ARGS…` and resolve with the process and the URL it prints (matched by `pattern`'s first group). */
export function startDsv2(args: string[], pattern: RegExp, timeoutMs = 60_000): Promise<{ proc: ChildProcess; url: string }> {
  const proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`dsv2 ${args[0]} did not start in ${timeoutMs / 1000} s: ${out}`)), timeoutMs);
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = pattern.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, url: m[1]!.replace(/\/$/, '') + '/' });
      }
    });
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`dsv2 ${args[0]} exited with ${code}: ${out}`));
    });
  });
}
