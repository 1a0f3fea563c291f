/**
 * Incremental detokenization for streaming output: feed token ids one at a time and get back only complete
 * UTF-8 characters (a character split over several byte tokens comes out once, when its last byte arrives).
 */
import type { Tokenizer } from "./tokenizer.ts";

export class TokenStreamDecoder {
  private readonly decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

  /** `special`: render control tokens as their text (default false, like llama.cpp's detokenize). */
  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly opts: { special?: boolean } = {},
  ) {}

  /** The text that became complete with this token (possibly ""). */
  push(id: number): string {
    return this.decoder.decode(this.tokenizer.tokenBytes(id, { special: this.opts.special ?? false }), { stream: true });
  }

  /** Ends the stream: bytes of an unfinished character come out as U+FFFD. */
  flush(): string {
    return this.decoder.decode();
  }
}
