/**
 * Perplexity as llama.cpp's perplexity tool computes it: the text is cut into chunks of n_ctx tokens,
 * each chunk is evaluated from an empty cache with its first token replaced by BOS (when the vocabulary
 * adds BOS), and only the second half is scored: the logits at positions n_ctx/2 .. n_ctx-2 predict
 * the tokens after them. PPL = exp(mean NLL), its uncertainty = PPL * stderr(NLL).
 */
import { UsageError } from "../errors.ts";
import { fmt } from "./format.ts";
import { scoredPerChunk } from "./kld-file.ts";

export interface ChunkPlan {
  nCtx: number;
  nChunk: number;
  /** first scored logit position (n_ctx/2) */
  first: number;
  /** scored positions per chunk */
  nScored: number;
}

/** Chunks for `nTokens` tokens of text (`chunks` < 0 or undefined: all of them). */
export function planChunks(nTokens: number, nCtx: number, chunks?: number): ChunkPlan {
  if (!Number.isInteger(nCtx) || nCtx < 4) throw new UsageError(`--ctx-size must be an integer >= 4 (got ${nCtx})`);
  if (nTokens < 2 * nCtx)
    throw new UsageError(
      `you need at least ${2 * nCtx} tokens to evaluate perplexity with a context of ${nCtx}; the text tokenizes to only ${nTokens} tokens`,
    );
  const nChunkMax = Math.floor(nTokens / nCtx);
  const nChunk = chunks === undefined || chunks < 0 ? nChunkMax : Math.min(chunks, nChunkMax);
  if (nChunk < 1) throw new UsageError(`--chunks must be at least 1 (got ${chunks})`);
  return { nCtx, nChunk, first: Math.floor(nCtx / 2), nScored: scoredPerChunk(nCtx) };
}

/** The tokens evaluated for chunk i: n_ctx tokens of the text, the first replaced by BOS when given. */
export function chunkTokens(tokens: ArrayLike<number>, plan: ChunkPlan, i: number, bos: number | null): number[] {
  const start = i * plan.nCtx;
  const out = Array.from({ length: plan.nCtx }, (_, k) => tokens[start + k]);
  if (bos !== null) out[0] = bos;
  return out;
}

/** Negative log-likelihood of `tok` under the softmax of `logits` (float32 probabilities, like llama.cpp). */
export function tokenNll(logits: Float32Array, tok: number): number {
  let max = logits[0];
  for (let i = 1; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.fround(Math.exp(Math.fround(logits[i] - max)));
  const prob = Math.fround(Math.fround(Math.exp(Math.fround(logits[tok] - max))) / sum);
  return -Math.log(prob);
}

export class PerplexityAccumulator {
  nll = 0;
  nll2 = 0;
  count = 0;

  add(nll: number): void {
    this.nll += nll;
    this.nll2 += nll * nll;
    this.count++;
  }

  /** the running estimate exp(mean NLL) */
  get ppl(): number {
    return Math.exp(this.nll / this.count);
  }

  /** final PPL and its uncertainty (llama.cpp's formula); err is NaN when undefined */
  final(): { ppl: number; err: number } {
    const mean = this.nll / this.count;
    const ppl = Math.exp(mean);
    const variance = this.nll2 / this.count - mean * mean;
    const err = variance > 0 && this.count > 1 ? Math.sqrt(variance / (this.count - 1)) * ppl : Number.NaN;
    return { ppl, err };
  }
}

/** `[3]12.3456,` as llama.cpp prints after each chunk */
export function chunkEstimate(chunk: number, ppl: number): string {
  return `[${chunk}]${ppl.toFixed(4)},`;
}

export function finalEstimateLine(r: { ppl: number; err: number }): string {
  return `Final estimate: PPL = ${fmt(r.ppl, 0, 4)} +/- ${fmt(r.err, 0, 5)}`;
}
