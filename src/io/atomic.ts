// Atomic file writes: write a temp file beside the target, fsync it, rename over the target, fsync the directory.
// A crash leaves either the old file or the new one, never a torn one.
import { closeSync, existsSync, fsyncSync, lstatSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';

/**
 * Write a file of any size atomically: `produce` writes its bytes through `put`, in order (a model streamed
 * tensor by tensor never sits in memory whole). A throw from `produce` removes the temp file and leaves the target.
 */
export function writeStreamAtomic(path: string, produce: (put: (bytes: Uint8Array) => void) => void): void {
  // the rename would replace a device or FIFO (or fail on a folder) with a regular file: refuse instead
  if (existsSync(path) && !lstatSync(path).isFile()) throw new Error(`${path} exists and is not a regular file; refusing to replace it`);
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  const fd = openSync(tmp, 'w');
  try {
    produce((c) => {
      for (let off = 0; off < c.length;) off += writeSync(fd, c, off, c.length - off);
    });
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  try {
    const dfd = openSync(dirname(path), 'r');
    fsyncSync(dfd);
    closeSync(dfd);
  } catch {
    // some filesystems do not allow fsync on a directory; the rename is still atomic
  }
}

export function writeFileAtomic(path: string, chunks: readonly Uint8Array[] | Uint8Array | string): void {
  const list = typeof chunks === 'string' ? [Buffer.from(chunks, 'utf8')] : chunks instanceof Uint8Array ? [chunks] : chunks;
  writeStreamAtomic(path, (put) => list.forEach(put));
}
