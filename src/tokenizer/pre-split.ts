/**
 * Pre-tokenization: splits text into words with a list of regular expressions, the way llama.cpp's
 * unicode_regex_split does it, so that byte-level BPE sees exactly the same words.
 *
 * Each expression splits every current segment further (matches and the gaps between them both become
 * segments). Three expressions (GPT-2, Llama-3, Qwen2) have hand-written splitters, like llama.cpp. Others
 * run as JavaScript regular expressions in one of llama.cpp's two modes:
 *  - with Unicode categories (\p{L} ...): on a "collapsed" text where every non-ASCII code point is replaced
 *    by one byte standing for its category, and each \p{X} by that byte plus the ASCII members of X
 *    (this is how llama.cpp runs them with std::regex, and it changes the meaning of e.g. \p{Lu});
 *  - without categories: on the code points, with non-ASCII whitespace replaced by \v.
 */
import { CPT, codePoints, cptFlags } from "./unicode.ts";

/** Splits code points [0, n) given as segment lengths into finer segment lengths. */
type Splitter = (cpts: number[], offsets: number[]) => number[];

const GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const LLAMA3_REGEX_ORIGINAL =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const LLAMA3_REGEX =
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_REGEX =
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN35_REGEX =
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const NEWLINES_REGEX = "[^\\n]+|[\\n]+";

const OUT = -1; // code point "outside the segment"
const CR = 0x0d;
const LF = 0x0a;
const SPACE = 0x20;
const APOS = 0x27;

/** Runs `body` for every segment with helpers that see only that segment (like llama.cpp's lambdas). */
function forEachSegment(
  cpts: number[],
  offsets: number[],
  body: (seg: { ini: number; end: number; cpt: (p: number) => number; flags: (p: number) => number; emit: (end: number) => number }) => void,
): number[] {
  const out: number[] = [];
  let start = 0;
  for (const len of offsets) {
    const ini = start;
    const end = start + len;
    start = end;
    let prevEnd = ini;
    body({
      ini,
      end,
      cpt: (p) => (p >= ini && p < end ? cpts[p] : OUT),
      flags: (p) => (p >= ini && p < end ? cptFlags(cpts[p]) : 0),
      emit: (e) => {
        const n = e - prevEnd;
        if (n > 0) out.push(n);
        prevEnd = e;
        return n;
      },
    });
  }
  return out;
}

const isLetter = (f: number) => (f & CPT.LETTER) !== 0;
const isNumber = (f: number) => (f & CPT.NUMBER) !== 0;
const isSpace = (f: number) => (f & CPT.WHITESPACE) !== 0;
const lowerAscii = (c: number) => (c >= 0x41 && c <= 0x5a ? c + 32 : c);

/** Length of a contraction ('s 't 'm 'd 're 've 'll) starting at p, or 0. */
function contraction(cpt: (p: number) => number, p: number, end: number, ignoreCase: boolean): number {
  if (cpt(p) !== APOS || p + 1 >= end) return 0;
  const low = ignoreCase ? lowerAscii : (c: number) => c;
  const a = low(cpt(p + 1));
  if (a === 0x73 || a === 0x74 || a === 0x6d || a === 0x64) return 2; // s t m d
  if (p + 2 < end) {
    const b = low(cpt(p + 2));
    if ((a === 0x72 && b === 0x65) || (a === 0x76 && b === 0x65) || (a === 0x6c && b === 0x6c)) return 3; // re ve ll
  }
  return 0;
}

/** 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S) */
const splitGpt2: Splitter = (cpts, offsets) =>
  forEachSegment(cpts, offsets, ({ end, cpt, flags, emit, ini }) => {
    for (let pos = ini; pos < end; ) {
      const c = cpt(pos);
      const k = contraction(cpt, pos, end, false);
      if (k) {
        pos += emit(pos + k);
        continue;
      }
      let f2 = c === SPACE ? flags(pos + 1) : flags(pos);
      if (isLetter(f2)) {
        if (c === SPACE) pos++;
        while (isLetter(f2)) f2 = flags(++pos);
        emit(pos);
        continue;
      }
      if (isNumber(f2)) {
        if (c === SPACE) pos++;
        while (isNumber(f2)) f2 = flags(++pos);
        emit(pos);
        continue;
      }
      const other = (f: number) => !(isSpace(f) || isLetter(f) || isNumber(f)) && f !== 0;
      if (other(f2)) {
        if (c === SPACE) pos++;
        while (other(f2)) f2 = flags(++pos);
        emit(pos);
        continue;
      }
      let nws = 0;
      while (isSpace(flags(pos + nws))) nws++;
      if (nws > 1 && cpt(pos + nws) !== OUT) {
        pos += nws - 1;
        emit(pos);
        continue;
      }
      if (nws > 0) {
        pos += nws;
        emit(pos);
        continue;
      }
      emit(++pos);
    }
  });

/**
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?W+|\p{N}{1,K}| ?[^\s W\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * with K = 3 (Llama-3) or 1 (Qwen2, Qwen3.5) and W = \p{L} (or [\p{L}\p{M}] for Qwen3.5: `wordFlags`).
 */
function makeLlama3Splitter(maxDigits: number, wordFlags: number = CPT.LETTER): Splitter {
  const isWord = (f: number) => (f & wordFlags) !== 0;
  return (cpts, offsets) =>
    forEachSegment(cpts, offsets, ({ ini, end, cpt, flags, emit }) => {
      for (let pos = ini; pos < end; ) {
        const c = cpt(pos);
        const f = flags(pos);
        const k = contraction(cpt, pos, end, true);
        if (k) {
          pos += emit(pos + k);
          continue;
        }
        if (!(c === CR || c === LF || isNumber(f)) && (isWord(f) || isWord(flags(pos + 1)))) {
          pos++;
          while (isWord(flags(pos))) pos++;
          emit(pos);
          continue;
        }
        if (isNumber(f)) {
          let ini2 = pos;
          while (isNumber(flags(pos))) {
            if (++pos - ini2 >= maxDigits) {
              emit(pos);
              ini2 = pos;
            }
          }
          emit(pos);
          continue;
        }
        let f2 = c === SPACE ? flags(pos + 1) : f;
        const other = (g: number) => !(isSpace(g) || isWord(g) || isNumber(g));
        if (other(f2) && f !== 0) {
          if (c === SPACE) pos++;
          while (other(f2) && f2 !== 0) f2 = flags(++pos);
          let c2 = cpt(pos);
          while (c2 === CR || c2 === LF) c2 = cpt(++pos);
          emit(pos);
          continue;
        }
        let nws = 0;
        let lastNewlineEnd = 0;
        while (isSpace(flags(pos + nws))) {
          const c2 = cpt(pos + nws);
          if (c2 === CR || c2 === LF) lastNewlineEnd = pos + nws + 1;
          nws++;
        }
        if (lastNewlineEnd > 0) {
          pos = lastNewlineEnd;
          emit(pos);
          continue;
        }
        if (nws > 1 && cpt(pos + nws) !== OUT) {
          pos += nws - 1;
          emit(pos);
          continue;
        }
        if (nws > 0) {
          pos += nws;
          emit(pos);
          continue;
        }
        emit(++pos);
      }
    });
}

/** [^\n]+|[\n]+ */
const splitNewlines: Splitter = (cpts, offsets) =>
  forEachSegment(cpts, offsets, ({ ini, end, emit }) => {
    let pos = ini;
    while (pos < end) {
      const nl = cpts[pos] === LF;
      while (pos < end && (cpts[pos] === LF) === nl) pos++;
      emit(pos);
    }
  });

const CUSTOM_SPLITTERS = new Map<string, Splitter>([
  [GPT2_REGEX, splitGpt2],
  [LLAMA3_REGEX_ORIGINAL, makeLlama3Splitter(3)],
  [LLAMA3_REGEX, makeLlama3Splitter(3)],
  [QWEN2_REGEX, makeLlama3Splitter(1)],
  [QWEN35_REGEX, makeLlama3Splitter(1, CPT.LETTER | CPT.MARK)],
  [NEWLINES_REGEX, splitNewlines],
]);

// ---- general expressions (llama.cpp's std::regex fallback) ----

/** Unicode categories llama.cpp can collapse, each to its stand-in byte and the ASCII members of the class. */
const CATEGORY_CLASSES: Record<string, { flag: number; collapsed: string; ascii: string }> = {
  N: { flag: CPT.NUMBER, collapsed: "\\xD1", ascii: "0-9" },
  L: { flag: CPT.LETTER, collapsed: "\\xD2", ascii: "A-Za-z" },
  P: { flag: CPT.PUNCTUATION, collapsed: "\\xD3", ascii: "!-#%-*,-/:;?@\\[-\\]_{}" },
  M: { flag: CPT.MARK, collapsed: "\\xD4", ascii: "" },
  S: { flag: CPT.SYMBOL, collapsed: "\\xD5", ascii: "\\$\\+<->\\^`\\|" },
};
// llama.cpp maps the letter subcategories to "all letters" in collapsed mode
const CATEGORY_NAMES: Record<string, string> = { N: "N", L: "L", P: "P", M: "M", S: "S", Lu: "L", Ll: "L", Lt: "L", Lm: "L", Lo: "L" };
const COLLAPSED_BYTE: Record<number, number> = {
  [CPT.NUMBER]: 0xd1,
  [CPT.LETTER]: 0xd2,
  [CPT.PUNCTUATION]: 0xd3,
  [CPT.MARK]: 0xd4,
  [CPT.SYMBOL]: 0xd5,
};
// C-locale \s of std::regex (ASCII whitespace only)
const ASCII_SPACE_CLASS = "\\t\\n\\v\\f\\r ";

function usesCategories(expr: string): boolean {
  return /\\p\{(N|L|P|M|S|Lu|Ll|Lt|Lm|Lo)\}/.test(expr);
}

/**
 * Rewrites one of llama.cpp's expressions into a JavaScript one: \p{X} become collapsed classes (when
 * `collapse`), \s and \S become ASCII-only classes like C++'s std::regex in the "C" locale.
 */
function translateExpression(expr: string, collapse: boolean): string {
  let out = "";
  let inside = false;
  for (let i = 0; i < expr.length; i++) {
    const ch = expr[i];
    if (ch === "[" && (i === 0 || expr[i - 1] !== "\\")) {
      inside = true;
      out += ch;
      continue;
    }
    if (inside && ch === "]" && expr[i - 1] !== "\\") {
      inside = false;
      out += ch;
      continue;
    }
    if (ch === "\\" && i + 1 < expr.length) {
      const next = expr[i + 1];
      if (collapse && next === "p" && expr[i + 2] === "{") {
        const close = expr.indexOf("}", i + 3);
        const name = close > 0 ? CATEGORY_NAMES[expr.slice(i + 3, close)] : undefined;
        if (name) {
          const cls = CATEGORY_CLASSES[name];
          const body = cls.collapsed + cls.ascii;
          out += inside ? body : `[${body}]`;
          i = close;
          continue;
        }
      }
      if (next === "s") {
        out += inside ? ASCII_SPACE_CLASS : `[${ASCII_SPACE_CLASS}]`;
        i++;
        continue;
      }
      if (next === "S" && !inside) {
        out += `[^${ASCII_SPACE_CLASS}]`;
        i++;
        continue;
      }
      out += ch + next;
      i++;
      continue;
    }
    out += ch;
  }
  return out;
}

/** Splits each segment of `text` (segments given in `units`) by the matches of `re`; returns new unit lengths. */
function splitByRegex(text: string, re: RegExp, offsets: number[]): number[] {
  const out: number[] = [];
  let start = 0;
  for (const len of offsets) {
    const seg = text.slice(start, start + len);
    re.lastIndex = 0;
    let prev = 0;
    for (let m = re.exec(seg); m !== null; m = re.exec(seg)) {
      if (m.index > prev) out.push(m.index - prev);
      out.push(m[0].length);
      prev = m.index + m[0].length;
      if (m[0].length === 0) re.lastIndex++;
    }
    if (prev < len) out.push(len - prev);
    start += len;
  }
  return out;
}

/** True for the expressions that have a hand-written splitter (llama.cpp's custom implementations). */
export function hasCustomSplitter(expr: string): boolean {
  return CUSTOM_SPLITTERS.has(expr);
}

/** One compiled pre-tokenizer expression. */
interface CompiledExpression {
  custom?: Splitter;
  collapsed?: RegExp;
  plain?: RegExp;
}

function compile(expr: string): CompiledExpression {
  const custom = CUSTOM_SPLITTERS.get(expr);
  if (custom) return { custom };
  if (usesCategories(expr)) return { collapsed: new RegExp(translateExpression(expr, true), "g") };
  return { plain: new RegExp(translateExpression(expr, false), "gu") };
}

/** The text with every code point replaced by one character the collapsed expressions can match. */
function collapse(cpts: number[]): string {
  let s = "";
  for (const c of cpts) {
    if (c < 128) {
      s += String.fromCharCode(c);
      continue;
    }
    const f = cptFlags(c);
    if (f & CPT.WHITESPACE) s += "\x0b";
    else s += String.fromCharCode(COLLAPSED_BYTE[f & CPT.CATEGORIES] ?? 0xd0);
  }
  return s;
}

/** Splits text into words with a fixed list of llama.cpp pre-tokenizer expressions. */
export class RegexSplitter {
  private readonly compiled: CompiledExpression[];

  constructor(readonly expressions: readonly string[]) {
    this.compiled = expressions.map(compile);
  }

  /** The words of `text` (a well-formed string), in order; their concatenation is `text`. */
  split(text: string): string[] {
    const cpts = codePoints(text);
    let offsets = cpts.length > 0 ? [cpts.length] : [];
    let collapsedText: string | undefined;
    let plain: { text: string; unitOf: Int32Array; cptOf: Int32Array } | undefined;
    for (const c of this.compiled) {
      if (c.custom) {
        offsets = c.custom(cpts, offsets);
      } else if (c.collapsed) {
        collapsedText ??= collapse(cpts);
        offsets = splitByRegex(collapsedText, c.collapsed, offsets);
      } else if (c.plain) {
        plain ??= plainText(cpts);
        // offsets are in code points; the plain text has surrogate pairs: convert both ways
        const unitOffsets: number[] = [];
        let endCpt = 0;
        for (const n of offsets) {
          unitOffsets.push(plain.unitOf[endCpt + n] - plain.unitOf[endCpt]);
          endCpt += n;
        }
        const split = splitByRegex(plain.text, c.plain, unitOffsets);
        offsets = [];
        let unitPos = 0;
        let cptPos = 0;
        for (const n of split) {
          unitPos += n;
          const cp = plain.cptOf[unitPos];
          offsets.push(cp - cptPos);
          cptPos = cp;
        }
      }
    }
    // cut the original text at the code point boundaries
    const words: string[] = [];
    let unit = 0;
    let cpt = 0;
    for (const n of offsets) {
      const from = unit;
      for (const end = cpt + n; cpt < end; cpt++) unit += cpts[cpt] > 0xffff ? 2 : 1;
      words.push(text.slice(from, unit));
    }
    return words;
  }
}

/** Code points as a string with non-ASCII whitespace replaced by \v, and index maps between code points and units. */
function plainText(cpts: number[]): { text: string; unitOf: Int32Array; cptOf: Int32Array } {
  const unitOf = new Int32Array(cpts.length + 1);
  let text = "";
  for (let i = 0; i < cpts.length; i++) {
    unitOf[i] = text.length;
    const c = cpts[i];
    text += c > 0x7f && cptFlags(c) & CPT.WHITESPACE ? "\x0b" : String.fromCodePoint(c);
  }
  unitOf[cpts.length] = text.length;
  const cptOf = new Int32Array(text.length + 1);
  for (let i = 0; i <= cpts.length; i++) cptOf[unitOf[i]] = i;
  return { text, unitOf, cptOf };
}
