/**
 * `tsmoe tradeoff`: speed against quality for a grid of expert settings, measured against the model's
 * own routing on the same text. Prints a markdown table; writes JSON, CSV and an SVG chart on request.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { basename, join } from "node:path";
import type { Command } from "commander";
import { UsageError } from "../errors.ts";
import { modelSetting } from "../eval/grid.ts";
import { addExpertGridOptions, expertGridFrom, parseIntArg, parseThreadsArg, type ExpertGridValues } from "./grid-options.ts";
import { modelDescription } from "../eval/model-desc.ts";
import { csvTable, jsonRows, markdownTable } from "../eval/table.ts";
import { readTextFile, tokenizeForEval } from "../eval/text.ts";
import { TRADEOFF_COLUMNS, TRADEOFF_DATA_COLUMNS, runTradeoff, tradeoffChart } from "../eval/tradeoff.ts";
import { checkMoeOptions } from "../model/moe-check.ts";
import { addAttentionOptions, attentionFrom, type AttentionCliValues } from "./attention-options.ts";
import { checkWritable } from "./output-path.ts";
import { modelOption, openModel } from "./progress.ts";

interface TradeoffCliOptions extends ExpertGridValues, AttentionCliValues {
  model: string;
  file?: string;
  ctxSize: string;
  chunks: string;
  batchSize: string;
  threads: string;
  nGen: string;
  repetitions: string;
  out?: string;
  outJson?: string;
  outCsv?: string;
  outSvg?: string;
  outMd?: string;
  klDivergenceBase?: string;
}

/** k, k/2, k/4, ..., 1 */
function halvings(k: number): number[] {
  const out: number[] = [];
  for (let n = k; n >= 1; n = Math.floor(n / 2)) out.push(n);
  return out;
}

export function register(program: Command): void {
  const cmd = program
    .command("tradeoff")
    .description("speed vs quality of expert settings against the model's own routing (perplexity, KLD, tokens/s)")
    .addOption(modelOption())
    .option("-f, --file <text>", "evaluation text")
    .option("-c, --ctx-size <n>", "tokens per perplexity chunk", "512")
    .option("--chunks <n>", "evaluate at most this many chunks (-1: all)", "-1")
    .option("-b, --batch-size <n>", "tokens per evaluation call", "2048")
    .option("-t, --threads <n>", "worker threads", String(availableParallelism()))
    .option("-n, --n-gen <n>", "tokens decoded for the decode speed test", "64")
    .option("-r, --repetitions <n>", "decode timing rounds, each timing every setting once, interleaved (after a warm-up round)", "3")
    .option("-o, --out <prefix>", "write <prefix>.md, <prefix>.json, <prefix>.csv and <prefix>.svg")
    .option("--out-md <file>", "write the markdown table here")
    .option("--out-json <file>", "write the rows as JSON here")
    .option("--out-csv <file>", "write the rows as CSV here")
    .option("--out-svg <file>", "write the chart (decode speed-up vs mean KLD, one line per mode) here")
    .option("--kl-divergence-base <file>", "keep the baseline's log-probabilities here (llama.cpp's format)");
  addAttentionOptions(cmd);
  addExpertGridOptions(cmd, { counts: "k, k/2, ..., 1", mask: "soft,hard" }).action(async (o: TradeoffCliOptions) => {
    const attention = attentionFrom(o);
    const nCtx = parseIntArg("--ctx-size", o.ctxSize, 4);
    const chunks = parseIntArg("--chunks", o.chunks, -1);
    if (chunks === 0) throw new UsageError("--chunks must be -1 (all) or at least 1");
    const nBatch = parseIntArg("--batch-size", o.batchSize, 1);
    const threads = parseThreadsArg(o.threads);
    const nGen = parseIntArg("--n-gen", o.nGen, 1);
    const reps = parseIntArg("--repetitions", o.repetitions, 1);
    const { overrideKv } = expertGridFrom(o, []); // checks the lists before the model loads
    if (!o.file) throw new UsageError("no text: pass -f FILE");
    // [flag, path] of each output file, checked before anything runs
    const output = (flag: string, own: string | undefined, ext: string): [string, string | undefined] =>
      own ? [flag, own] : ["--out", o.out && `${o.out}.${ext}`];
    const outputs = { md: output("--out-md", o.outMd, "md"), json: output("--out-json", o.outJson, "json"), csv: output("--out-csv", o.outCsv, "csv"), svg: output("--out-svg", o.outSvg, "svg") };
    for (const [flag, path] of Object.values(outputs)) if (path) checkWritable(flag, path);
    if (o.klDivergenceBase) checkWritable("--kl-divergence-base", o.klDivergenceBase);
    const text = readTextFile(o.file);

    // loaded once: its k decides the default counts, its tokenizer the tokens; every setting is a session's
    const model = (await openModel(o.model, { overrideKv, threads })).model;
    const tmp = o.klDivergenceBase ? undefined : mkdtempSync(join(tmpdir(), "tsmoe-tradeoff-"));
    try {
      const hp = model.hparams;
      if (hp.nExpert === 0) throw new UsageError(`${basename(o.model)} is a dense model: there are no experts to trade off`);
      const { tokens, bos } = tokenizeForEval(model, text);
      const settings = expertGridFrom(o, halvings(hp.nExpertUsed)).settings;
      for (const s of settings) checkMoeOptions(s.moe, hp); // every setting is checked before any run
      const title = `${modelDescription(model)}: decode speed-up vs KL divergence (${basename(o.file)}, c=${nCtx})`;
      const rows = await runTradeoff(model, modelSetting(), settings, {
        tokens,
        bos,
        nCtx,
        chunks,
        nBatch,
        nGen,
        reps,
        attention,
        basePath: o.klDivergenceBase ?? join(tmp!, "base.kld"),
        log: (line) => process.stderr.write(line + "\n"),
      });
      const md = markdownTable(TRADEOFF_COLUMNS, rows);
      process.stdout.write(md);
      const write = (path: string | undefined, content: string) => {
        if (path) {
          writeFileSync(path, content);
          process.stderr.write(`wrote ${path}\n`);
        }
      };
      const json = JSON.stringify({ model: basename(o.model), text: basename(o.file), nCtx, rows: jsonRows(TRADEOFF_DATA_COLUMNS, rows) }, null, 2) + "\n";
      const csv = csvTable(TRADEOFF_DATA_COLUMNS, rows);
      const svg = tradeoffChart(rows, title);
      write(outputs.md[1], md);
      write(outputs.json[1], json);
      write(outputs.csv[1], csv);
      write(outputs.svg[1], svg);
    } finally {
      if (tmp) rmSync(tmp, { recursive: true, force: true });
      await model.dispose();
    }
  });
}
