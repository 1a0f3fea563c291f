/**
 * SentencePiece-style tokenization of one text fragment (llama.cpp's SPM algorithm): start from single
 * characters, repeatedly merge the adjacent pair whose merged text is the highest-scoring vocabulary entry
 * (leftmost first on ties), then emit the pieces, falling back to byte tokens for unknown characters.
 */
import { Heap } from "./heap.ts";
import type { Vocab } from "./vocab.ts";
import { utf8Encode } from "./unicode.ts";

interface Bigram {
  left: number;
  right: number;
  score: number;
  size: number;
}

/** Appends the tokens of `text` (spaces already written as U+2581) to `out`. */
export function spmTokenize(vocab: Vocab, text: string, out: number[]): void {
  if (text.length === 0) return;
  // symbols: one per code point, as a linked list over positions in `text`
  const start: number[] = [];
  const len: number[] = [];
  const prev: number[] = [];
  const next: number[] = [];
  for (let i = 0; i < text.length; ) {
    const c = text.charCodeAt(i);
    const n = c >= 0xd800 && c <= 0xdbff && i + 1 < text.length ? 2 : 1;
    start.push(i);
    len.push(n);
    prev.push(start.length - 2);
    i += n;
    next.push(i === text.length ? -1 : start.length);
  }

  const queue = new Heap<Bigram>((a, b) => a.score > b.score || (a.score === b.score && a.left < b.left));
  const tryAdd = (left: number, right: number) => {
    if (left === -1 || right === -1) return;
    const piece = text.substr(start[left], len[left] + len[right]);
    const id = vocab.tokenToId.get(piece);
    if (id === undefined || id >= vocab.size) return;
    queue.push({ left, right, score: vocab.scores[id], size: piece.length });
  };

  for (let i = 1; i < start.length; i++) tryAdd(i - 1, i);

  for (let b = queue.pop(); b !== undefined; b = queue.pop()) {
    const { left, right } = b;
    // skip pairs whose symbols changed since the pair was queued
    if (len[left] === 0 || len[right] === 0 || len[left] + len[right] !== b.size) continue;
    len[left] += len[right];
    len[right] = 0;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    tryAdd(prev[left], left);
    tryAdd(left, next[left]);
  }

  // Every merged symbol is a vocabulary entry (pairs are only queued when their text is one), so a symbol
  // that is not a token is a single character: it becomes byte tokens. (llama.cpp's resegment step also
  // looks such a symbol up among the merges, which can never match a single character.)
  for (let i = 0; i !== -1; i = next[i]) {
    const piece = text.substr(start[i], len[i]);
    const id = vocab.tokenToId.get(piece);
    if (id !== undefined) out.push(id);
    else for (const byte of utf8Encode(piece)) out.push(vocab.byteToken(byte));
  }
}
