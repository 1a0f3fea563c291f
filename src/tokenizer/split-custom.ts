/**
 * Hand-written splitters for the pre-tokenizer expressions llama.cpp implements by hand (GPT-2, Llama-3,
 * Qwen2, Qwen3.5, newline runs, digit groups). They work on code points and segment lengths and reproduce
 * llama.cpp's code paths, quirks included (its own Unicode categories, ASCII-only case folding).
 */
import { CPT, cptFlags } from "./unicode.ts";

/** Splits code points [0, n) given as segment lengths into finer segment lengths. */
export type Splitter = (cpts: number[], offsets: number[]) => number[];

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

/** One segment [ini, end) with helpers that see only it (code points and flags are OUT / 0 outside). */
interface Segment {
  ini: number;
  end: number;
  cpt: (p: number) => number;
  flags: (p: number) => number;
  /** ends the current piece at `end`; returns its length */
  emit: (end: number) => number;
}

/** Runs `body` for every segment (like llama.cpp's lambdas). */
function forEachSegment(cpts: number[], offsets: number[], body: (seg: Segment) => void): number[] {
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

/** \p{N}{1,maxDigits} at pos, repeated over the whole digit run: emits each group, returns the position after the run. */
function matchDigitRun({ flags, emit }: Segment, pos: number, maxDigits: number): number {
  let ini = pos;
  while (isNumber(flags(pos))) {
    if (++pos - ini >= maxDigits) {
      emit(pos);
      ini = pos;
    }
  }
  emit(pos);
  return pos;
}

/**
 * \s*[\r\n]+|\s+(?!\S)|\s+ at pos, else the single code point there (the Llama-3 style expressions' last
 * alternatives): emits the match, returns the position after it.
 */
function matchSpaces({ cpt, flags, emit }: Segment, pos: number): number {
  let nws = 0;
  let lastNewlineEnd = 0;
  while (isSpace(flags(pos + nws))) {
    const c = cpt(pos + nws);
    if (c === CR || c === LF) lastNewlineEnd = pos + nws + 1;
    nws++;
  }
  if (lastNewlineEnd > 0) pos = lastNewlineEnd;
  else if (nws > 1 && cpt(pos + nws) !== OUT) pos += nws - 1;
  else if (nws > 0) pos += nws;
  else pos++;
  emit(pos);
  return pos;
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
    forEachSegment(cpts, offsets, (seg) => {
      const { ini, end, cpt, flags, emit } = seg;
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
          pos = matchDigitRun(seg, pos, maxDigits);
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
        pos = matchSpaces(seg, pos);
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

/**
 * Digit runs split into groups of three from the right (1234567 -> 1 234 567); the text before a run is
 * joined to its first group, as in llama.cpp (later expressions separate it again).
 */
const splitDigitGroups: Splitter = (cpts, offsets) =>
  forEachSegment(cpts, offsets, ({ ini, end, flags, emit }) => {
    for (let pos = ini; pos < end; ) {
      if (!isNumber(flags(pos))) {
        pos++;
        continue;
      }
      const first = pos;
      while (pos < end && isNumber(flags(pos))) pos++;
      let at = first + ((pos - first) % 3);
      if (at > first) emit(at);
      for (; at < pos; at += 3) emit(at + 3);
    }
    emit(end);
  });

/** CJK ideographs as llama.cpp's unicode_cpt_is_han defines them. */
function isHan(c: number): boolean {
  return (
    (c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) || (c >= 0x20000 && c <= 0x2a6df) || (c >= 0x2a700 && c <= 0x2b73f) ||
    (c >= 0x2b740 && c <= 0x2b81f) || (c >= 0x2b820 && c <= 0x2ceaf) || (c >= 0x2ceb0 && c <= 0x2ebef) || (c >= 0xf900 && c <= 0xfaff) ||
    (c >= 0x2f800 && c <= 0x2fa1f)
  );
}

/**
 * Kimi-K2: [\p{Han}]+ | [^\r\n\p{L}\p{N}]? non-Han letters+ contraction? | \p{N}{1,3} | ?[^\s\p{L}\p{N}]+[\r\n]* |
 * \s*[\r\n]+ | \s+(?!\S) | \s+ (llama.cpp's hand-written version; its letter-case classes all collapse to letters).
 */
const splitKimiK2: Splitter = (cpts, offsets) =>
  forEachSegment(cpts, offsets, (seg) => {
    const { ini, end, cpt, flags, emit } = seg;
    const letter = (p: number) => isLetter(flags(p)) && !isHan(cpt(p));
    for (let pos = ini; pos < end; ) {
      const c = cpt(pos);
      const f = flags(pos);
      if (isHan(c)) {
        while (isHan(cpt(pos))) pos++;
        emit(pos);
        continue;
      }
      const leading = !(c === CR || c === LF || isLetter(f) || isNumber(f));
      if ((isLetter(f) && !isHan(c)) || (leading && letter(pos + 1))) {
        if (leading) pos++;
        let any = false;
        while (letter(pos)) {
          any = true;
          pos++;
        }
        if (any || (!leading && letter(pos))) {
          if (!any) pos++;
          while (letter(pos)) pos++;
          if (cpt(pos) === APOS) pos += contraction(cpt, pos, end, true);
          emit(pos);
          continue;
        } else if (leading) pos--;
      }
      if (isNumber(f)) {
        pos = matchDigitRun(seg, pos, 3);
        continue;
      }
      let f2 = c === SPACE ? flags(pos + 1) : f;
      const other = (g: number) => !(isSpace(g) || isLetter(g) || isNumber(g)) && g !== 0;
      if (other(f2)) {
        if (c === SPACE) pos++;
        while (other(f2)) f2 = flags(++pos);
        let c2 = cpt(pos);
        while (c2 === CR || c2 === LF) c2 = cpt(++pos);
        emit(pos);
        continue;
      }
      pos = matchSpaces(seg, pos);
    }
  });

export const CUSTOM_SPLITTERS = new Map<string, Splitter>([
  [GPT2_REGEX, splitGpt2],
  [LLAMA3_REGEX_ORIGINAL, makeLlama3Splitter(3)],
  [LLAMA3_REGEX, makeLlama3Splitter(3)],
  [QWEN2_REGEX, makeLlama3Splitter(1)],
  [QWEN35_REGEX, makeLlama3Splitter(1, CPT.LETTER | CPT.MARK)],
  [NEWLINES_REGEX, splitNewlines],
  ["\\p{Han}+", splitKimiK2],
  ["\\p{AFMoE_digits}", splitDigitGroups],
  ["\\d{1,3}(?=(?:\\d{3})*\\b)", splitDigitGroups],
]);

