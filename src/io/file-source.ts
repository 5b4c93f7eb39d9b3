// A ByteSource over an open file (Node): positioned reads, so parsers read what they need and no more.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import type { ByteSource } from './bytes.js';

/** Open `path` for reading; throws Node's error (ENOENT, EACCES, …) for the caller to word. */
export function fileSource(path: string): ByteSource & { isFile: boolean; identity: string } {
  let fd: number | null = openSync(path, 'r');
  const st = fstatSync(fd);
  return {
    size: st.size,
    isFile: st.isFile(),
    /** The file's device, inode, size and change times: equal identities are the same, unchanged file. */
    identity: `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`,
    bytes: null,
    read(dst, dstOff, len, pos) {
      if (fd === null) fd = openSync(path, 'r');
      return readSync(fd, dst, dstOff, len, pos);
    },
    close() {
      if (fd !== null) closeSync(fd);
      fd = null;
    },
  };
}
