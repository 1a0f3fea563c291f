/**
 * Pre-tokenization: splits text into words with a list of regular expressions, the way llama.cpp's
 * unicode_regex_split does it, so that byte-level BPE sees exactly the same words.
 *
 * Each expression splits every current segment further (matches and the gaps between them both become
 * segments). Some expressions have hand-written splitters (./split-custom.ts), like in llama.cpp. Others run
 * as JavaScript regular expressions in one of llama.cpp's two modes:
 *  - with Unicode categories (\p{L} ...): on a "collapsed" text where every non-ASCII code point is replaced
 *    by one byte standing for its category, and each \p{X} by that byte plus the ASCII members of X
 *    (this is how llama.cpp runs them with std::regex, and it changes the meaning of e.g. \p{Lu});
 *  - without categories: on the code points, with non-ASCII whitespace replaced by \v.
 */
import { CUSTOM_SPLITTERS, type Splitter } from "./split-custom.ts";
import { CPT, codePoints, cptFlags } from "./unicode.ts";

// ---- general expressions (llama.cpp's std::regex fallback) ----

/** Unicode categories llama.cpp can collapse, each to its stand-in byte and the ASCII members of the class. */
const CATEGORY_CLASSES: Record<string, { collapsed: string; ascii: string }> = {
  N: { collapsed: "\\xD1", ascii: "0-9" },
  L: { collapsed: "\\xD2", ascii: "A-Za-z" },
  P: { collapsed: "\\xD3", ascii: "!-#%-*,-/:;?@\\[-\\]_{}" },
  M: { collapsed: "\\xD4", ascii: "" },
  S: { collapsed: "\\xD5", ascii: "\\$\\+<->\\^`\\|" },
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
