/**
 * The speed/quality trade-off of expert settings (`tsmoe tradeoff`): the model's own routing is the
 * baseline (perplexity run that writes a KL-divergence base file); each setting of the grid is then
 * compared against it on the same chunks (perplexity, mean KLD, same top token) and timed (prompt
 * tokens/s during that evaluation, decode tokens/s llama-bench style), with the mean experts it used.
 */
import type { Model, Session, SessionOptions } from "../model/api.ts";
import { Rng } from "../sample/rng.ts";
import { meanExperts } from "./moe-report.ts";
import type { ExpertSetting } from "./grid.ts";
import { KldBaseReader, KldBaseWriter } from "./kld-file.ts";
import { planChunks } from "./perplexity.ts";
import { runKlDivergence, runPerplexity } from "./run-chunks.ts";
import { timeDecode } from "./speed.ts";
import type { Column } from "./table.ts";
import { lineChartSvg, type ChartPoint, type ChartSeries } from "./svg-chart.ts";

export interface TradeoffRow {
  setting: ExpertSetting;
  /** configured experts per token (the model's k for the baseline), null for dynamic routing */
  experts: number | null;
  meanExperts: number;
  /** tokens/s of the quality run (one pass over the chunks, not interleaved) */
  promptTps: number;
  /** decode tokens/s over the timing rounds: median, lowest, highest */
  decode: Spread;
  /** decode speed relative to the baseline's in the same round: median, lowest, highest over the rounds */
  speedup: Spread;
  ppl: number;
  pplErr: number;
  /** PPL / PPL(baseline) - 1 */
  pplChange: number;
  kld: number;
  kldErr: number;
  sameTop: number;
}

export interface TradeoffOptions {
  tokens: number[];
  bos: number | null;
  nCtx: number;
  chunks: number;
  nBatch: number;
  /** decode test: tokens per run and timing rounds */
  nGen: number;
  reps: number;
  /** where the baseline's log-probabilities go */
  basePath: string;
  /** KV cache type and flash attention of the session */
  attention?: Pick<SessionOptions, "kvType" | "flashAttention">;
  log: (line: string) => void;
}

/** median and range of a sample */
export interface Spread {
  median: number;
  lo: number;
  hi: number;
}

export function spreadOf(xs: number[]): Spread {
  const v = [...xs].sort((a, b) => a - b);
  const mid = v.length >> 1;
  const median = v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
  return { median, lo: v[0], hi: v[v.length - 1] };
}

/**
 * Decode speed of every setting (the baseline first), timed interleaved so that the slow and fast phases of
 * a shared machine fall on all settings alike: after one uncounted warm-up round, each of `rounds` rounds
 * decodes nGen tokens once per setting (from an empty cache, the same random tokens for every setting of a
 * round, starting one setting later each round). Speed-ups are ratios to the baseline of the same round.
 */
export async function timeInterleaved(
  session: Session,
  settings: ExpertSetting[],
  o: { nGen: number; rounds: number; nVocab: number; bos: number | null; log?: (line: string) => void },
): Promise<{ decode: Spread; speedup: Spread }[]> {
  const tps: number[][] = settings.map(() => []);
  for (let round = 0; round <= o.rounds; round++) {
    if (round > 0) o.log?.(`tradeoff: timing round ${round}/${o.rounds}`);
    for (let j = 0; j < settings.length; j++) {
      const i = (j + round) % settings.length;
      session.setMoe(settings[i].moe);
      const seconds = await timeDecode(session, o.nGen, o.nVocab, new Rng(1234 + round), o.bos);
      if (round > 0) tps[i].push(o.nGen / seconds);
    }
  }
  return tps.map((xs) => ({ decode: spreadOf(xs), speedup: spreadOf(xs.map((v, r) => v / tps[0][r])) }));
}

/**
 * Runs the baseline (`baseline.moe`, normally the model's routing) and then every setting on one session of
 * `model`, changing only its expert setting (each run starts from an empty cache); then times the decode
 * speed of all of them interleaved (timeInterleaved).
 */
export async function runTradeoff(model: Model, baseline: ExpertSetting, settings: ExpertSetting[], o: TradeoffOptions): Promise<TradeoffRow[]> {
  const plan = planChunks(o.tokens.length, o.nCtx, o.chunks);
  const nVocab = model.hparams.nVocab;
  const session = model.createSession({ nCtx: o.nCtx, moe: baseline.moe, ...o.attention });
  const writer = new KldBaseWriter(o.basePath, {
    nCtx: o.nCtx,
    nVocab,
    nChunk: plan.nChunk,
    tokens: Int32Array.from(o.tokens.slice(0, plan.nChunk * o.nCtx)),
  });
  o.log(`tradeoff: ${baseline.label}: perplexity over ${plan.nChunk} chunks of ${o.nCtx} tokens`);
  let run;
  try {
    run = await runPerplexity(session, o.tokens, plan, { nVocab, bos: o.bos, nBatch: o.nBatch, kldOut: writer });
  } finally {
    writer.close();
  }
  const final = run.acc.final();
  const quality: Omit<TradeoffRow, "decode" | "speedup">[] = [
    {
      setting: baseline,
      experts: model.hparams.nExpertUsed,
      meanExperts: meanExperts(session.moeStats()),
      promptTps: run.tokensEvaluated / run.evalSeconds,
      ppl: final.ppl,
      pplErr: final.err,
      pplChange: 0,
      kld: 0,
      kldErr: 0,
      sameTop: 1,
    },
  ];
  const reader = new KldBaseReader(o.basePath);
  try {
    for (const setting of settings) {
      o.log(`tradeoff: ${setting.label}`);
      session.setMoe(setting.moe);
      const kld = await runKlDivergence(session, reader, { nVocab, bos: o.bos, nBatch: o.nBatch });
      const s = kld.acc.summary();
      quality.push({
        setting,
        experts: setting.nExpert ?? null,
        meanExperts: meanExperts(session.moeStats()),
        promptTps: kld.tokensEvaluated / kld.evalSeconds,
        ppl: s.ppl,
        pplErr: s.pplErr,
        pplChange: s.ppl / final.ppl - 1,
        kld: s.kld,
        kldErr: s.kldErr,
        sameTop: s.sameTop,
      });
    }
  } finally {
    reader.close();
  }
  o.log(`tradeoff: decode speed, ${o.reps} rounds of ${o.nGen} tokens per setting, interleaved`);
  const speeds = await timeInterleaved(session, [baseline, ...settings], { nGen: o.nGen, rounds: o.reps, nVocab, bos: o.bos, log: o.log });
  return quality.map((q, i) => ({ ...q, ...speeds[i] }));
}

const r4 = (v: number) => (Number.isFinite(v) ? Math.round(v * 1e4) / 1e4 : null);

export const TRADEOFF_COLUMNS: Column<TradeoffRow>[] = [
  { title: "setting", key: "setting", text: (r) => r.setting.label, value: (r) => r.setting.label },
  { title: "mode", key: "mode", text: (r) => r.setting.mode, value: (r) => r.setting.mode },
  { title: "experts", key: "experts", text: (r) => (r.experts === null ? "-" : String(r.experts)), value: (r) => r.experts, align: "right" },
  { title: "mean experts", key: "mean_experts", text: (r) => (Number.isFinite(r.meanExperts) ? r.meanExperts.toFixed(2) : "-"), value: (r) => r4(r.meanExperts), align: "right" },
  { title: "prompt t/s", key: "prompt_tps", text: (r) => r.promptTps.toFixed(1), value: (r) => r4(r.promptTps), align: "right" },
  { title: "decode t/s", key: "decode_tps", text: (r) => r.decode.median.toFixed(1), value: (r) => r4(r.decode.median), align: "right" },
  { title: "speed-up (range)", key: "speedup", text: (r) => `${r.speedup.median.toFixed(2)}x (${r.speedup.lo.toFixed(2)}-${r.speedup.hi.toFixed(2)})`, value: (r) => r4(r.speedup.median), align: "right" },
  { title: "PPL", key: "ppl", text: (r) => r.ppl.toFixed(3), value: (r) => r4(r.ppl), align: "right" },
  { title: "PPL vs model", key: "ppl_change", text: (r) => (r.setting.mode === "model" ? "-" : `${r.pplChange >= 0 ? "+" : ""}${(100 * r.pplChange).toFixed(1)}%`), value: (r) => r4(r.pplChange), align: "right" },
  { title: "mean KLD", key: "kld", text: (r) => (r.setting.mode === "model" ? "0" : `${r.kld.toFixed(4)} ± ${r.kldErr.toFixed(4)}`), value: (r) => r4(r.kld), align: "right" },
  { title: "same top", key: "same_top", text: (r) => `${(100 * r.sameTop).toFixed(1)}%`, value: (r) => r4(r.sameTop), align: "right" },
];

/** The table's columns and the decode ranges, for JSON and CSV. */
export const TRADEOFF_DATA_COLUMNS: Column<TradeoffRow>[] = [
  ...TRADEOFF_COLUMNS,
  { title: "", key: "decode_tps_min", text: () => "", value: (r) => r4(r.decode.lo) },
  { title: "", key: "decode_tps_max", text: () => "", value: (r) => r4(r.decode.hi) },
  { title: "", key: "speedup_min", text: () => "", value: (r) => r4(r.speedup.lo) },
  { title: "", key: "speedup_max", text: () => "", value: (r) => r4(r.speedup.hi) },
];

/**
 * Decode speed-up (median, with the range over the timing rounds as an error bar) against mean KLD: one
 * line per mode, each starting at the baseline (KLD 0, 1x), which is drawn and labelled once.
 */
export function tradeoffChart(rows: TradeoffRow[], title: string): string {
  const baseline = rows.find((r) => r.setting.mode === "model");
  const modes = [...new Set(rows.filter((r) => r.setting.mode !== "model").map((r) => r.setting.mode))];
  const series: ChartSeries[] = modes.map((mode) => {
    const points: ChartPoint[] = rows
      .filter((r) => r.setting.mode === mode)
      .map((r) => ({
        x: r.kld,
        y: r.speedup.median,
        lo: r.speedup.lo,
        hi: r.speedup.hi,
        label: r.setting.nExpert !== undefined ? `N=${r.setting.nExpert}` : r.setting.label,
      }));
    if (baseline) points.push({ x: 0, y: 1 }); // the line starts at the model, labelled once below
    return { name: mode === "soft" || mode === "hard" ? `${mode} mask` : mode, points };
  });
  if (baseline) series.push({ name: "model", color: "#000", points: [{ x: 0, y: 1, lo: baseline.speedup.lo, hi: baseline.speedup.hi, label: "model" }] });
  return lineChartSvg({ title, xLabel: "mean KL divergence vs the model's routing (nats)", yLabel: "decode speed-up (x), median and range", series });
}
