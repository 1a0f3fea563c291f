/**
 * The speed/quality trade-off of expert settings (`tsmoe tradeoff`): the model's own routing is the
 * baseline (perplexity run that writes a KL-divergence base file); each setting of the grid is then
 * compared against it on the same chunks (perplexity, mean KLD, same top token) and timed (prompt
 * tokens/s during that evaluation, decode tokens/s llama-bench style), with the mean experts it used.
 */
import type { Model } from "../model/api.ts";
import { meanExperts } from "../cli/moe-options.ts";
import type { ExpertSetting } from "./grid.ts";
import { KldBaseReader, KldBaseWriter } from "./kld-file.ts";
import { planChunks } from "./perplexity.ts";
import { runKlDivergence, runPerplexity } from "./run-chunks.ts";
import { measure } from "./speed.ts";
import type { Column } from "./table.ts";
import { lineChartSvg, type ChartSeries } from "./svg-chart.ts";

export interface TradeoffRow {
  setting: ExpertSetting;
  /** configured experts per token (the model's k for the baseline), null for dynamic routing */
  experts: number | null;
  meanExperts: number;
  promptTps: number;
  decodeTps: number;
  decodeSd: number;
  /** decode tokens/s relative to the baseline */
  speedup: number;
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
  /** decode test: tokens and repetitions */
  nGen: number;
  reps: number;
  /** where the baseline's log-probabilities go */
  basePath: string;
  log: (line: string) => void;
}

/**
 * Runs the baseline (`baseline.moe`, normally the model's routing) and then every setting on one session of
 * `model`, changing only its expert setting (each run starts from an empty cache).
 */
export async function runTradeoff(model: Model, baseline: ExpertSetting, settings: ExpertSetting[], o: TradeoffOptions): Promise<TradeoffRow[]> {
  const plan = planChunks(o.tokens.length, o.nCtx, o.chunks);
  const nVocab = model.hparams.nVocab;
  const session = model.createSession({ nCtx: o.nCtx, moe: baseline.moe });
  const decodeSpeed = () => measure(session, { kind: "tg", n: o.nGen }, { reps: o.reps, nVocab, nBatch: o.nBatch, bos: o.bos });
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
  const baseExperts = meanExperts(session.moeStats());
  const baseDecode = await decodeSpeed();
  const final = run.acc.final();
  const base: TradeoffRow = {
    setting: baseline,
    experts: model.hparams.nExpertUsed,
    meanExperts: baseExperts,
    promptTps: run.tokensEvaluated / run.evalSeconds,
    decodeTps: baseDecode.mean,
    decodeSd: baseDecode.sd,
    speedup: 1,
    ppl: final.ppl,
    pplErr: final.err,
    pplChange: 0,
    kld: 0,
    kldErr: 0,
    sameTop: 1,
  };
  const rows: TradeoffRow[] = [base];
  const reader = new KldBaseReader(o.basePath);
  try {
    for (const setting of settings) {
      o.log(`tradeoff: ${setting.label}`);
      session.setMoe(setting.moe);
      const kld = await runKlDivergence(session, reader, { nVocab, bos: o.bos, nBatch: o.nBatch });
      const experts = meanExperts(session.moeStats());
      const decode = await decodeSpeed();
      const s = kld.acc.summary();
      rows.push({
        setting,
        experts: setting.nExpert ?? null,
        meanExperts: experts,
        promptTps: kld.tokensEvaluated / kld.evalSeconds,
        decodeTps: decode.mean,
        decodeSd: decode.sd,
        speedup: decode.mean / base.decodeTps,
        ppl: s.ppl,
        pplErr: s.pplErr,
        pplChange: s.ppl / base.ppl - 1,
        kld: s.kld,
        kldErr: s.kldErr,
        sameTop: s.sameTop,
      });
    }
  } finally {
    reader.close();
  }
  return rows;
}

const r4 = (v: number) => (Number.isFinite(v) ? Math.round(v * 1e4) / 1e4 : null);

export const TRADEOFF_COLUMNS: Column<TradeoffRow>[] = [
  { title: "setting", key: "setting", text: (r) => r.setting.label, value: (r) => r.setting.label },
  { title: "mode", key: "mode", text: (r) => r.setting.mode, value: (r) => r.setting.mode },
  { title: "experts", key: "experts", text: (r) => (r.experts === null ? "-" : String(r.experts)), value: (r) => r.experts, align: "right" },
  { title: "mean experts", key: "mean_experts", text: (r) => (Number.isFinite(r.meanExperts) ? r.meanExperts.toFixed(2) : "-"), value: (r) => r4(r.meanExperts), align: "right" },
  { title: "prompt t/s", key: "prompt_tps", text: (r) => r.promptTps.toFixed(1), value: (r) => r4(r.promptTps), align: "right" },
  { title: "decode t/s", key: "decode_tps", text: (r) => `${r.decodeTps.toFixed(1)} ± ${r.decodeSd.toFixed(1)}`, value: (r) => r4(r.decodeTps), align: "right" },
  { title: "speed-up", key: "speedup", text: (r) => `${r.speedup.toFixed(2)}x`, value: (r) => r4(r.speedup), align: "right" },
  { title: "PPL", key: "ppl", text: (r) => r.ppl.toFixed(3), value: (r) => r4(r.ppl), align: "right" },
  { title: "PPL vs model", key: "ppl_change", text: (r) => (r.setting.mode === "model" ? "-" : `${r.pplChange >= 0 ? "+" : ""}${(100 * r.pplChange).toFixed(1)}%`), value: (r) => r4(r.pplChange), align: "right" },
  { title: "mean KLD", key: "kld", text: (r) => (r.setting.mode === "model" ? "0" : `${r.kld.toFixed(4)} ± ${r.kldErr.toFixed(4)}`), value: (r) => r4(r.kld), align: "right" },
  { title: "same top", key: "same_top", text: (r) => `${(100 * r.sameTop).toFixed(1)}%`, value: (r) => r4(r.sameTop), align: "right" },
];

/** Decode speed-up against mean KLD: one line per mode, each starting at the baseline (KLD 0, 1x). */
export function tradeoffChart(rows: TradeoffRow[], title: string): string {
  const baseline = rows.find((r) => r.setting.mode === "model");
  const modes = [...new Set(rows.filter((r) => r.setting.mode !== "model").map((r) => r.setting.mode))];
  const series: ChartSeries[] = modes.map((mode) => {
    const points = rows
      .filter((r) => r.setting.mode === mode)
      .map((r) => ({ x: r.kld, y: r.speedup, label: r.setting.nExpert !== undefined ? `N=${r.setting.nExpert}` : r.setting.label }));
    if (baseline) points.push({ x: 0, y: 1, label: "model" });
    return { name: mode === "soft" || mode === "hard" ? `${mode} mask` : mode, points };
  });
  return lineChartSvg({ title, xLabel: "mean KL divergence vs the model's routing (nats)", yLabel: "decode speed-up (x)", series });
}
