/**
 * Helpers for the tokenizer tests: loading a tokenizer from a GGUF file, llama.cpp's tokenizer test vectors
 * (.inp/.out), copies of a vocabulary file with another `tokenizer.ggml.pre`, and seeded random test texts.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { loadGguf } from "../src/gguf/reader.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";

export async function loadTokenizer(path: string): Promise<Tokenizer> {
  return Tokenizer.fromMetadata((await loadGguf(path, { headerOnly: true })).metadata);
}

export interface VocabCase {
  text: string;
  ids: number[];
}

/** llama.cpp's test-tokenizer-0 format: inputs separated by "\n__ggml_vocab_test__\n", one line of ids per input. */
export function readVocabCases(gguf: string): VocabCase[] {
  const inputs = readFileSync(gguf + ".inp", "utf8").split("\n__ggml_vocab_test__\n");
  const outputs = readFileSync(gguf + ".out", "utf8").split("\n");
  return inputs.map((text, i) => {
    const line = (outputs[i] ?? "").trim();
    return { text, ids: line === "" ? [] : line.split(" ").map(Number) };
  });
}

/**
 * Writes a copy of a tensor-less vocabulary GGUF with `tokenizer.ggml.pre` set to `pre`: the other key/value
 * records are copied byte for byte (a raw rewrite, independent of the project's GGUF writer).
 */
export function writeWithPre(src: string, dst: string, pre: string): void {
  const buf = readFileSync(src);
  if (buf.readUInt32LE(0) !== 0x46554747 || buf.readBigUInt64LE(8) !== 0n) throw new Error(`${src}: not a tensor-less GGUF file`);
  const nKv = Number(buf.readBigUInt64LE(16));
  const SIZES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  let o = 24;
  const readString = () => {
    const n = Number(buf.readBigUInt64LE(o));
    const s = buf.toString("utf8", o + 8, o + 8 + n);
    o += 8 + n;
    return s;
  };
  const skipValue = (type: number) => {
    if (type === 8) readString();
    else if (type === 9) {
      const et = buf.readUInt32LE(o);
      const n = Number(buf.readBigUInt64LE(o + 4));
      o += 12;
      if (et === 8 || et === 9) for (let i = 0; i < n; i++) skipValue(et);
      else o += n * SIZES[et];
    } else o += SIZES[type];
  };
  const kept: Buffer[] = [];
  for (let i = 0; i < nKv; i++) {
    const from = o;
    const key = readString();
    const type = buf.readUInt32LE(o);
    o += 4;
    skipValue(type);
    if (key !== "tokenizer.ggml.pre") kept.push(buf.subarray(from, o));
  }
  const str = (s: string) => {
    const b = Buffer.from(s, "utf8");
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(b.length));
    return Buffer.concat([len, b]);
  };
  const type = Buffer.alloc(4);
  type.writeUInt32LE(8);
  kept.push(Buffer.concat([str("tokenizer.ggml.pre"), type, str(pre)]));
  const header = Buffer.from(buf.subarray(0, 24));
  header.writeBigUInt64LE(BigInt(kept.length), 16);
  const body = Buffer.concat([header, ...kept]);
  const pad = Buffer.alloc((32 - (body.length % 32)) % 32);
  writeFileSync(dst, Buffer.concat([body, pad]));
}

/** mulberry32: a small seeded PRNG in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = ["the", "Hello", "world", "tokenizer", "don't", "I'm", "they're", "we've", "you'll", "she'd", "it's", "IT'S", "WE'RE",
  "can't", "o'clock", "naïve", "café", "résumé", "Zürich", "straße", "ÆØÅ", "über", "MoE", "expert", "llama", "x", "A", "ab", "CamelCase", "snake_case"];
const SCRIPTS = ["Привет мир", "Ελληνικά γράμματα", "你好，世界！", "日本語のテキスト、カタカナ", "안녕하세요 세계", "مرحبا بالعالم", "שלום עולם",
  "नमस्ते दुनिया", "สวัสดีชาวโลก", "Tiếng Việt có dấu", "e\u0301 a\u0308 n\u0303", "Ｈｅｌｌｏ！ＡＢＣ１２３", "∑∫≈≠≤∞", "€£¥₹₿ $5",
  "ⅧⅫ ½ ² ③", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛", "ꙮ ᚠᚢᚦ", "ǅungla ǈ", "İstanbul ı", "ﬁﬂ ﬀ"];
const EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇺🇸", "❤️", "🦙", "🫠", "🪿", "🧑🏿‍💻", "✨"];
const SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t ", "\u00a0", "\u3000", "\u2009", "\u200b", "\u0085", "\u2028",
  "\ufeff", "\v", "\f", "      \n", "\n   "];
const CODE = ["def f(x):\n    return x**2\n", "if (a && b) { c[i] = d->e; }", '<div class="x">y</div>', "SELECT * FROM t WHERE id = 3;",
  "fn main() -> Result<(), E> {}", "x += 1 # comment", "console.log(`${a}`);", "#include <stdio.h>", "a.b?.c ?? d", "    indented\n\tline"];
const PUNCT = ["...", "!!!", "?!", "—", "«»", "“quoted”", "(parens)", "[x]", "{y}", "@#$%^&*", "'", "' ", " ' ", " ,", " .", "''", "--", "\"\"", "~/", "`"];
// code points assigned after Unicode 15.1 (unassigned in llama.cpp's tables) and a few unassigned ones
const RARE = ["\u{1FA89}", "\u{1FAE9}", "\u0897", "\u1ACF", "\u{11390}", "\u{0378}", "\u{E000}", "\u{10FFFD}", "\u{1F8B2}", "\u{31E4}"];

function digits(r: () => number): string {
  const n = 1 + Math.floor(r() * 14);
  let s = "";
  for (let i = 0; i < n; i++) s += String(Math.floor(r() * 10));
  return r() < 0.3 ? s.replace(/(\d)(?=(\d{3})+$)/g, "$1,") : s;
}

function randomCodePoint(r: () => number): string {
  const ranges: Array<[number, number]> = [[0x20, 0x7e], [0xa0, 0x24f], [0x370, 0x52f], [0x590, 0x6ff], [0x900, 0x97f], [0x3040, 0x30ff],
    [0x4e00, 0x9fff], [0xac00, 0xd7a3], [0x1f300, 0x1faff], [0x2000, 0x206f], [0x1d400, 0x1d7ff], [0x0300, 0x036f]];
  const [a, b] = ranges[Math.floor(r() * ranges.length)];
  return String.fromCodePoint(a + Math.floor(r() * (b - a + 1)));
}

/** Seeded random texts mixing scripts, emoji, whitespace runs, digits, code, punctuation and `specials` text. */
export function randomTexts(seed: number, n: number, specials: string[]): string[] {
  const r = rng(seed);
  const pick = <T>(a: T[]) => a[Math.floor(r() * a.length)];
  const texts: string[] = [];
  for (let i = 0; i < n; i++) {
    const parts: string[] = [];
    const count = 1 + Math.floor(r() * 10);
    for (let k = 0; k < count; k++) {
      const x = r();
      if (x < 0.22) parts.push(pick(WORDS));
      else if (x < 0.32) parts.push(pick(SCRIPTS));
      else if (x < 0.38) parts.push(pick(EMOJI));
      else if (x < 0.52) parts.push(pick(SPACES));
      else if (x < 0.6) parts.push(digits(r));
      else if (x < 0.66) parts.push(pick(CODE));
      else if (x < 0.74) parts.push(pick(PUNCT));
      else if (x < 0.8 && specials.length > 0) parts.push(pick(specials));
      else if (x < 0.84) parts.push(pick(RARE));
      else if (x < 0.9) parts.push(Array.from({ length: 1 + Math.floor(r() * 6) }, () => randomCodePoint(r)).join(""));
      else parts.push(" " + pick(WORDS));
      if (r() < 0.35) parts.push(" ");
    }
    texts.push(parts.join(""));
  }
  return texts;
}
