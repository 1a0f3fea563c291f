/**
 * Byte-level BPE tokenization of one pre-tokenized word (llama.cpp's BPE algorithm): start from single
 * characters of the byte-encoded word, repeatedly apply the lowest-ranked merge among adjacent pairs
 * (leftmost first on ties), then look the resulting pieces up in the vocabulary.
 */
import { Heap } from "./heap.ts";
import type { Vocab } from "./vocab.ts";
import { utf8Encode } from "./unicode.ts";

interface Bigram {
  left: number;
  right: number;
  rank: number;
  size: number;
}

/** Appends the tokens of one word (already in the byte-level spelling) to `out`. */
export function bpeTokenizeWord(vocab: Vocab, word: string, ignoreMerges: boolean, out: number[]): void {
  if (word.length === 0) return;
  if (ignoreMerges) {
    const whole = vocab.tokenToId.get(word);
    if (whole !== undefined) {
      out.push(whole);
      return;
    }
  }
  const start: number[] = [];
  const len: number[] = [];
  const prev: number[] = [];
  const next: number[] = [];
  for (let i = 0; i < word.length; ) {
    const c = word.charCodeAt(i);
    const n = c >= 0xd800 && c <= 0xdbff && i + 1 < word.length ? 2 : 1;
    start.push(i);
    len.push(n);
    prev.push(start.length - 2);
    i += n;
    next.push(i === word.length ? -1 : start.length);
  }

  const queue = new Heap<Bigram>((a, b) => a.rank < b.rank || (a.rank === b.rank && a.left < b.left));
  const tryAdd = (left: number, right: number) => {
    if (left === -1 || right === -1) return;
    const rank = vocab.mergeRank(word.substr(start[left], len[left]), word.substr(start[right], len[right]));
    if (rank < 0) return;
    queue.push({ left, right, rank, size: len[left] + len[right] });
  };
  for (let i = 1; i < start.length; i++) tryAdd(i - 1, i);

  for (let b = queue.pop(); b !== undefined; b = queue.pop()) {
    const { left, right } = b;
    // adjacent symbols only grow: an unchanged total length means an unchanged pair
    if (len[left] === 0 || len[right] === 0 || len[left] + len[right] !== b.size) continue;
    len[left] += len[right];
    len[right] = 0;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    tryAdd(prev[left], left);
    tryAdd(left, next[left]);
  }

  for (let i = 0; i < start.length; i++) {
    if (len[i] === 0) continue;
    const piece = word.substr(start[i], len[i]);
    const id = vocab.tokenToId.get(piece);
    if (id !== undefined) {
      out.push(id);
      continue;
    }
    // llama.cpp looks up each byte of the piece as a one-byte token; only ASCII bytes can match
    for (const byte of utf8Encode(piece)) {
      const single = byte < 0x80 ? vocab.tokenToId.get(String.fromCharCode(byte)) : undefined;
      if (single !== undefined) out.push(single);
    }
  }
}
