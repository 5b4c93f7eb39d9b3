// Where a file parser's bytes come from: an open file (Node, src/io/file-source.ts) or bytes already in memory (a
// page's fetch or File, a test). The parsers read through this and never touch the file system themselves.

export interface ByteSource {
  /** Total bytes. */
  readonly size: number;
  /** Read up to `len` bytes at `pos` into dst[dstOff…]; returns how many were read (0 at the end). */
  read(dst: Uint8Array, dstOff: number, len: number, pos: number): number;
  /** The whole content in memory when the source has it (a view, no copy), else null. */
  readonly bytes: Uint8Array | null;
  close(): void;
}

/** A source over bytes in memory. */
export function memorySource(bytes: Uint8Array): ByteSource {
  return {
    size: bytes.length,
    bytes,
    read(dst, dstOff, len, pos) {
      const n = Math.max(0, Math.min(len, bytes.length - pos));
      dst.set(bytes.subarray(pos, pos + n), dstOff);
      return n;
    },
    close() {},
  };
}

/**
 * Read up to dst.length bytes at `pos` into dst, in pieces of at most 1 GiB (a single read of more is refused by
 * some platforms); returns how many were read (fewer only at the end of the source).
 */
export function readFully(src: ByteSource, dst: Uint8Array, pos: number): number {
  let got = 0;
  while (got < dst.length) {
    const r = src.read(dst, got, Math.min(dst.length - got, 2 ** 30), pos + got);
    if (r <= 0) break;
    got += r;
  }
  return got;
}
