// Streaming text for the engine's token events: incremental detokenisation that never splits a UTF-8 character
// (the bytes of a character split over tokens wait for its last byte), and stop strings caught even when they are
// split over tokens (text that could be the start of a stop string is held back until it is known not to be).

/** The few tokenizer calls the engine needs (src/tokenizer/tokenizer.ts implements them). */
export interface TextCodec {
  tokenBytes(id: number, opts?: { skipSpecial?: boolean }): Uint8Array;
}

export class IncrementalDetokenizer {
  private readonly decoder = new TextDecoder('utf-8', { fatal: false });

  constructor(
    private readonly codec: TextCodec,
    private readonly skipSpecial = true,
  ) {}

  /** The text the token completes (may be empty while a character is still incomplete). */
  push(id: number): string {
    return this.decoder.decode(this.codec.tokenBytes(id, { skipSpecial: this.skipSpecial }), { stream: true });
  }

  /** What is left at the end (an incomplete character becomes U+FFFD, as a full decode would). */
  flush(): string {
    return this.decoder.decode();
  }
}

/** Holds back text that might begin a stop string; finds the first stop string in the text. */
export class StopMatcher {
  private text = '';
  private emitted = 0;

  constructor(private readonly stops: readonly string[]) {}

  /** Add text; returns the text safe to emit now, and whether a stop string ended the sequence (text before it emitted). */
  push(delta: string): { emit: string; stopped: boolean } {
    if (!this.stops.length) return { emit: delta, stopped: false };
    this.text += delta;
    // a stop string can only newly occur overlapping the new text
    const longest = Math.max(...this.stops.map((s) => s.length));
    const from = Math.max(0, this.emitted - longest + 1);
    let at = -1;
    for (const s of this.stops) {
      const i = this.text.indexOf(s, from);
      if (i !== -1 && (at === -1 || i < at)) at = i;
    }
    if (at !== -1) {
      const emit = this.text.slice(this.emitted, Math.max(at, this.emitted));
      this.emitted = Math.max(at, this.emitted);
      return { emit, stopped: true };
    }
    // hold back the longest tail that is a prefix of some stop string
    let hold = 0;
    for (const s of this.stops)
      for (let k = Math.min(s.length - 1, this.text.length - this.emitted); k > hold; k--)
        if (this.text.endsWith(s.slice(0, k))) {
          hold = k;
          break;
        }
    const end = this.text.length - hold;
    const emit = this.text.slice(this.emitted, end);
    this.emitted = end;
    return { emit, stopped: false };
  }

  /** The held-back text, at the end of a sequence that did not stop on a string. */
  flush(): string {
    const emit = this.text.slice(this.emitted);
    this.emitted = this.text.length;
    return emit;
  }
}
