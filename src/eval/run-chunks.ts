/**
 * Drives a model over perplexity chunks (llama.cpp's perplexity tool): plain perplexity, optionally
 * saving a KL-divergence base file, or comparing against one (`--kl-divergence`).
 * Shared by `tsmoe perplexity` and `tsmoe tradeoff`.
 */
import type { Session } from "../model/api.ts";
import { TsmoeError } from "../errors.ts";
import { yieldToEventLoop } from "../sample/generate.ts";
import { encodeLogProbs, type KldBaseReader, type KldBaseWriter } from "./kld-file.ts";
import { KldAccumulator } from "./kld-stats.ts";
import { PerplexityAccumulator, chunkTokens, tokenNll, type ChunkPlan } from "./perplexity.ts";

/**
 * Evaluates one chunk from an empty cache in batches of `nBatch` and returns the logits of positions
 * plan.first .. n_ctx-1 ((n_ctx - first) rows of nVocab): positions before `first` are evaluated without
 * their logits, as llama.cpp asks only for the scored outputs.
 */
export async function evalChunkLogits(
  session: Session,
  tokens: number[],
  plan: ChunkPlan,
  nVocab: number,
  nBatch: number,
): Promise<Float32Array> {
  session.truncate(0);
  const { first, nCtx } = plan;
  for (let p = 0; p < first; p += nBatch) await session.eval(tokens.slice(p, Math.min(first, p + nBatch)));
  const out = new Float32Array((nCtx - first) * nVocab);
  for (let p = first; p < nCtx; p += nBatch) {
    const part = tokens.slice(p, Math.min(nCtx, p + nBatch));
    const logits = await session.eval(part, { allLogits: true });
    if (logits.length !== part.length * nVocab)
      throw new TsmoeError(`model returned ${logits.length} logits for ${part.length} tokens x ${nVocab} vocabulary`);
    out.set(logits, (p - first) * nVocab);
  }
  return out;
}

export interface ChunkProgress {
  /** 1-based chunk number */
  chunk: number;
  nChunk: number;
  /** seconds this chunk took */
  seconds: number;
}

export interface PerplexityRun {
  acc: PerplexityAccumulator;
  /** tokens evaluated (chunks x n_ctx) and the seconds evaluation took */
  tokensEvaluated: number;
  evalSeconds: number;
}

/** Perplexity over `plan.nChunk` chunks of `tokens`; writes each chunk's log-probs when `kldOut` is given. */
export async function runPerplexity(
  session: Session,
  tokens: ArrayLike<number>,
  plan: ChunkPlan,
  opts: {
    nVocab: number;
    bos: number | null;
    nBatch: number;
    kldOut?: KldBaseWriter;
    onChunk?: (p: ChunkProgress, acc: PerplexityAccumulator) => void;
    shouldStop?: () => boolean;
  },
): Promise<PerplexityRun> {
  const { nVocab } = opts;
  const acc = new PerplexityAccumulator();
  const records = opts.kldOut?.allocChunk();
  let evalSeconds = 0;
  let chunksDone = 0;
  for (let i = 0; i < plan.nChunk && !opts.shouldStop?.(); i++) {
    const t0 = performance.now();
    const logits = await evalChunkLogits(session, chunkTokens(tokens, plan, i, opts.bos), plan, nVocab, opts.nBatch);
    const seconds = (performance.now() - t0) / 1000;
    evalSeconds += seconds;
    const base = i * plan.nCtx + plan.first;
    for (let j = 0; j < plan.nScored; j++) {
      const row = logits.subarray(j * nVocab, (j + 1) * nVocab);
      const next = tokens[base + j + 1];
      if (records) {
        const len = opts.kldOut!.recordLen;
        acc.add(encodeLogProbs(row, nVocab, records.subarray(j * len, (j + 1) * len), next));
      } else {
        acc.add(tokenNll(row, next));
      }
    }
    if (records) opts.kldOut!.writeChunk(records);
    chunksDone++;
    opts.onChunk?.({ chunk: i + 1, nChunk: plan.nChunk, seconds }, acc);
    await yieldToEventLoop(); // a closed stdout or a signal is handled between chunks
  }
  return { acc, tokensEvaluated: chunksDone * plan.nCtx, evalSeconds };
}

export interface KldRun {
  acc: KldAccumulator;
  tokensEvaluated: number;
  evalSeconds: number;
}

/** Compares the current model against a base file chunk by chunk (tokens come from the file). */
export async function runKlDivergence(
  session: Session,
  base: KldBaseReader,
  opts: {
    nVocab: number;
    bos: number | null;
    nBatch: number;
    /** at most this many chunks (default: all in the file) */
    chunks?: number;
    onChunk?: (p: ChunkProgress, acc: KldAccumulator) => void;
    shouldStop?: () => boolean;
  },
): Promise<KldRun> {
  const { nCtx, nVocab, nChunk: fileChunks, tokens } = base.header;
  if (nVocab !== opts.nVocab)
    throw new TsmoeError(`${base.path}: inconsistent vocabulary (${nVocab} in the file, ${opts.nVocab} in the model)`);
  const nChunk = opts.chunks !== undefined && opts.chunks >= 0 ? Math.min(opts.chunks, fileChunks) : fileChunks;
  const plan: ChunkPlan = { nCtx, nChunk, first: Math.floor(nCtx / 2), nScored: base.nScored };
  const acc = new KldAccumulator(nChunk * plan.nScored);
  const records = new Uint16Array(plan.nScored * base.recordLen);
  let evalSeconds = 0;
  let chunksDone = 0;
  for (let i = 0; i < nChunk && !opts.shouldStop?.(); i++) {
    const t0 = performance.now();
    const logits = await evalChunkLogits(session, chunkTokens(tokens, plan, i, opts.bos), plan, nVocab, opts.nBatch);
    const seconds = (performance.now() - t0) / 1000;
    evalSeconds += seconds;
    base.readChunk(i, records);
    const start = i * nCtx + plan.first;
    for (let j = 0; j < plan.nScored; j++) {
      acc.add(
        logits.subarray(j * nVocab, (j + 1) * nVocab),
        nVocab,
        records.subarray(j * base.recordLen, (j + 1) * base.recordLen),
        tokens[start + j + 1],
      );
    }
    chunksDone++;
    opts.onChunk?.({ chunk: i + 1, nChunk, seconds }, acc);
    await yieldToEventLoop(); // a closed stdout or a signal is handled between chunks
  }
  return { acc, tokensEvaluated: chunksDone * nCtx, evalSeconds };
}
