/**
 * `tsmoe eval -m FILE --tokens 1,15,27 --logits-out OUT.json`: evaluates the tokens in one sequence from
 * position 0 and writes the raw logits of every position, in the layout of the golden files in
 * ../shared/fixtures: {"tokens": [...], "n_vocab": V, "logits": [[V floats] per position]}.
 * Accepts every MoE option, --override-kv and llama.cpp's -ctk / -ctv / -fa (./attention-options.ts).
 */
import { closeSync, openSync, writeSync } from "node:fs";
import type { Command } from "commander";
import { UsageError } from "../errors.ts";
import { parseThreadsArg } from "./grid-options.ts";
import type { Model, MoeOptions } from "../model/api.ts";
import { addAttentionOptions, attentionFrom, type AttentionCliValues } from "./attention-options.ts";
import { formatMoeStats } from "../eval/moe-report.ts";
import { addMoeOptions, moeOptionsFrom, type MoeCliValues } from "./moe-options.ts";
import { checkWritable } from "./output-path.ts";
import { DEFAULT_MODEL, openModel } from "./progress.ts";

interface EvalCliOptions extends MoeCliValues, AttentionCliValues {
  model: string;
  tokens: string;
  logitsOut?: string;
  threads?: string;
}

/** "1,15,27" -> [1, 15, 27] (whitespace allowed around items) */
export function parseTokenList(text: string): number[] {
  const items = text.split(",").map((s) => s.trim());
  if (items.length === 0 || items.some((s) => !/^\d+$/.test(s)))
    throw new UsageError(`--tokens: expected comma-separated token ids (e.g. 1,15,27), got '${text}'`);
  return items.map(Number);
}

/** float32 value printed so that it reads back to the same float32 (at most 9 significant digits) */
function f32Text(v: number): string {
  if (!Number.isFinite(v)) throw new UsageError(`eval: non-finite logit ${v}`);
  return String(Number(v.toPrecision(9)));
}

const pause = new Int32Array(new SharedArrayBuffer(4));

/**
 * Writes all of `text` to fd, however much each call takes: stdout may be a non-blocking pipe, whose
 * writes stop short or fail with EAGAIN while the reader is behind (then wait a millisecond and go on).
 */
function writeAll(fd: number, text: string): void {
  const buf = Buffer.from(text);
  for (let off = 0; off < buf.length; ) {
    try {
      off += writeSync(fd, buf, off);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EPIPE" && fd === 1) process.exit(0); // a closed stdout ends the command quietly
      if (code !== "EAGAIN") throw e;
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}

/** Writes the logits JSON row by row (large vocabularies make big files). */
export function writeLogitsJson(path: string, tokens: number[], nVocab: number, logits: Float32Array): void {
  const fd = path === "-" ? 1 : openSync(path, "w");
  try {
    writeAll(fd, `{"tokens": [${tokens.join(", ")}], "n_vocab": ${nVocab}, "logits": [`);
    for (let p = 0; p < tokens.length; p++) {
      const row: string[] = new Array(nVocab);
      for (let i = 0; i < nVocab; i++) row[i] = f32Text(logits[p * nVocab + i]);
      writeAll(fd, `${p ? ", " : ""}[${row.join(", ")}]`);
    }
    writeAll(fd, "]}\n");
  } finally {
    if (fd !== 1) closeSync(fd);
  }
}

export function register(program: Command): void {
  const cmd = program
    .command("eval")
    .description("evaluate token ids in one batch and write the logits of every position as JSON")
    .option("-m, --model <file>", "GGUF model", DEFAULT_MODEL)
    .requiredOption("--tokens <ids>", "comma-separated token ids, e.g. 1,15,27")
    .option("--logits-out <file>", "where to write the JSON (- for stdout)", "-")
    .option("-t, --threads <n>", "worker threads (default: number of cores)");
  addAttentionOptions(cmd);
  addMoeOptions(cmd);
  cmd.action(async (o: EvalCliOptions) => {
    const tokens = parseTokenList(o.tokens);
    const attention = attentionFrom(o);
    const threads = o.threads === undefined ? undefined : parseThreadsArg(o.threads);
    checkWritable("--logits-out", o.logitsOut ?? "-");
    const parsed = moeOptionsFrom(o);
    let model: Model | undefined;
    let moe: MoeOptions | undefined;
    try {
      ({ model, moe } = await openModel(o.model, { moe: parsed.moe, overrideKv: parsed.overrideKv, threads, stats: parsed.stats, moeCache: parsed.moeCache, moePrefetch: parsed.moePrefetch }));
      const nVocab = model.hparams.nVocab;
      const session = model.createSession({ nCtx: Math.max(tokens.length, 1), moe, moeStats: parsed.stats, ...attention });
      const logits = await session.eval(tokens, { allLogits: true });
      writeLogitsJson(o.logitsOut ?? "-", tokens, nVocab, logits);
      if (parsed.stats && model.hparams.nExpert > 0) process.stderr.write(formatMoeStats(session.moeStats(), model.streaming?.stats()) + "\n");
    } finally {
      await model?.dispose();
    }
  });
}
