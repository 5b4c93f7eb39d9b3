// GGUF files on disk (Node): open one for reading (GgufFile: the browser-safe GgufReader of ./gguf-format.ts over
// the file), tell whether a path is one, and write one atomically. The container format itself is ./gguf-format.ts.
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { writeStreamAtomic } from './atomic.js';
import { fileSource } from './file-source.js';
import { readFully } from './bytes.js';
import { GgufError, GgufReader, ggufHeader, type GgufHeaderState, type GgufTensorOut, type GgufValue } from './gguf-format.js';

export * from './gguf-format.js';

/** Whether a path names a GGUF file: a regular file named *.gguf, or one that starts with "GGUF". */
export function isGgufFile(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    if (path.endsWith('.gguf')) return true;
    const fd = openSync(path, 'r');
    try {
      const b = new Uint8Array(4);
      return readSync(fd, b, 0, 4, 0) === 4 && String.fromCharCode(...b) === 'GGUF';
    } finally {
      closeSync(fd);
    }
  } catch {
    return false;
  }
}

/**
 * Headers parsed in this process: one command opens a GGUF for its config, its tokenizer, its chat template and its
 * weights, and a large vocabulary takes ~0.25 s a parse. An entry is used only for the same file (device, inode,
 * size, times) whose header bytes are still the ones parsed (a rewrite within the file system's clock tick keeps
 * the times): comparing a few MB is ~100× cheaper than parsing them. The last few files only.
 */
const parsedHeaders = new Map<string, { state: GgufHeaderState; bytes: Uint8Array }>();
const PARSED_KEEP = 4;

/** Headers larger than this are parsed every time (the cache keeps a copy of the bytes). */
const PARSED_MAX_BYTES = 64 * 2 ** 20;

/** The first n bytes of the file (fewer when it is shorter), or null when they cannot be read. */
function headerBytes(src: ReturnType<typeof fileSource>, n: number): Uint8Array | null {
  try {
    const out = new Uint8Array(n);
    return out.subarray(0, readFully(src, out, 0));
  } catch {
    return null;
  }
}

/** A GGUF file on disk: the reader over the open file (memory-mapped where `map` can). */
export class GgufFile extends GgufReader {
  constructor(path: string, opts: { map?: (path: string) => Uint8Array | null } = {}) {
    let src: ReturnType<typeof fileSource>;
    try {
      src = fileSource(path);
    } catch (e) {
      throw new GgufError(`${path}: cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    if (!src.isFile) {
      src.close();
      throw new GgufError(`${path}: not a regular file`);
    }
    const entry = parsedHeaders.get(src.identity);
    const now = entry ? headerBytes(src, entry.bytes.length) : null;
    const same = entry && now && Buffer.compare(now, entry.bytes) === 0 ? entry.state : null;
    super(path, src, opts.map?.(path) ?? null, same);
    if (!same) {
      parsedHeaders.delete(src.identity);
      // read after the parse: a rewrite in place between the two, within one clock tick, is the one case missed
      const bytes = this.dataOffset <= PARSED_MAX_BYTES ? headerBytes(src, this.dataOffset) : null;
      if (bytes && bytes.length === this.dataOffset) {
        parsedHeaders.set(src.identity, { state: this.headerState(), bytes });
        if (parsedHeaders.size > PARSED_KEEP) parsedHeaders.delete(parsedHeaders.keys().next().value!);
      }
    }
  }
}

/**
 * Write a GGUF (version 3, alignment 32): metadata in the given order, then the tensors, each padded to the
 * alignment, streamed into a temporary file renamed over `path` (writeStreamAtomic): a reader never sees a partial file.
 */
export function writeGguf(path: string, metadata: readonly [string, GgufValue][], tensors: readonly GgufTensorOut[]): void {
  const { header, sizes, align } = ggufHeader(path, metadata, tensors);
  writeStreamAtomic(path, (put) => {
    put(header);
    tensors.forEach((t, i) => {
      let n = 0;
      for (const chunk of t.chunks()) {
        put(chunk);
        n += chunk.length;
      }
      if (n !== sizes[i]) throw new GgufError(`${path}: tensor '${t.name}' produced ${n} bytes, its info says ${sizes[i]}`);
      const pad = (align - (n % align)) % align;
      if (pad) put(new Uint8Array(pad));
    });
  });
}
