/**
 * `tsmoe perplexity`: llama-perplexity. Perplexity over chunks of `-c` tokens (second half of each chunk
 * scored, BOS first), printed as running estimates and `Final estimate: PPL = X +/- Y`.
 * `--kl-divergence-base FILE` saves the full-vocabulary log-probabilities in llama.cpp's file format;
 * with `--kl-divergence` the run is compared against such a file instead (tokens come from the file).
 */
import type { Command } from "commander";
import { UsageError } from "../errors.ts";
import { parseIntArg, parseThreadsArg } from "./grid-options.ts";
import { formatMeanExperts, formatMoeStats } from "../eval/moe-report.ts";
import { KldBaseReader, KldBaseWriter } from "../eval/kld-file.ts";
import { KLD_CHUNK_HEADER, kldChunkLine, kldReport } from "../eval/kld-stats.ts";
import { chunkEstimate, finalEstimateLine, planChunks } from "../eval/perplexity.ts";
import { runKlDivergence, runPerplexity, type ChunkProgress } from "../eval/run-chunks.ts";
import { readTextFile, tokenizeForEval, bosToken } from "../eval/text.ts";
import type { Model, MoeLayerStats, MoeOptions } from "../model/api.ts";
import { addAttentionOptions, attentionFrom, type AttentionCliValues } from "./attention-options.ts";
import { addMoeOptions, moeOptionsFrom, type MoeCliValues } from "./moe-options.ts";
import { checkWritable } from "./output-path.ts";
import { modelOption, openModel } from "./progress.ts";

interface PerplexityCliOptions extends MoeCliValues, AttentionCliValues {
  model: string;
  file?: string;
  ctxSize: string;
  batchSize: string;
  chunks: string;
  threads?: string;
  klDivergenceBase?: string;
  klDivergence?: boolean;
}

function etaLine(p: ChunkProgress): string {
  return `perplexity: ${p.seconds.toFixed(2)} seconds per pass - ETA ${((p.seconds * p.nChunk) / 60).toFixed(2)} minutes\n`;
}

export function register(program: Command): void {
  const cmd = program
    .command("perplexity")
    .description("perplexity of a text (llama-perplexity), KL-divergence base files and comparisons")
    .addOption(modelOption())
    .option("-f, --file <text>", "text file to evaluate (not needed with --kl-divergence)")
    .option("-c, --ctx-size <n>", "tokens per chunk", "512")
    .option("-b, --batch-size <n>", "tokens per evaluation call", "2048")
    .option("--chunks <n>", "evaluate at most this many chunks (-1: all)", "-1")
    .option("-t, --threads <n>", "worker threads (default: number of cores)")
    .option("--kl-divergence-base <file>", "write the log-probabilities here (or read them with --kl-divergence)")
    .option("--kl-divergence", "compare this run against the --kl-divergence-base file");
  addAttentionOptions(cmd);
  addMoeOptions(cmd);
  cmd.action(async (o: PerplexityCliOptions) => {
    const attention = attentionFrom(o);
    const nCtx = parseIntArg("--ctx-size", o.ctxSize, 4);
    const nBatch = parseIntArg("--batch-size", o.batchSize, 1);
    const chunks = parseIntArg("--chunks", o.chunks, -1);
    const threads = o.threads === undefined ? undefined : parseThreadsArg(o.threads);
    const parsed = moeOptionsFrom(o);
    if (o.klDivergence && !o.klDivergenceBase)
      throw new UsageError("--kl-divergence needs --kl-divergence-base FILE (the base log-probabilities)");
    if (!o.klDivergence && !o.file) throw new UsageError("no text: pass -f FILE");
    if (chunks === 0) throw new UsageError("--chunks must be -1 (all) or at least 1");
    if (o.klDivergenceBase && !o.klDivergence) checkWritable("--kl-divergence-base", o.klDivergenceBase);
    const text = o.klDivergence ? undefined : readTextFile(o.file!);
    const base = o.klDivergence ? new KldBaseReader(o.klDivergenceBase!) : undefined;
    let model: Model | undefined;
    let moe: MoeOptions | undefined;
    try {
      ({ model, moe } = await openModel(o.model, { moe: parsed.moe, overrideKv: parsed.overrideKv, threads, stats: parsed.stats, moeCache: parsed.moeCache, moePrefetch: parsed.moePrefetch }));
      const nVocab = model.hparams.nVocab;
      if (base) {
        const session = model.createSession({ nCtx: base.header.nCtx, moe, moeStats: parsed.stats, ...attention });
        const nChunk = chunks > 0 ? Math.min(chunks, base.header.nChunk) : base.header.nChunk;
        process.stderr.write(`kl_divergence: computing over ${nChunk} chunks, n_ctx=${base.header.nCtx}, batch_size=${nBatch}\n`);
        const run = await runKlDivergence(session, base, {
          nVocab,
          bos: bosToken(model),
          nBatch,
          chunks,
          onChunk: (p, acc) => {
            if (p.chunk === 1) {
              process.stderr.write(etaLine(p));
              process.stdout.write(`\n${KLD_CHUNK_HEADER}\n`);
            }
            process.stdout.write(kldChunkLine(p.chunk, acc.summary()) + "\n");
          },
        });
        process.stdout.write("\n" + kldReport(run.acc));
        finish(model, session.moeStats(), parsed.stats);
      } else {
        const { tokens, bos } = tokenizeForEval(model, text!);
        const plan = planChunks(tokens.length, nCtx, chunks);
        const writer = o.klDivergenceBase
          ? new KldBaseWriter(o.klDivergenceBase, {
              nCtx,
              nVocab,
              nChunk: plan.nChunk,
              tokens: Int32Array.from(tokens.slice(0, plan.nChunk * nCtx)),
            })
          : undefined;
        if (writer) process.stderr.write(`perplexity: saving all logits to ${o.klDivergenceBase}\n`);
        process.stderr.write(`perplexity: calculating perplexity over ${plan.nChunk} chunks, n_ctx=${nCtx}, batch_size=${nBatch}\n`);
        const session = model.createSession({ nCtx, moe, moeStats: parsed.stats, ...attention });
        try {
          const run = await runPerplexity(session, tokens, plan, {
            nVocab,
            bos,
            nBatch,
            kldOut: writer,
            onChunk: (p, acc) => {
              if (p.chunk === 1) process.stderr.write(etaLine(p));
              process.stdout.write(chunkEstimate(p.chunk, acc.ppl));
            },
          });
          process.stdout.write("\n");
          const final = run.acc.final();
          if (Number.isNaN(final.err)) process.stderr.write("warning: too few scored tokens for an uncertainty\n");
          process.stdout.write(finalEstimateLine(final) + "\n");
          process.stderr.write(`perplexity: ${run.tokensEvaluated} tokens in ${run.evalSeconds.toFixed(2)} s (${(run.tokensEvaluated / run.evalSeconds).toFixed(2)} tokens per second)\n`);
        } finally {
          writer?.close();
        }
        finish(model, session.moeStats(), parsed.stats);
      }
    } finally {
      base?.close();
      await model?.dispose();
    }
  });
}

function finish(model: Model, stats: MoeLayerStats[], showStats: boolean): void {
  if (model.hparams.nExpert > 0) process.stderr.write(formatMeanExperts(stats, model.hparams) + "\n");
  if (showStats && model.hparams.nExpert > 0) process.stderr.write(formatMoeStats(stats, model.streaming?.stats()) + "\n");
}
