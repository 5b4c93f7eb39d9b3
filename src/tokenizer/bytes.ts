// GPT-2's byte ↔ unicode table (used by HF ByteLevel): printable bytes map to themselves, the other 68 to code
// points from U+0100 up, so every byte string is a string of visible characters and BPE never sees raw bytes.

function build(): { toChar: string[]; toByte: Map<string, number> } {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const toChar = new Array<string>(256);
  const toByte = new Map<string, number>();
  bs.forEach((b, i) => {
    const ch = String.fromCodePoint(cs[i]!);
    toChar[b] = ch;
    toByte.set(ch, b);
  });
  return { toChar, toByte };
}

const TABLE = build();
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: false });

/** UTF-8 bytes of `text` as byte-level characters. */
export function toByteLevel(text: string): string {
  const bytes = encoder.encode(text);
  let out = '';
  for (const b of bytes) out += TABLE.toChar[b]!;
  return out;
}

/** Byte-level characters back to text (invalid UTF-8 sequences become U+FFFD, as HF does). */
export function fromByteLevel(s: string): string {
  return decoder.decode(byteLevelBytes(s));
}

/** Byte-level characters back to the raw bytes they stand for (characters outside the table as their UTF-8). */
export function byteLevelBytes(s: string): Uint8Array {
  const bytes: number[] = [];
  for (const ch of s) {
    const b = TABLE.toByte.get(ch);
    if (b !== undefined) bytes.push(b);
    else bytes.push(...encoder.encode(ch));
  }
  return new Uint8Array(bytes);
}

/** The 256 byte-level characters, in byte order. */
export function byteAlphabet(): string[] {
  return [...TABLE.toChar];
}
