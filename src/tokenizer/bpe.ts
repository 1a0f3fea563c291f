/**
 * Byte-level BPE tokenization of one pre-tokenized word (llama.cpp's BPE algorithm): start from single
 * characters of the byte-encoded word, repeatedly apply the lowest-ranked merge among adjacent pairs
 * (leftmost first on ties), then look the resulting pieces up in the vocabulary.
 */
import { mergeSymbols } from "./merge.ts";
import { utf8Encode } from "./unicode.ts";
import type { Vocab } from "./vocab.ts";

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
  const { start, len } = mergeSymbols(word, (at, leftLen, rightLen) => {
    const rank = vocab.mergeRank(word.substr(at, leftLen), word.substr(at + leftLen, rightLen));
    return rank < 0 ? undefined : rank;
  });
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
