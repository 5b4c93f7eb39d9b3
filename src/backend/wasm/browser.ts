// Loading the wasm backend in a page (or any runtime with fetch and Web Workers): `initBackend('wasm')` fetches and
// compiles the kernels asynchronously, as browsers require for modules of this size, and starts Web Workers for
// threads when the page is cross-origin isolated (a SharedArrayBuffer is needed to share memory); otherwise it runs
// on the calling thread alone. Where the files live is settable for bundles that move them (configureWasm).
import type { Backend } from '../backend.js';
import type { BackendLoader } from '../registry.js';
import { createWasmBackend, detectVariant, hasWasmSimd, wasmFileName } from './index.js';

export interface WasmConfig {
  /** Folder URL holding kernels*.wasm (default: dist/wasm beside this module). */
  wasmBase?: string | URL;
  /** URL of the worker script, worker-web.js (default: beside this module). */
  workerUrl?: string | URL;
  /** Threads, the calling one included (default: navigator.hardwareConcurrency, at most 8). */
  threads?: number;
}

let config: WasmConfig = {};

/** Set where the wasm files are and how many threads to use; call before initBackend('wasm'). */
export function configureWasm(c: WasmConfig): void {
  config = { ...config, ...c };
}

function defaultThreads(): number {
  const n = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? 1;
  return Math.max(1, Math.min(8, n));
}

/** The loader the browser-safe entry registers for `wasm`. */
export function browserWasmLoader(): BackendLoader {
  let backend: Backend | null = null;
  let why: string | null = null;
  return {
    load: () => backend,
    whyNot: () => why ?? "the wasm kernels are not initialised (await initBackend('wasm') first)",
    init: async () => {
      if (backend) return;
      if (!hasWasmSimd()) {
        why = 'this JavaScript engine lacks WebAssembly SIMD';
        return;
      }
      const variant = detectVariant();
      const base = config.wasmBase ?? new URL('../../../wasm/', import.meta.url);
      const url = new URL(wasmFileName(variant), base);
      let module: WebAssembly.Module;
      try {
        const res = await fetch(url);
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        module = await WebAssembly.compile(await res.arrayBuffer());
      } catch (e) {
        why = `could not load ${url.href}: ${(e as Error).message}`;
        return;
      }
      const workerUrl = config.workerUrl ?? new URL('./worker-web.js', import.meta.url);
      const WorkerCtor = (globalThis as { Worker?: new (u: string | URL, o?: { type: 'module' }) => Worker }).Worker;
      backend = createWasmBackend(module, variant, {
        threads: config.threads ?? defaultThreads(),
        awaitWorkersMs: 5000, // blocks only in a Web Worker (the web app's compute thread); a page returns at once
        ...(WorkerCtor && variant.shared ? { spawnWorker: () => new WorkerCtor(workerUrl, { type: 'module' }) } : {}),
      });
    },
  };
}
