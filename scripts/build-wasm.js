#!/usr/bin/env node
// Builds the wasm backend's kernels (src/backend/wasm/assembly, AssemblyScript) into dist/wasm/: four modules,
// with and without shared memory (threads) and relaxed SIMD (fused multiply-add). Run by `npm run build`.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const root = join(dirname(new URL(import.meta.url).pathname), '..');
const asc = join(dirname(createRequire(import.meta.url).resolve('assemblyscript/package.json')), 'bin', 'asc.js');
const out = join(root, 'dist', 'wasm');
mkdirSync(out, { recursive: true });
const builds = [];
for (const relaxed of [false, true])
  for (const shared of [false, true])
    builds.push({ relaxed, shared, name: `kernels${relaxed ? '-relaxed' : ''}${shared ? '-shared' : ''}.wasm` });
// up to date: every module newer than every kernel source and this script
const src = join(root, 'src/backend/wasm/assembly');
const newest = Math.max(statSync(new URL(import.meta.url)).mtimeMs, ...readdirSync(src).map((f) => statSync(join(src, f)).mtimeMs));
if (builds.every((b) => existsSync(join(out, b.name)) && statSync(join(out, b.name)).mtimeMs > newest)) process.exit(0);
const procs = builds.map((b) => {
  const args = [
    asc,
    join(root, 'src/backend/wasm/assembly/index.ts'),
    '-o',
    join(out, `${b.name}.tmp`),
    '-O3',
    '--noAssert',
    '--runtime',
    'stub',
  ];
  args.push('--importMemory', '--initialMemory', '17', '--maximumMemory', '65536', '--enable', 'simd', '--enable', 'threads');
  if (b.relaxed) args.push('--enable', 'relaxed-simd');
  if (b.shared) args.push('--sharedMemory');
  return { b, r: spawnSync(process.execPath, args, { encoding: 'utf8' }) };
});
let failed = false;
for (const { b, r } of procs) {
  if (r.status !== 0) {
    failed = true;
    process.stderr.write(`build-wasm: ${b.name} failed\n${r.stdout}${r.stderr}\n`);
  } else renameSync(join(out, `${b.name}.tmp`), join(out, b.name));
}
process.exit(failed ? 1 : 0);
