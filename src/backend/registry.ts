// Backend selection: by API option (`useBackend`, or a `backend` option on tensor factories) and by the
// DSV2_BACKEND environment variable (ts | native | wasm). The first request resolves the default once.
//
// This module is browser-safe: it knows only the `ts` reference and the loaders other modules register. The Node
// entry (src/backend/node.ts) registers `native` (the Node-API addon) and a file-reading `wasm` loader; the browser
// registers `wasm` through `initBackend('wasm')`, which compiles the module asynchronously as browsers require.
import type { Backend } from './backend.js';
import { createTsBackend } from './ts/index.js';
import { browserWasmLoader } from './wasm/browser.js';

export const BACKEND_NAMES = ['ts', 'native', 'wasm'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** How a backend loads: synchronously once its code is ready (null and a reason where it cannot). */
export interface BackendLoader {
  load(): Backend | null;
  /** Why load() returned null (or null before the first attempt). */
  whyNot(): string | null;
  /** Make load() possible where that needs asynchronous work (compiling WebAssembly in a page). */
  init?(): Promise<void>;
}

/** Why a backend with no loader registered does not load: only `native` can be missing (ts and wasm always have one). */
const NO_LOADER = 'the native addon is for Node.js; import deepseek-v2-ts/node (the CLI does)';

const loaders = new Map<BackendName, BackendLoader>([
  ['ts', { load: createTsBackend, whyNot: () => null }],
  ['wasm', browserWasmLoader()], // fetch + WebAssembly.compile; the Node entry replaces it with a file reader
]);
const loaded = new Map<BackendName, Backend>();
const failed = new Set<BackendName>();
let current: Backend | null = null;

function isName(name: string): name is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(name);
}

/** Install how a backend loads (the Node entry does this for native and wasm). A later call replaces an earlier one. */
export function registerBackend(name: BackendName, loader: BackendLoader): void {
  loaders.set(name, loader);
  loaded.delete(name);
  failed.delete(name);
}

function tryLoad(name: BackendName): Backend | null {
  const have = loaded.get(name);
  if (have) return have;
  const b = loaders.get(name)?.load() ?? null;
  if (b) {
    loaded.set(name, b);
    failed.delete(name);
  } else failed.add(name);
  return b;
}

/** Why a backend does not load here (null when it does). */
export function backendUnavailableReason(name: BackendName): string | null {
  if (tryLoad(name)) return null;
  const loader = loaders.get(name);
  return loader ? loader.whyNot() : NO_LOADER;
}

/** Load a backend by name, or throw one clear error saying what exists. */
export function loadBackend(name: string): Backend {
  if (!isName(name)) {
    throw new Error(`unknown backend '${name}' (known: ${BACKEND_NAMES.join(', ')})`);
  }
  const b = tryLoad(name);
  if (!b) {
    throw new Error(
      `backend '${name}' is not available in this build (${backendUnavailableReason(name)}) (available: ${availableBackends().join(', ')})`,
    );
  }
  return b;
}

/**
 * Load a backend, first doing the asynchronous work it needs (compiling WebAssembly, starting its worker threads):
 * what a page calls before using `wasm`. In Node the same backends also load synchronously.
 */
export async function initBackend(name: string): Promise<Backend> {
  if (isName(name) && !loaded.has(name)) {
    await loaders.get(name)?.init?.();
    failed.delete(name);
  }
  return loadBackend(name);
}

/** Names of the backends that load here. */
export function availableBackends(): BackendName[] {
  return BACKEND_NAMES.filter((n) => loaded.has(n) || (!failed.has(n) && tryLoad(n) !== null));
}

/**
 * The default backend: the last one passed to useBackend, else DSV2_BACKEND, else the fastest that loads: native,
 * then wasm, then ts.
 */
export function defaultBackend(): Backend {
  if (current) return current;
  const env = globalThis.process?.env?.['DSV2_BACKEND'];
  if (env) return (current = loadBackend(env));
  if (tryLoad('native')) return (current = loadBackend('native'));
  const fallback = tryLoad('wasm') ? 'wasm' : 'ts';
  // One line, once: say why the fast backend is missing (silent where no native backend can exist).
  const why = loaders.get('native')?.whyNot();
  if (why && globalThis.process?.versions?.node && globalThis.process.env['DSV2_QUIET'] !== '1') {
    globalThis.process.stderr.write(`dsv2: native backend unavailable (${why}); using the ${fallback} backend\n`);
  }
  return (current = loadBackend(fallback));
}

/** Make `name` the default backend for tensors created from now on. */
export function useBackend(name: string): Backend {
  current = loadBackend(name);
  return current;
}
