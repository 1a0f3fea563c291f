/**
 * SentencePiece-style tokenization of one text fragment (llama.cpp's SPM algorithm): start from single
 * characters, repeatedly merge the adjacent pair whose merged text is the highest-scoring vocabulary entry
 * (leftmost first on ties), then emit the pieces, falling back to byte tokens for unknown characters.
 */
import { mergeSymbols } from "./merge.ts";
import { utf8Encode } from "./unicode.ts";
import type { Vocab } from "./vocab.ts";

/** Appends the tokens of `text` (spaces already written as U+2581) to `out`. */
export function spmTokenize(vocab: Vocab, text: string, out: number[]): void {
  if (text.length === 0) return;
  const { start, len, next } = mergeSymbols(text, (at, leftLen, rightLen) => {
    const id = vocab.tokenToId.get(text.substr(at, leftLen + rightLen));
    return id === undefined ? undefined : -vocab.scores[id]; // highest score first
  });
  // Every merged symbol is a vocabulary entry (pairs only merge when their text is one), so a symbol that is
  // not a token is a single character: it becomes byte tokens. (llama.cpp's resegment step also looks such a
  // symbol up among the merges, which can never match a single character.)
  for (let i = 0; i !== -1; i = next[i]) {
    const piece = text.substr(start[i], len[i]);
    const id = vocab.tokenToId.get(piece);
    if (id !== undefined) out.push(id);
    else for (const byte of utf8Encode(piece)) out.push(vocab.byteToken(byte));
  }
}
