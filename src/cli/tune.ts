/**
 * `tsmoe tune`: finds the per-layer expert schedule (counts, or top-p thresholds with --dynamic) with the
 * least KL divergence for a budget of routed-expert work on calibration text, and compares it with the
 * uniform settings of the same budget on that text and on held-out text. Method: src/eval/tune.ts.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { basename, join } from "node:path";
import type { Command } from "commander";
import { UsageError } from "../errors.ts";
import { modelDescription } from "../eval/model-desc.ts";
import { MoeEvaluator, type EvalText } from "../eval/moe-eval.ts";
import { markdownTable } from "../eval/table.ts";
import { readTextFile, spreadChunks, tokenizeForEval } from "../eval/text.ts";
import { measureSensitivity, tuneBudget, type TuneResult, type TuneRow } from "../eval/tune.ts";
import { sensitivityTable, tuneColumns } from "../eval/tune-report.ts";
import type { Model } from "../model/api.ts";
import { parseCumPList, parseIntArg, parseIntList, parseNumberArg } from "./grid-options.ts";
import { checkMoeValues, collect, parseKvOverride } from "./moe-options.ts";
import { modelOption, openModel } from "./progress.ts";

interface TuneCliOptions {
  model: string;
  file?: string;
  evalFile?: string;
  ctxSize: string;
  chunks: string;
  evalChunks?: string;
  batchSize: string;
  threads: string;
  budget?: string;
  moeMask: string;
  dynamic?: boolean;
  moeNExpert?: string;
  moeCumP: string;
  refine: string;
  chunkSampling: string;
  overrideKv?: string[];
}

const DEFAULT_THRESHOLDS = "0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95";

export function register(program: Command): void {
  program
    .command("tune")
    .description("the per-layer expert schedule with the least KL divergence for a budget of expert work, found on calibration text")
    .addOption(modelOption())
    .option("-f, --file <text>", "calibration text")
    .option("--budget <list>", "routed-expert work kept: mean experts per token over k, in (0, 1] (e.g. 0.5 = half; a comma list tunes each, measuring once)")
    .option("--moe-mask <mode>", "soft or hard, for every setting tried", "soft")
    .option("--dynamic", "per-layer --moe-cum-p thresholds instead of per-layer counts")
    .option("--moe-n-expert <list>", "expert counts tried in each layer (default: 1 .. k-1)")
    .option("--moe-cum-p <list>", "thresholds tried in each layer with --dynamic", DEFAULT_THRESHOLDS)
    .option("--refine <n>", "real runs per refinement round around the allocation (0: none)", "4")
    .option("--eval-file <text>", "held-out text: the settings compared are evaluated on it too")
    .option("-c, --ctx-size <n>", "tokens per perplexity chunk", "512")
    .option("--chunks <n>", "calibration chunks (-1: all the text holds)", "16")
    .option("--eval-chunks <n>", "held-out chunks (-1: all; default: as --chunks)")
    .option("--chunk-sampling <how>", "which chunks of each text are evaluated: spread (evenly over the text) or first", "spread")
    .option("-b, --batch-size <n>", "tokens per evaluation call", "2048")
    .option("-t, --threads <n>", "worker threads", String(availableParallelism()))
    .option("--override-kv <KEY=TYPE:VALUE>", "override GGUF metadata (int, float, bool, str); repeatable", collect)
    .action(async (o: TuneCliOptions) => {
      const nCtx = parseIntArg("--ctx-size", o.ctxSize, 4);
      const chunks = parseChunks("--chunks", o.chunks);
      const evalChunks = o.evalChunks === undefined ? chunks : parseChunks("--eval-chunks", o.evalChunks);
      const nBatch = parseIntArg("--batch-size", o.batchSize, 1);
      const threads = parseIntArg("--threads", o.threads, 1);
      const refine = parseIntArg("--refine", o.refine, 0);
      if (o.budget === undefined) throw new UsageError("no budget: pass --budget B (mean experts per token over k, e.g. 0.5)");
      const budgets = o.budget.split(",").map((b) => {
        const v = parseNumberArg("--budget", b);
        if (!(v > 0 && v <= 1)) throw new UsageError(`--budget: must be in (0, 1], got ${b.trim()}`);
        return v;
      });
      const sampling = o.chunkSampling;
      if (sampling !== "spread" && sampling !== "first") throw new UsageError(`--chunk-sampling: expected spread or first, got '${sampling}'`);
      const mask = o.moeMask;
      if (mask !== "soft" && mask !== "hard") throw new UsageError(`--moe-mask: expected soft or hard, got '${mask}'`);
      const dynamic = o.dynamic === true;
      const thresholds = parseCumPList("--moe-cum-p", o.moeCumP);
      for (const cumP of thresholds) checkMoeValues({ mask, cumP });
      const counts = o.moeNExpert === undefined ? undefined : parseIntList("--moe-n-expert", o.moeNExpert, 1);
      const overrideKv = (o.overrideKv ?? []).map(parseKvOverride);
      if (!o.file) throw new UsageError("no calibration text: pass -f FILE");
      const calibText = readTextFile(o.file);
      const heldOutText = o.evalFile === undefined ? undefined : readTextFile(o.evalFile, "--eval-file");

      const model = (await openModel(o.model, { overrideKv, threads, nCtx })).model;
      const tmp = mkdtempSync(join(tmpdir(), "tsmoe-tune-"));
      const log = (line: string) => process.stderr.write(line + "\n");
      const evaluators: MoeEvaluator[] = [];
      try {
        const hp = model.hparams;
        if (hp.nExpert === 0) throw new UsageError(`${basename(o.model)} is a dense model: there are no experts to tune`);
        const k = hp.nExpertUsed;
        for (const n of counts ?? []) if (n >= k) throw new UsageError(`--moe-n-expert: the counts tried must be below the model's k = ${k} (got ${n})`);
        const options = dynamic ? thresholds : (counts ?? Array.from({ length: k - 1 }, (_, i) => i + 1));
        const open = async (text: string, n: number, name: string) => {
          const t0 = performance.now();
          const ev = await MoeEvaluator.create(model, evalText(model, text, nCtx, n, sampling === "spread"), { nBatch, basePath: join(tmp, `${name}.kld`) });
          evaluators.push(ev);
          log(`tune: ${name}: the model's own run over ${ev.nChunk} chunks of ${nCtx} tokens: PPL ${ev.base.ppl.toFixed(3)} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
          return ev;
        };
        const calib = await open(calibText, chunks, "calibration");
        const t0 = performance.now();
        const cfg = { k, mask, dynamic, options, refine, log } as const;
        const sensitivity = await measureSensitivity(calib, cfg);
        const sensitivitySeconds = (performance.now() - t0) / 1000;
        const results: { r: TuneResult; seconds: number }[] = [];
        for (const budget of budgets) {
          const t1 = performance.now();
          results.push({ r: await tuneBudget(calib, cfg, sensitivity, budget), seconds: (performance.now() - t1) / 1000 });
        }
        const model0 = (run: TuneRow["calib"], heldOut?: TuneRow["calib"]): TuneRow => ({ schedule: { label: "model", moe: { mask }, flags: "" }, calib: run, heldOut });
        const held = heldOutText === undefined ? undefined : await open(heldOutText, evalChunks, "held-out");
        if (held) {
          for (const { r } of results)
            for (const row of [r.tuned, r.uniform, r.cumP]) {
              row.heldOut = await held.evaluate(row.schedule.moe);
              log(`tune: budget ${r.budget}: held-out: ${row.schedule.label}: KLD ${row.heldOut.kld.toFixed(4)}`);
            }
        }
        const out: string[] = [];
        out.push(`# tsmoe tune: ${modelDescription(model)}`);
        out.push("");
        out.push(
          `${mask} mask, ${dynamic ? "per-layer top-p thresholds" : "per-layer counts"}; calibration ${basename(o.file)} ` +
            `(${calib.nChunk} chunks of ${nCtx})${held ? `, held-out ${basename(o.evalFile!)} (${held.nChunk} chunks)` : ""}, ${sampling === "spread" ? "chunks spread over each text" : "each text's first chunks"}. ` +
            `Sensitivity: ${sensitivity.length * (sensitivity[0]?.options.length - 1)} runs in ${sensitivitySeconds.toFixed(0)} s.`,
        );
        for (const { r, seconds } of results) {
          out.push("");
          out.push(`## Budget ${r.budget}: ${(r.budget * k).toFixed(2)} of k = ${k} routed experts per token`);
          out.push("");
          out.push(
            `Search: ${r.runs} runs in ${seconds.toFixed(0)} s; the first allocation measured KLD ${r.start.calib.kld.toFixed(4)} (the per-layer losses predicted ` +
              `${r.predicted.toFixed(4)}), the refinement ended at ${r.tuned.calib.kld.toFixed(4)}. Tuned schedule:`,
          );
          out.push("");
          out.push(`    ${r.tuned.schedule.flags}`);
          out.push("");
          out.push(markdownTable(tuneColumns(held !== undefined), [model0(calib.base, held?.base), r.tuned, r.uniform, r.cumP]));
        }
        out.push(`## Per-layer sensitivity`);
        out.push("");
        out.push(`Mean KLD on the calibration text when only that layer changes${dynamic ? " (experts per token in that layer)" : ""}:`);
        out.push("");
        out.push(sensitivityTable(sensitivity, dynamic));
        process.stdout.write(out.join("\n"));
      } finally {
        for (const ev of evaluators) ev.close();
        rmSync(tmp, { recursive: true, force: true });
        await model.dispose();
      }
    });
}

function parseChunks(flag: string, s: string): number {
  const n = parseIntArg(flag, s, -1);
  if (n === 0) throw new UsageError(`${flag} must be -1 (all) or at least 1`);
  return n;
}

function evalText(model: Model, text: string, nCtx: number, chunks: number, spread: boolean): EvalText {
  const { tokens, bos } = tokenizeForEval(model, text);
  return { tokens: spread ? spreadChunks(tokens, nCtx, chunks) : tokens, bos, nCtx, chunks };
}
