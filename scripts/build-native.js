#!/usr/bin/env node
// `npm ci` / `npm install` hook: build the optional native backend (src/backend/native/csrc) with node-gyp.
// It never fails the install: without a compiler, on another CPU architecture, or with DSV2_SKIP_NATIVE=1 it
// prints one line and the engine uses the `ts` backend. Nothing is downloaded: npm is set to build against the
// Node headers on this machine (nodedir), and node-gyp comes with npm.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

function notice(why) {
  console.log(`dsv2: native backend not built (${why}); the engine will use the ts backend`);
  process.exit(0);
}

if (process.env.DSV2_SKIP_NATIVE === '1') notice('DSV2_SKIP_NATIVE=1');
if (process.arch !== 'x64') notice(`${process.arch} CPU; the kernels need x86-64 AVX2`);

const candidates = [
  process.env.npm_config_node_gyp,
  join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
].filter(Boolean);
const gyp = candidates.find((p) => existsSync(p));
const [cmd, args] = gyp ? [process.execPath, [gyp, 'rebuild']] : ['node-gyp', ['rebuild']];
const started = Date.now();
const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
if (r.error) notice(`node-gyp did not start: ${r.error.message}`);
if (r.status !== 0) {
  const lines = `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => /error/i.test(l));
  notice(lines.length ? lines[0].trim().slice(0, 200) : `node-gyp exited with ${r.status}`);
}
console.log(`dsv2: native backend built in ${((Date.now() - started) / 1000).toFixed(1)} s (build/Release/dsv2_native.node)`);
