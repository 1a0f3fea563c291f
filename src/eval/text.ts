/**
 * The model's vocabulary as the evaluation commands need it: whether and which BOS token starts a
 * sequence, and tokenizing a text file (llama.cpp's common_tokenize with special tokens added).
 */
import { readFileSync } from "node:fs";
import { TsmoeError } from "../errors.ts";
import type { Model } from "../model/api.ts";
import { Tokenizer } from "../tokenizer/tokenizer.ts";

/** The BOS token id when the vocabulary adds one, else null (also null when the vocabulary is unsupported). */
export function bosToken(model: Model): number | null {
  try {
    const tok = Tokenizer.fromMetadata(model.metadata);
    return tok.addBos ? tok.bos : null;
  } catch {
    return null;
  }
}

/** Reads a text file for evaluation (a one-line error when missing or empty). */
export function readTextFile(path: string, flag = "--file"): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new TsmoeError(`${flag}: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (text.length === 0) throw new TsmoeError(`${flag}: ${path} is empty`);
  return text;
}

/** The text's tokens as llama.cpp's perplexity tool gets them (special tokens added, not parsed), and BOS. */
export function tokenizeForEval(model: Model, text: string): { tokens: number[]; bos: number | null } {
  const tok = Tokenizer.fromMetadata(model.metadata);
  if (tok.addEos) throw new TsmoeError("perplexity: models that add EOS to every sequence are not supported (as in llama.cpp)");
  return { tokens: tok.tokenize(text, { addSpecial: true, parseSpecial: false }), bos: tok.addBos ? tok.bos : null };
}

/**
 * The tokens of `chunks` whole chunks of `nCtx` tokens spread evenly over the text (chunk c of n starts at
 * whole chunk floor(c x available / n)), concatenated: a sample of the whole text where the first chunks
 * would be one part of it (a calibration file that is stories, then a poem, is sampled in both). One chunk,
 * or all the text holds (chunks < 0 or more), is the text unchanged: its first chunks are those.
 */
export function spreadChunks(tokens: readonly number[], nCtx: number, chunks: number): number[] {
  const available = Math.floor(tokens.length / nCtx);
  if (chunks <= 1 || chunks >= available) return [...tokens];
  const out: number[] = [];
  for (let c = 0; c < chunks; c++) {
    const start = Math.floor((c * available) / chunks) * nCtx;
    for (let i = start; i < start + nCtx; i++) out.push(tokens[i]);
  }
  return out;
}
