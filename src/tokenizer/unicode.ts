/**
 * Unicode helpers for the tokenizers: code point category flags as llama.cpp's unicode tables define them,
 * UTF-8 encoding/decoding, and the GPT-2 byte <-> character mapping used by byte-level BPE vocabularies.
 *
 * Categories come from the JavaScript engine's Unicode property escapes. llama.cpp's tables were generated
 * from Unicode 15.1; characters assigned in later Unicode versions are treated as unassigned here
 * (`ASSIGNED_AFTER_15_1`) so that a newer ICU in Node does not change how text is split.
 */

/** Category bits, same meaning as llama.cpp's unicode_cpt_flags (0 = "out of range", never a real code point). */
export const CPT = {
  UNDEFINED: 0x0001,
  NUMBER: 0x0002, // \p{N}
  LETTER: 0x0004, // \p{L}
  SEPARATOR: 0x0008, // \p{Z}
  MARK: 0x0010, // \p{M}
  PUNCTUATION: 0x0020, // \p{P}
  SYMBOL: 0x0040, // \p{S}
  CONTROL: 0x0080, // \p{C} except Cn
  CATEGORIES: 0x00ff,
  WHITESPACE: 0x0100, // Unicode White_Space
} as const;

/** Code point ranges (inclusive) that Unicode 16.0/17.0 assigned: unassigned in llama.cpp's Unicode 15.1 tables. */
const ASSIGNED_AFTER_15_1: ReadonlyArray<readonly [number, number]> = [
  [0x88f, 0x88f], [0x897, 0x897], [0xc5c, 0xc5c], [0xcdc, 0xcdc], [0x1acf, 0x1add], [0x1ae0, 0x1aeb],
  [0x1b4e, 0x1b4f], [0x1b7f, 0x1b7f], [0x1c89, 0x1c8a], [0x20c1, 0x20c1], [0x2427, 0x2429], [0x2b96, 0x2b96],
  [0x31e4, 0x31e5], [0xa7cb, 0xa7cf], [0xa7d2, 0xa7d2], [0xa7d4, 0xa7d4], [0xa7da, 0xa7dc], [0xa7f1, 0xa7f1],
  [0xfbc3, 0xfbd2], [0xfd90, 0xfd91], [0xfdc8, 0xfdce], [0x105c0, 0x105f3], [0x10940, 0x10959],
  [0x10d40, 0x10d65], [0x10d69, 0x10d85], [0x10d8e, 0x10d8f], [0x10ec2, 0x10ec7], [0x10ed0, 0x10ed8],
  [0x10efa, 0x10efc], [0x11380, 0x11389], [0x1138b, 0x1138b], [0x1138e, 0x1138e], [0x11390, 0x113b5],
  [0x113b7, 0x113c0], [0x113c2, 0x113c2], [0x113c5, 0x113c5], [0x113c7, 0x113ca], [0x113cc, 0x113d5],
  [0x113d7, 0x113d8], [0x113e1, 0x113e2], [0x116d0, 0x116e3], [0x11b60, 0x11b67], [0x11bc0, 0x11be1],
  [0x11bf0, 0x11bf9], [0x11db0, 0x11ddb], [0x11de0, 0x11de9], [0x11f5a, 0x11f5a], [0x13460, 0x143fa],
  [0x16100, 0x16139], [0x16d40, 0x16d79], [0x16ea0, 0x16eb8], [0x16ebb, 0x16ed3], [0x16ff2, 0x16ff6],
  [0x187f8, 0x187ff], [0x18cff, 0x18cff], [0x18d09, 0x18d1e], [0x18d80, 0x18df2], [0x1cc00, 0x1ccfc],
  [0x1cd00, 0x1ceb3], [0x1ceba, 0x1ced0], [0x1cee0, 0x1cef0], [0x1e5d0, 0x1e5fa], [0x1e5ff, 0x1e5ff],
  [0x1e6c0, 0x1e6de], [0x1e6e0, 0x1e6f5], [0x1e6fe, 0x1e6ff], [0x1f6d8, 0x1f6d8], [0x1f777, 0x1f77a],
  [0x1f8b2, 0x1f8bb], [0x1f8c0, 0x1f8c1], [0x1f8d0, 0x1f8d8], [0x1fa54, 0x1fa57], [0x1fa89, 0x1fa8a],
  [0x1fa8e, 0x1fa8f], [0x1fabe, 0x1fabe], [0x1fac6, 0x1fac6], [0x1fac8, 0x1fac8], [0x1facd, 0x1facd],
  [0x1fadc, 0x1fadc], [0x1fadf, 0x1fadf], [0x1fae9, 0x1faea], [0x1faef, 0x1faef], [0x1fbcb, 0x1fbef],
  [0x1fbfa, 0x1fbfa], [0x2b73a, 0x2b73f], [0x2cea2, 0x2cead], [0x323b0, 0x33479],
];

const CATEGORY_TESTS: ReadonlyArray<readonly [number, RegExp]> = [
  [CPT.NUMBER, /^\p{N}$/u],
  [CPT.LETTER, /^\p{L}$/u],
  [CPT.SEPARATOR, /^\p{Z}$/u],
  [CPT.MARK, /^\p{M}$/u],
  [CPT.PUNCTUATION, /^\p{P}$/u],
  [CPT.SYMBOL, /^\p{S}$/u],
  [CPT.CONTROL, /^[\p{Cc}\p{Cf}\p{Co}\p{Cs}]$/u],
];
const WHITE_SPACE = /^\p{White_Space}$/u;
const MAX_CODEPOINT = 0x110000;

function assignedAfter151(cpt: number): boolean {
  let lo = 0;
  let hi = ASSIGNED_AFTER_15_1.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const [a, b] = ASSIGNED_AFTER_15_1[mid];
    if (cpt < a) hi = mid - 1;
    else if (cpt > b) lo = mid + 1;
    else return true;
  }
  return false;
}

function computeFlags(cpt: number): number {
  const s = String.fromCodePoint(cpt);
  let flags = 0;
  if (!assignedAfter151(cpt)) {
    for (const [bit, re] of CATEGORY_TESTS) {
      if (re.test(s)) {
        flags = bit;
        break;
      }
    }
  }
  if (flags === 0) flags = CPT.UNDEFINED;
  if (WHITE_SPACE.test(s)) flags |= CPT.WHITESPACE;
  return flags;
}

// filled lazily: 0 = not computed yet (every real code point has at least one bit)
const flagCache = new Uint16Array(MAX_CODEPOINT);

/** Category flags of a code point (CPT bits); UNDEFINED beyond U+10FFFF. */
export function cptFlags(cpt: number): number {
  if (cpt < 0 || cpt >= MAX_CODEPOINT) return CPT.UNDEFINED;
  let f = flagCache[cpt];
  if (f === 0) {
    f = computeFlags(cpt);
    flagCache[cpt] = f;
  }
  return f;
}

/** The code points of a (well-formed) string. */
export function codePoints(text: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        out.push(((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000);
        i++;
        continue;
      }
    }
    out.push(c);
  }
  return out;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

export function utf8Encode(text: string): Uint8Array {
  return encoder.encode(text);
}

/** Decodes UTF-8, replacing invalid sequences with U+FFFD. */
export function utf8Decode(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

/** Number of UTF-8 bytes of a string. */
export function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/** Length of the UTF-8 sequence that starts with this byte (llama.cpp's lookup: continuation bytes count as 1). */
export function utf8SequenceLength(firstByte: number): number {
  const hi = firstByte >> 4;
  return hi < 12 ? 1 : hi < 14 ? 2 : hi === 14 ? 3 : 4;
}

/** GPT-2 byte-level encoding: each byte is shown as one printable character. */
const BYTE_TO_CHAR: string[] = [];
const CHAR_TO_BYTE = new Map<string, number>();
{
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const ch = String.fromCharCode(printable(b) ? b : 256 + n++);
    BYTE_TO_CHAR[b] = ch;
    CHAR_TO_BYTE.set(ch, b);
  }
}

/** The byte-level BPE spelling of a string: its UTF-8 bytes, one mapped character each. */
export function byteEncode(text: string): string {
  let out = "";
  for (const b of utf8Encode(text)) out += BYTE_TO_CHAR[b];
  return out;
}

export function byteToChar(b: number): string {
  return BYTE_TO_CHAR[b];
}

/** The byte a byte-level BPE character stands for, or undefined for characters outside the mapping. */
export function charToByte(ch: string): number | undefined {
  return CHAR_TO_BYTE.get(ch);
}

/** The string with lone surrogates replaced by U+FFFD (what converting it to UTF-8 does). */
export function wellFormed(text: string): string {
  return text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd");
}
