// `dsv2 web [--model DIR] [--api URL] [--host 127.0.0.1] [--port 8080] [--export DIR]`: the web app (dist/web, built
// by npm run build) on a local HTTP server (fastify) with the cross-origin isolation headers that let the page's
// wasm kernels run on several threads; the model DIR (a model directory, a run folder or a GGUF) under /model/ for
// the page to fetch; /v1/* proxied to a running `dsv2 serve` at URL; or, with --export, the same files written to a
// folder for any static server.
//
// Only known names are served: the app's own files, found when the server starts, and a model's config.json,
// weights, tokenizer.json and tokenizer_config.json. A request for anything else is a 404, so no path a client
// sends can read outside what was named.
import { cpSync, createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join, relative, resolve } from 'node:path';
import Fastify from 'fastify';
import { isGgufFile, resolveModelDir } from '../../io/model-dir.js';
import { parseFlags, UsageError } from '../args.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.txt': 'text/plain; charset=utf-8',
  '.wasm': 'application/wasm',
};
/** Cross-origin isolation (SharedArrayBuffer, so wasm threads) and no framing or sniffing. */
const HEADERS = {
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-embedder-policy': 'require-corp',
  'cross-origin-resource-policy': 'same-origin',
  'x-content-type-options': 'nosniff',
};

/** The built app: dist/web beside this module's package. */
export function webRoot(): string {
  const dir = decodeURIComponent(new URL('../../../web/', import.meta.url).pathname);
  if (!existsSync(join(dir, 'index.html'))) throw new Error(`the web app is not built (${dir} has no index.html; npm run build builds it)`);
  return dir;
}

function listFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? listFiles(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : [],
  );
}

/** URL path (under /model/) → file, for the model a --model path names. */
export function modelFiles(path: string): Map<string, string> {
  const files = new Map<string, string>();
  if (isGgufFile(path)) {
    files.set('model.gguf', path);
    return files;
  }
  const dir = resolveModelDir(path);
  for (const name of ['config.json', 'model.safetensors', 'model.safetensors.index.json', 'tokenizer.json', 'tokenizer_config.json'])
    if (existsSync(join(dir, name)) && statSync(join(dir, name)).isFile()) files.set(name, join(dir, name));
  const index = files.get('model.safetensors.index.json');
  if (index) {
    let map: unknown;
    try {
      map = (JSON.parse(readFileSync(index, 'utf8')) as { weight_map?: unknown }).weight_map;
    } catch {
      throw new Error(`${index}: not valid JSON`);
    }
    for (const shard of new Set(Object.values((map ?? {}) as Record<string, unknown>))) {
      // plain file names beside the index only (the loaders refuse anything else too)
      const file = typeof shard === 'string' && /^[\w.-]+\.safetensors$/.test(shard) ? join(dir, shard) : null;
      if (file && existsSync(file) && statSync(file).isFile()) files.set(shard as string, file);
    }
  }
  if (!files.has('config.json')) throw new Error(`${dir} has no config.json`);
  return files;
}

export async function runWeb(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags(argv, {
    model: { type: 'string', help: 'a model directory, training run folder or GGUF the page can load (served under /model/)' },
    api: { type: 'string', help: 'URL of a running dsv2 serve: /v1/* is proxied to it (the page’s “dsv2 serve” source)' },
    host: { type: 'string', help: 'address to listen on (default 127.0.0.1)' },
    port: { type: 'int', help: 'port (default 8080; 0: any free port)' },
    export: { type: 'string', help: 'write the app (and the --model files under model/) to this folder instead of serving' },
    'no-isolation': { type: 'bool', help: 'omit the cross-origin isolation headers (the page then runs the kernels on one thread)' },
  });
  if (positional.length) throw new UsageError(`unexpected argument '${positional[0]}'`);
  const root = webRoot();
  let model = new Map<string, string>();
  if (flags['model'] !== undefined) {
    try {
      model = modelFiles(flags['model'] as string);
    } catch (e) {
      throw new UsageError(`--model: ${(e as Error).message}`);
    }
  }
  let api: URL | null = null;
  if (flags['api'] !== undefined) {
    try {
      api = new URL(flags['api'] as string);
    } catch {
      throw new UsageError(`--api must be a URL such as http://127.0.0.1:8000, got '${flags['api']}'`);
    }
    if (api.protocol !== 'http:' && api.protocol !== 'https:') throw new UsageError(`--api must be an http(s) URL, got '${flags['api']}'`);
  }
  if (flags['export'] !== undefined) {
    const out = resolve(flags['export'] as string);
    mkdirSync(out, { recursive: true });
    cpSync(root, out, { recursive: true });
    if (model.size) {
      mkdirSync(join(out, 'model'), { recursive: true });
      for (const [name, file] of model) cpSync(file, join(out, 'model', name));
    }
    console.log(`dsv2 web: wrote the app${model.size ? ' and the model' : ''} to ${out}; serve it with COOP/COEP headers for threads`);
    return 0;
  }
  const port = (flags['port'] as number | undefined) ?? 8080;
  if (!(port >= 0 && port <= 65535)) throw new UsageError(`--port must be in [0, 65535], got ${port}`);

  // the app's files, fixed at start: URL path → file
  const app = new Map(listFiles(root).map((f) => [relative(root, f).split('\\').join('/'), f]));
  const headers: Record<string, string> = flags['no-isolation'] ? { 'x-content-type-options': 'nosniff' } : HEADERS;
  const server = Fastify({ logger: false, forceCloseConnections: true });
  const sendFile = (reply: import('fastify').FastifyReply, file: string): unknown =>
    reply
      .headers({ ...headers, 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-cache' })
      .send(createReadStream(file));
  server.get('/', (_req, reply) => sendFile(reply, app.get('index.html')!));
  server.get('/model/:name', (req, reply) => {
    const file = model.get((req.params as { name: string }).name);
    if (!file) return reply.code(404).headers(headers).send({ error: 'no such model file' });
    return sendFile(reply, file);
  });
  server.get('/api/info', (_req, reply) => reply.headers(headers).send({ model: [...model.keys()], api: api !== null }));
  if (api) {
    const target = api;
    server.all('/v1/*', async (req, reply) => {
      // only a path under /v1/ of the --api host: a request target in absolute form (`GET http://other/v1/x`) or
      // with dot segments (`/v1/%2e%2e/x`) must not make this server fetch anything else
      const raw = req.url.startsWith('/') ? req.url : null;
      const url = raw === null ? null : new URL(raw, target);
      if (!url || url.origin !== target.origin || !url.pathname.startsWith('/v1/'))
        return reply.code(400).headers(headers).send({ error: 'the proxy forwards paths under /v1/ only' });
      const fwd: Record<string, string> = { 'content-type': 'application/json' };
      if (req.headers.authorization) fwd['authorization'] = req.headers.authorization;
      // a page that goes away (a closed tab, Stop) ends the request to dsv2 serve too, which cancels the generation
      const gone = new AbortController();
      reply.raw.on('close', () => {
        if (!reply.raw.writableFinished) gone.abort();
      });
      let r: Response;
      try {
        r = await fetch(url, {
          method: req.method,
          headers: fwd,
          signal: gone.signal,
          ...(req.method === 'GET' || req.method === 'HEAD' ? {} : { body: JSON.stringify(req.body ?? {}) }),
        });
      } catch (e) {
        return reply
          .code(502)
          .headers(headers)
          .send({ error: `dsv2 serve at ${target.origin} did not answer (${(e as Error).message})` });
      }
      reply.code(r.status).headers({ ...headers, 'content-type': r.headers.get('content-type') ?? 'application/json' });
      if (!r.body) return reply.send('');
      const { Readable } = await import('node:stream');
      return reply.send(Readable.fromWeb(r.body as import('node:stream/web').ReadableStream));
    });
  }
  server.setNotFoundHandler((req, reply) => {
    let path = '';
    try {
      path = decodeURIComponent(req.url.split('?')[0]!.replace(/^\/+/, ''));
    } catch {
      return reply.code(400).headers(headers).send({ error: 'malformed URL' });
    }
    const file = app.get(path);
    if ((req.method === 'GET' || req.method === 'HEAD') && file) return sendFile(reply, file);
    return reply.code(404).headers(headers).send({ error: 'not found' });
  });
  const host = (flags['host'] as string | undefined) ?? '127.0.0.1';
  const url = await server.listen({ host, port });
  console.log(
    `dsv2 web: open ${url}/ (the app from ${root}` +
      `${model.size ? `; model ${flags['model']} under /model/` : ''}${api ? `; /v1/* → ${api.origin}` : ''})`,
  );
  await new Promise<void>((done) => {
    const stop = (): void => void server.close().then(done, done);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  console.log('dsv2 web: stopped');
  return 0;
}
