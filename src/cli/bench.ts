/**
 * `tsmoe bench`: llama-bench for tsmoe. Every comma list makes a grid axis (threads × expert settings ×
 * tests); each cell is measured `-r` times after an uncounted warm-up and reported as mean ± sd tokens/s,
 * as a markdown table (default), CSV or JSON.
 */
import { availableParallelism } from "node:os";
import { basename } from "node:path";
import { Command, Option } from "commander";
import { UsageError } from "../errors.ts";
import type { KvOverride, Model, SessionOptions } from "../model/api.ts";
import { parseCacheSize } from "../model/expert-cache.ts";
import { addAttentionOptions, attentionFrom, type AttentionCliValues } from "./attention-options.ts";
import { modelSetting, type ExpertSetting } from "../eval/grid.ts";
import { addExpertGridOptions, expertGridFrom, parseIntArg, parseIntList, parseThreadsList, type ExpertGridValues } from "./grid-options.ts";
import { formatParams, formatSize, modelDescription } from "../eval/model-desc.ts";
import { measure, testName, type SpeedSample, type SpeedTest } from "../eval/speed.ts";
import { csvTable, jsonRows, markdownTable, type Column, type OutputFormat } from "../eval/table.ts";
import { bosToken } from "../eval/text.ts";
import { meanExperts } from "../eval/moe-report.ts";
import { moeCacheOption } from "./moe-options.ts";
import { modelOption, openModel } from "./progress.ts";

export interface BenchRow {
  modelFile: string;
  modelDesc: string;
  size: number;
  params: number;
  threads: number;
  setting: ExpertSetting;
  /** the model's experts per token (k) */
  modelK: number;
  test: SpeedTest;
  speed: SpeedSample;
  /** measured mean routed experts per token (NaN for dense models) */
  meanExperts: number;
  /** when the routed experts are streamed: the cache's size and its hit rate over the test */
  cache?: { size: string; hitRate: number };
}

function expertsText(r: BenchRow): string {
  if (r.setting.mode === "model") return String(r.modelK);
  if (r.setting.nExpert !== undefined) return String(r.setting.nExpert);
  return r.setting.label;
}

export const BENCH_COLUMNS: Column<BenchRow>[] = [
  { title: "model", key: "model_type", text: (r) => r.modelDesc, value: (r) => r.modelDesc },
  { title: "size", key: "model_size", text: (r) => formatSize(r.size), value: (r) => r.size, align: "right" },
  { title: "params", key: "model_n_params", text: (r) => formatParams(r.params), value: (r) => r.params, align: "right" },
  { title: "backend", key: "backend", text: () => "CPU", value: () => "CPU" },
  { title: "threads", key: "n_threads", text: (r) => String(r.threads), value: (r) => r.threads, align: "right" },
  { title: "experts", key: "n_expert", text: expertsText, value: (r) => r.setting.nExpert ?? (r.setting.mode === "model" ? r.modelK : null), align: "right" },
  { title: "mask", key: "moe_mask", text: (r) => (r.setting.mode === "soft" || r.setting.mode === "hard" ? r.setting.mode : "-"), value: (r) => r.setting.mode },
  { title: "test", key: "test", text: (r) => testName(r.test), value: (r) => testName(r.test), align: "right" },
  { title: "t/s", key: "avg_ts", text: (r) => `${r.speed.mean.toFixed(2)} ± ${r.speed.sd.toFixed(2)}`, value: (r) => round(r.speed.mean), align: "right" },
];

/** columns shown when the routed experts are streamed through the expert cache */
const CACHE_COLUMNS: Column<BenchRow>[] = [
  { title: "expert cache", key: "moe_cache", text: (r) => r.cache?.size ?? "-", value: (r) => r.cache?.size ?? null },
  { title: "hit rate", key: "moe_cache_hit_rate", text: (r) => (r.cache ? `${(100 * r.cache.hitRate).toFixed(1)}%` : "-"), value: (r) => (r.cache ? round(r.cache.hitRate) : null), align: "right" },
];

const EXTRA_JSON: Column<BenchRow>[] = [
  { title: "", key: "model_filename", text: () => "", value: (r) => r.modelFile },
  { title: "", key: "moe_setting", text: () => "", value: (r) => r.setting.label },
  { title: "", key: "n_prompt", text: () => "", value: (r) => (r.test.kind === "pp" ? r.test.n : 0) },
  { title: "", key: "n_gen", text: () => "", value: (r) => (r.test.kind === "tg" ? r.test.n : 0) },
  { title: "", key: "stddev_ts", text: () => "", value: (r) => round(r.speed.sd) },
  { title: "", key: "mean_experts", text: () => "", value: (r) => (Number.isFinite(r.meanExperts) ? round(r.meanExperts) : null) },
];

function round(v: number): number {
  return Math.round(v * 1e4) / 1e4;
}

export function formatBench(rows: BenchRow[], format: OutputFormat): string {
  const shown = rows.some((r) => r.cache) ? [...BENCH_COLUMNS.slice(0, -1), ...CACHE_COLUMNS, BENCH_COLUMNS.at(-1)!] : BENCH_COLUMNS;
  const cols = [...shown, ...EXTRA_JSON];
  if (format === "csv") return csvTable(cols, rows);
  if (format === "json")
    return JSON.stringify(
      jsonRows(cols, rows).map((o, i) => ({ ...o, samples_ts: rows[i].speed.samples.map(round) })),
      null,
      2,
    ) + "\n";
  return markdownTable(shown, rows);
}

export interface BenchPlan {
  model: string;
  overrideKv: KvOverride[];
  threads: number[];
  settings: ExpertSetting[];
  tests: SpeedTest[];
  reps: number;
  nBatch: number;
  /** --moe-cache SIZE: stream the routed experts through a cache of this many bytes */
  moeCache?: number;
  /** KV cache type and flash attention (-ctk / -ctv / -fa) */
  attention?: Pick<SessionOptions, "kvType" | "flashAttention">;
}

/**
 * Measures every cell of the grid: the model loads once per thread count (each count has its own worker
 * pool) into one session, whose expert setting changes from setting to setting.
 */
export async function runBench(plan: BenchPlan, open: typeof openModel = openModel): Promise<BenchRow[]> {
  const { threads, settings, tests } = plan;
  const rows: BenchRow[] = [];
  const total = threads.length * settings.length * tests.length;
  const nCtx = Math.max(...tests.map((x) => (x.kind === "pp" ? x.n : x.n + 1)));
  for (const t of threads) {
    const { model } = await open(plan.model, { checkMoe: settings.map((s) => s.moe), overrideKv: plan.overrideKv, threads: t, moeCache: plan.moeCache, nCtx });
    try {
      const session = model.createSession({ nCtx, ...plan.attention });
      for (const setting of settings) {
        session.setMoe(setting.moe);
        for (const test of tests) {
          process.stderr.write(`bench: ${rows.length + 1}/${total}: threads ${t}, ${setting.label}, ${testName(test)}\n`);
          session.resetStats();
          model.streaming?.resetStats();
          const speed = await measure(session, test, { reps: plan.reps, nVocab: model.hparams.nVocab, nBatch: plan.nBatch, bos: bosToken(model) });
          rows.push({
            modelFile: basename(plan.model),
            modelDesc: modelDescription(model),
            size: model.fileSize,
            params: model.nParams,
            threads: t,
            setting,
            modelK: model.hparams.nExpertUsed,
            test,
            speed,
            meanExperts: meanExperts(session.moeStats()),
            cache: model.streaming && cacheRow(model.streaming),
          });
        }
      }
    } finally {
      await model.dispose();
    }
  }
  return rows;
}

function cacheRow(c: NonNullable<Model["streaming"]>): BenchRow["cache"] {
  const { hits, misses } = c.stats();
  return { size: c.describe(), hitRate: hits + misses > 0 ? hits / (hits + misses) : 0 };
}

interface BenchCliOptions extends ExpertGridValues, AttentionCliValues {
  model: string;
  nPrompt: string;
  nGen: string;
  repetitions: string;
  threads: string;
  batchSize: string;
  output: string;
  moeCache?: string;
}

export function register(program: Command): void {
  const cmd = program
    .command("bench")
    .description("measure prompt (pp) and generation (tg) speed over a grid of settings, like llama-bench")
    .addOption(modelOption())
    .option("-p, --n-prompt <list>", "prompt lengths to test (comma list; 0 skips)", "512")
    .option("-n, --n-gen <list>", "generation lengths to test (comma list; 0 skips)", "128")
    .option("-r, --repetitions <n>", "repetitions of each test (after one uncounted warm-up)", "5")
    .option("-t, --threads <list>", "thread counts (comma list)", String(availableParallelism()))
    .option("-b, --batch-size <n>", "tokens per evaluation call for prompts", "2048")
    .addOption(new Option("-o, --output <format>", "output format").choices(["md", "csv", "json"]).default("md"))
    .addOption(moeCacheOption());
  addAttentionOptions(cmd);
  addExpertGridOptions(cmd, { counts: "the model's", mask: "soft" }).action(async (o: BenchCliOptions) => {
    const attention = attentionFrom(o);
    const nPrompt = parseIntList("--n-prompt", o.nPrompt, 0);
    const nGen = parseIntList("--n-gen", o.nGen, 0);
    const reps = parseIntArg("--repetitions", o.repetitions, 1);
    const threads = parseThreadsList(o.threads);
    const nBatch = parseIntArg("--batch-size", o.batchSize, 1);
    const grid = expertGridFrom(o);
    const overrideKv = grid.overrideKv;
    const settings: ExpertSetting[] = o.moeNExpert ? grid.settings : [modelSetting(), ...grid.settings];
    const tests: SpeedTest[] = [
      ...nPrompt.filter((n) => n > 0).map((n): SpeedTest => ({ kind: "pp", n })),
      ...nGen.filter((n) => n > 0).map((n): SpeedTest => ({ kind: "tg", n })),
    ];
    if (tests.length === 0) throw new UsageError("nothing to measure: all of --n-prompt and --n-gen are 0");

    const moeCache = o.moeCache === undefined ? undefined : parseCacheSize(o.moeCache);
    const rows = await runBench({ model: o.model, overrideKv, threads, settings, tests, reps, nBatch, moeCache, attention });
    process.stdout.write(formatBench(rows, o.output as OutputFormat));
  });
}
