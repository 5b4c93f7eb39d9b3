// Backend selection: by API option (`useBackend`, or a `backend` option on tensor factories) and by the
// DSV2_BACKEND environment variable (ts | native | wasm). The first request resolves the default once.
import type { Backend } from './backend.js';
import { createNativeBackend, nativeLoadError } from './native/index.js';
import { createTsBackend } from './ts/index.js';

export const BACKEND_NAMES = ['ts', 'native', 'wasm'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

const loaders: Record<BackendName, () => Backend | null> = {
  ts: createTsBackend,
  native: createNativeBackend,
  wasm: () => null, // the AssemblyScript SIMD backend arrives later
};

const loaded = new Map<BackendName, Backend>();
const failed = new Set<BackendName>();
let current: Backend | null = null;

function isName(name: string): name is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(name);
}

/** Load a backend by name, or throw one clear error saying what exists. */
export function loadBackend(name: string): Backend {
  if (!isName(name)) {
    throw new Error(`unknown backend '${name}' (known: ${BACKEND_NAMES.join(', ')})`);
  }
  const have = loaded.get(name);
  if (have) return have;
  const b = loaders[name]();
  if (!b) {
    const why = name === 'native' ? ` (${nativeLoadError()})` : '';
    throw new Error(`backend '${name}' is not available in this build${why} (available: ${availableBackends().join(', ')})`);
  }
  loaded.set(name, b);
  return b;
}

/** Names of the backends that load on this machine. */
export function availableBackends(): BackendName[] {
  return BACKEND_NAMES.filter((n) => {
    if (loaded.has(n)) return true;
    if (failed.has(n)) return false;
    const b = loaders[n]();
    if (b) loaded.set(n, b);
    else failed.add(n);
    return b !== null;
  });
}

/** The default backend: the last one passed to useBackend, else DSV2_BACKEND, else native if it loads, else ts. */
export function defaultBackend(): Backend {
  if (current) return current;
  const env = globalThis.process?.env?.['DSV2_BACKEND'];
  if (env) return (current = loadBackend(env));
  if (availableBackends().includes('native')) return (current = loadBackend('native'));
  // One line, once: say why the fast backend is missing (silent where no native backend can exist).
  const why = nativeLoadError();
  if (why && globalThis.process?.versions?.node && globalThis.process.env['DSV2_QUIET'] !== '1') {
    globalThis.process.stderr.write(`dsv2: native backend unavailable (${why}); using the ts backend\n`);
  }
  return (current = loadBackend('ts'));
}

/** Make `name` the default backend for tensors created from now on. */
export function useBackend(name: string): Backend {
  current = loadBackend(name);
  return current;
}
