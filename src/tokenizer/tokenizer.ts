/**
 * Tokenizer built from GGUF metadata, matching llama.cpp token for token: text -> ids (special-token
 * splitting, SentencePiece or byte-level BPE with the model's pre-tokenizer, BOS/EOS) and ids -> text
 * (pieces, detokenization with llama.cpp's space clean-up).
 */
import { TsmoeError } from "../errors.ts";
import type { MetaEntry } from "../gguf/types.ts";
import { bpeTokenizeWord } from "./bpe.ts";
import { RegexSplitter } from "./pre-split.ts";
import { spmTokenize } from "./spm.ts";
import { byteEncode, utf8Decode, wellFormed } from "./unicode.ts";
import { ATTR, Vocab, type SpecialTokens } from "./vocab.ts";

export interface TokenizeOptions {
  /** add BOS / EOS as the model asks (tokenizer.ggml.add_bos_token / add_eos_token); default true */
  addSpecial?: boolean;
  /** recognise control-token text (e.g. "<|im_start|>") in the input; default false */
  parseSpecial?: boolean;
}

export interface DetokenizeOptions {
  /** render control/unknown tokens as their text; default false (they produce nothing) */
  special?: boolean;
  /** drop a leading BOS and trailing EOS when the model adds them; default false */
  removeSpecial?: boolean;
}

/** A piece of the prompt after special-token splitting: text [start, end) or a token. */
type Fragment = { token: number } | { start: number; end: number };

const WORD_CACHE_SIZE = 50_000;

/** C isspace() in the "C" locale. */
const isCSpace = (c: number) => c === 0x20 || (c >= 0x09 && c <= 0x0d);

export class Tokenizer {
  private readonly splitter: RegexSplitter | null;
  /** BPE results per pre-tokenized word (the same word always gives the same tokens) */
  private readonly wordCache = new Map<string, number[]>();

  private constructor(readonly vocab: Vocab) {
    this.splitter = vocab.pre ? new RegexSplitter(vocab.pre.expressions) : null;
  }

  /** Builds the tokenizer from a model's metadata (tokenizer.ggml.*); throws TsmoeError when unsupported. */
  static fromMetadata(meta: Map<string, MetaEntry>): Tokenizer {
    return new Tokenizer(new Vocab(meta));
  }

  get nVocab(): number {
    return this.vocab.size;
  }
  get special(): Readonly<SpecialTokens> {
    return this.vocab.special;
  }
  get bos(): number | null {
    return this.vocab.special.bos;
  }
  get eos(): number | null {
    return this.vocab.special.eos;
  }
  get eot(): number | null {
    return this.vocab.special.eot;
  }
  get unk(): number | null {
    return this.vocab.special.unk;
  }
  get pad(): number | null {
    return this.vocab.special.pad;
  }
  /** the newline token (llama.cpp's linefeed id), null if the vocabulary has none */
  get nl(): number | null {
    const v = this.vocab;
    if (v.kind === "spm") {
      try {
        return v.byteToken(0x0a);
      } catch {
        return null;
      }
    }
    const ids: number[] = [];
    for (const w of (this.splitter as RegexSplitter).split("\n")) this.tokenizeWord(w, ids);
    return ids[0] ?? null;
  }
  get addBos(): boolean {
    return this.vocab.addBos;
  }
  get addEos(): boolean {
    return this.vocab.addEos;
  }
  /** "llama" (SentencePiece) or "gpt2" (byte-level BPE) */
  get model(): "llama" | "gpt2" {
    return this.vocab.kind === "spm" ? "llama" : "gpt2";
  }
  /** the pre-tokenizer name of a BPE vocabulary */
  get preTokenizer(): string | null {
    return this.vocab.pre?.name ?? null;
  }
  get chatTemplate(): string | undefined {
    return this.vocab.chatTemplate;
  }

  /** True for tokens that end generation (EOS, EOT, "<|im_end|>", ...). */
  isEog(id: number): boolean {
    return this.vocab.eog.has(id);
  }
  isControl(id: number): boolean {
    return (this.attr(id) & ATTR.CONTROL) !== 0;
  }
  /** Attribute bits of a token (see ATTR). */
  attr(id: number): number {
    this.check(id);
    return this.vocab.attrs[id];
  }
  /** The token's text as stored in the vocabulary. */
  tokenText(id: number): string {
    this.check(id);
    return this.vocab.texts[id];
  }

  /** Text -> token ids, exactly like llama_tokenize(text, add_special, parse_special). */
  tokenize(text: string, opts: TokenizeOptions = {}): number[] {
    const addSpecial = opts.addSpecial ?? true;
    const v = this.vocab;
    const raw = wellFormed(text);
    const fragments = raw.length > 0 ? this.splitSpecial(raw, opts.parseSpecial ?? false) : [];
    const out: number[] = [];
    if (addSpecial && v.addBos) out.push(this.required(v.special.bos, "BOS"));
    let prevSpecial = true; // SentencePiece: a text fragment at the start or after a special token gets a space
    for (const f of fragments) {
      if ("token" in f) {
        out.push(f.token);
        prevSpecial = true;
        continue;
      }
      let piece = raw.slice(f.start, f.end);
      if (v.kind === "spm") {
        if (v.addSpacePrefix && prevSpecial) piece = " " + piece;
        spmTokenize(v, piece.replaceAll(" ", "\u2581"), out);
        prevSpecial = false;
      } else {
        if (v.escapeWhitespaces) piece = piece.replaceAll(" ", "\u2581");
        for (const word of (this.splitter as RegexSplitter).split(piece)) this.tokenizeWord(word, out);
      }
    }
    if (addSpecial && v.addEos) out.push(this.required(v.special.eos, "EOS"));
    return out;
  }

  private tokenizeWord(word: string, out: number[]): void {
    let ids = this.wordCache.get(word);
    if (ids === undefined) {
      ids = [];
      bpeTokenizeWord(this.vocab, byteEncode(word), this.vocab.ignoreMerges, ids);
      if (this.wordCache.size >= WORD_CACHE_SIZE) this.wordCache.clear();
      this.wordCache.set(word, ids);
    }
    for (const id of ids) out.push(id);
  }

  /** The bytes of one token (special = true renders control tokens, as llama.cpp's default piece cache). */
  tokenBytes(id: number, opts: { special?: boolean } = {}): Uint8Array {
    this.check(id);
    if (!(opts.special ?? true) && this.vocab.attrs[id] & (ATTR.UNKNOWN | ATTR.CONTROL)) return new Uint8Array(0);
    return this.vocab.pieces[id];
  }

  /** One token as text; a token holding part of a UTF-8 character shows U+FFFD (use TokenStreamDecoder). */
  tokenToPiece(id: number, opts: { special?: boolean } = {}): string {
    return utf8Decode(this.tokenBytes(id, opts));
  }

  /** Token ids -> bytes, exactly like llama_detokenize(remove_special, unparse_special). */
  detokenizeBytes(ids: readonly number[], opts: DetokenizeOptions = {}): Uint8Array {
    const v = this.vocab;
    const special = opts.special ?? false;
    let first = 0;
    let last = ids.length;
    let removeSpace = v.addSpacePrefix;
    if (opts.removeSpecial && v.addBos && last > first && ids[first] === v.special.bos) {
      removeSpace = false;
      first++;
    }
    if (opts.removeSpecial && v.addEos && last > first && ids[last - 1] === v.special.eos) last--;
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = first; i < last; i++) {
      let p = this.tokenBytes(ids[i], { special });
      if (removeSpace && p.length > 0 && p[0] === 0x20) p = p.subarray(1);
      removeSpace = false;
      parts.push(p);
      total += p.length;
    }
    const text = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      text.set(p, o);
      o += p.length;
    }
    return v.cleanSpaces ? cleanUpSpaces(text) : text;
  }

  /** Token ids -> text (invalid UTF-8 becomes U+FFFD). */
  detokenize(ids: readonly number[], opts: DetokenizeOptions = {}): string {
    return utf8Decode(this.detokenizeBytes(ids, opts));
  }

  /** Splits the prompt on special-token text (llama.cpp's tokenizer_st_partition). */
  private splitSpecial(raw: string, parseSpecial: boolean): Fragment[] {
    const v = this.vocab;
    let frags: Fragment[] = [{ start: 0, end: raw.length }];
    for (const id of v.specialCache) {
      const attr = v.attrs[id];
      // control and unknown tokens only count when parsing special tokens; user-defined ones always do
      if (!parseSpecial && attr & (ATTR.CONTROL | ATTR.UNKNOWN)) continue;
      const text = v.texts[id];
      const next: Fragment[] = [];
      for (const f of frags) {
        if ("token" in f) {
          next.push(f);
          continue;
        }
        let { start, end } = f;
        for (;;) {
          const at = raw.indexOf(text, start);
          if (at < 0 || at + text.length > end) {
            if (end > start) next.push({ start, end });
            break;
          }
          let leftEnd = at;
          if (attr & ATTR.LSTRIP) while (leftEnd > start && isCSpace(raw.charCodeAt(leftEnd - 1))) leftEnd--;
          if (leftEnd > start) next.push({ start, end: leftEnd });
          next.push({ token: id });
          start = at + text.length;
          if (attr & ATTR.RSTRIP) while (start < end && isCSpace(raw.charCodeAt(start))) start++;
        }
      }
      frags = next;
    }
    return frags;
  }

  private required(id: number | null, what: string): number {
    if (id === null) throw new TsmoeError(`the model asks for a ${what} token but defines none`);
    return id;
  }

  private check(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocab.size) {
      throw new TsmoeError(`token id ${id} is out of range (vocabulary of ${this.vocab.size} tokens)`);
    }
  }
}

/**
 * llama.cpp's clean_up_tokenization_spaces, on bytes: " ?" " !" " ." " ," lose the space, a lone " ' " loses
 * both spaces, and " 's" " 'm" " 're" " 've" lose the space. Same passes, same quirks.
 */
function cleanUpSpaces(input: Uint8Array): Uint8Array {
  const t = Uint8Array.from(input);
  const SP = 0x20;
  const APOS = 0x27;
  // pass 1: space before ? ! . ,
  let n = t.length;
  let total = n ? 1 : 0;
  for (let i = 1; i < n; i++) {
    const x = t[i];
    if (t[i - 1] === SP && (x === 0x3f || x === 0x21 || x === 0x2e || x === 0x2c)) total--;
    t[total++] = x;
  }
  // pass 2: " ' " -> "'" (the byte after is zeroed and skipped, as in llama.cpp)
  n = total;
  total = n ? 1 : 0;
  for (let i = 1; i < n; i++) {
    const x = t[i];
    if (x === APOS && i + 1 < n && t[i - 1] === SP && t[i + 1] === SP) {
      total--;
      t[++i] = 0;
    }
    t[total++] = x;
  }
  // pass 3: contractions
  n = total;
  total = n ? 1 : 0;
  for (let i = 1; i < n; i++) {
    const x = t[i];
    if (t[i - 1] === SP && x === APOS && i + 1 < n) {
      const x1 = t[i + 1];
      if (x1 === 0x73 || x1 === 0x6d) total--; // 's 'm
      else if (i + 2 < n) {
        const x2 = t[i + 2];
        if ((x1 === 0x72 && x2 === 0x65) || (x1 === 0x76 && x2 === 0x65)) total--; // 're 've
      }
    }
    t[total++] = x;
  }
  return t.slice(0, total);
}
