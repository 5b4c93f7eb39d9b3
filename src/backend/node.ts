// The Node side of backend loading: registers `native` (the Node-API addon) and a `wasm` loader that reads the
// kernels from dist/wasm/ and runs its threads as worker_threads. Importing this module is what the Node entry
// (src/node.ts), the CLI and the Node-only modules do; the browser-safe entry never imports it.
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { Worker } from 'node:worker_threads';
import type { Backend } from './backend.js';
import { createNativeBackend, nativeLoadError } from './native/index.js';
import { registerBackend } from './registry.js';
import { createWasmBackend, detectVariant, hasWasmSimd, wasmFileName } from './wasm/index.js';

let native: Backend | null | undefined;
registerBackend('native', {
  load: () => (native === undefined ? (native = createNativeBackend()) : native),
  whyNot: () => nativeLoadError(),
});

// Node 20's V8 has relaxed SIMD behind a flag (on by default from V8 11.4 / Node 22): turn it on before compiling.
try {
  setFlagsFromString('--experimental-wasm-relaxed-simd');
} catch {
  // an embedder without the flag: the plain-SIMD build is used
}

let wasm: Backend | null | undefined;
let wasmError: string | null = null;

/** Threads for wasm: DSV2_THREADS, else every core. */
function wasmThreads(): number {
  const env = Number(process.env['DSV2_THREADS']);
  return Number.isInteger(env) && env > 0 ? env : availableParallelism();
}

function loadWasm(): Backend | null {
  if (wasm !== undefined) return wasm;
  if (!hasWasmSimd()) {
    wasmError = 'this JavaScript engine lacks WebAssembly SIMD';
    return (wasm = null);
  }
  const variant = detectVariant();
  const file = new URL(`../../wasm/${wasmFileName(variant)}`, import.meta.url);
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = new Uint8Array(readFileSync(file));
  } catch {
    wasmError = `the kernels are not built (${decodeURIComponent(file.pathname)} is missing; npm run build builds them)`;
    return (wasm = null);
  }
  const module = new WebAssembly.Module(bytes);
  const workerUrl = new URL('./wasm/worker-node.js', import.meta.url);
  return (wasm = createWasmBackend(module, variant, {
    threads: wasmThreads(),
    awaitWorkersMs: 5000, // a synchronous load would otherwise run its first calls on one thread (pool.ts)
    spawnWorker: () => {
      const w = new Worker(workerUrl);
      w.unref(); // a worker waiting for work does not keep the process alive
      return w;
    },
  }));
}

registerBackend('wasm', { load: loadWasm, whyNot: () => wasmError });
