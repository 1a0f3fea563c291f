/**
 * `tsmoe tune`: the per-layer expert schedule with the least KL divergence for a budget of routed-expert
 * work, found on calibration text.
 *
 *  1. Sensitivity: for every MoE layer and every option (an expert count N < k, or with `dynamic` a top-p
 *     threshold P < 1), one run in which only that layer takes the option: its mean KLD against the
 *     model's own routing is the layer's loss, its measured experts per token in that layer the cost.
 *  2. Allocation: assuming the losses add up across layers (on the embedded model they are sub-additive:
 *     the sum overestimates an allocation's measured KLD by 14-34%, bench/RESULTS-tune.md, but ranks
 *     schedules well), the exact multiple-choice knapsack (tune-alloc.ts)
 *     picks one option per layer with the least summed loss within budget x k x layers experts.
 *  3. Verification and refinement with real runs: the allocation runs for real; with `dynamic` the
 *     experts it really uses (layers interact) may exceed the budget, and the budget given to the
 *     allocation shrinks by the overshoot until it fits. Then a local search: moving one step of experts
 *     from one layer to another (the moves the per-layer losses rate best, `refine` runs per round) while
 *     a real run improves the KLD within the budget. With `dynamic`, a fill stage then spends what the
 *     options' steps left of the budget: every layer's threshold raised by the same offset (bisection on
 *     real runs, the offset in thousandths), kept when it lowers the KLD within the budget.
 *  4. The uniform settings of the same budget run too (uniform N = floor(budget x k), the --moe-cum-p
 *     whose mean experts match the tuned schedule's); a uniform setting within the budget that beats the
 *     schedule found becomes the result (it is a schedule too), so the result is never worse than those on
 *     the calibration text.
 * Step 1 (measureSensitivity) does not depend on the budget: `tsmoe tune --budget 0.75,0.5,0.25` measures
 * once and runs steps 2-4 (tuneBudget) for each budget.
 */
import type { MoeOptions } from "../model/api.ts";
import { TsmoeError } from "../errors.ts";
import type { MoeEvaluator, MoeRun } from "./moe-eval.ts";
import { allocate, layerSpec, type LayerOption } from "./tune-alloc.ts";

export interface TuneConfig {
  /** the model's experts per token */
  k: number;
  mask: "soft" | "hard";
  /** per-layer top-p thresholds instead of per-layer counts */
  dynamic: boolean;
  /** the options tried per layer: counts in 1..k-1, or thresholds in (0, 1) (the model's own added) */
  options: number[];
  /** real runs per refinement round (0: none) */
  refine: number;
  log: (line: string) => void;
}

/** A per-layer schedule and how to ask for it on the command line. */
export interface Schedule {
  label: string;
  moe: MoeOptions;
  /** `--moe-n-expert-layers 0:6,1-5:4` or `--moe-cum-p 0.7` */
  flags: string;
}

export interface TuneRow {
  schedule: Schedule;
  calib: MoeRun;
  /** on held-out text, when asked for */
  heldOut?: MoeRun;
}

export interface LayerSensitivity {
  layer: number;
  /** option value (N or P), its cost (experts per token in the layer) and loss (KLD), the model's own last */
  options: { value: number; cost: number; loss: number }[];
}

export interface TuneResult {
  /** routed-expert work kept: mean experts per token over k */
  budget: number;
  /** the summed per-layer losses of the allocation the refinement started from */
  predicted: number;
  /** the allocation the refinement started from, measured on the calibration text */
  start: TuneRow;
  tuned: TuneRow;
  uniform: TuneRow;
  cumP: TuneRow;
  /** real runs of the search for this budget (allocation, refinement, uniform settings) */
  runs: number;
}

/** Mean experts may exceed budget x k by this fraction (dynamic routing's mean is measured, not set). */
const BUDGET_SLACK = 0.002;

/** The fill stage raises the thresholds by at most this many thousandths (bisection: 5 real runs). */
const FILL_STEPS = 31;

export function scheduleOf(cfg: Pick<TuneConfig, "mask" | "dynamic">, values: Map<number, number>, label = "tuned"): Schedule {
  const spec = layerSpec(values);
  const mask = cfg.mask === "hard" ? " --moe-mask hard" : "";
  return cfg.dynamic
    ? { label, moe: { mask: cfg.mask, layerCumP: new Map(values) }, flags: `--moe-cum-p-layers ${spec}${mask}` }
    : { label, moe: { mask: cfg.mask, layers: new Map(values) }, flags: `--moe-n-expert-layers ${spec}${mask}` };
}

/** What the search needs of an evaluator (MoeEvaluator; tests use synthetic ones). */
export type TuneEvaluator = Pick<MoeEvaluator, "moeLayers" | "nChunk" | "base" | "evaluate">;

/** Step 1: every layer's loss and cost for every option, each measured with only that layer changed. */
export async function measureSensitivity(ev: TuneEvaluator, cfg: TuneConfig): Promise<LayerSensitivity[]> {
  const layers = ev.moeLayers;
  const full = cfg.dynamic ? 1 : cfg.k;
  const values = [...new Set(cfg.options)].filter((v) => v !== full).sort((a, b) => a - b);
  const total = layers.length * values.length;
  const sensitivity: LayerSensitivity[] = [];
  for (const [li, layer] of layers.entries()) {
    const options: LayerSensitivity["options"] = [];
    for (const [vi, value] of values.entries()) {
      const t0 = performance.now();
      const r = await ev.evaluate(scheduleOf(cfg, new Map([[layer, value]])).moe);
      options.push({ value, cost: r.layerExperts.get(layer) ?? 0, loss: r.kld });
      const name = cfg.dynamic ? `P=${value}` : `N=${value}`;
      cfg.log(`tune: sensitivity ${li * values.length + vi + 1}/${total}: layer ${layer} ${name}: KLD ${r.kld.toFixed(4)}, ${options.at(-1)!.cost.toFixed(2)} experts (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    }
    options.push({ value: full, cost: ev.base.layerExperts.get(layer) ?? cfg.k, loss: 0 });
    sensitivity.push({ layer, options });
  }
  return sensitivity;
}

/** Steps 2-4 for one budget (mean experts per token over k), from the measured sensitivities. */
export async function tuneBudget(ev: TuneEvaluator, cfg: TuneConfig, sensitivity: LayerSensitivity[], budget: number): Promise<TuneResult> {
  const layers = sensitivity.map((s) => s.layer);
  const target = budget * cfg.k;
  const capacity = target * layers.length;
  let runs = 0;
  const run = async (moe: MoeOptions, chunks?: number) => {
    runs++;
    return ev.evaluate(moe, chunks);
  };
  const table: LayerOption[][] = sensitivity.map((s) => s.options);
  const unit = cfg.dynamic ? 0.01 : 1;
  const valuesOf = (choice: number[]) => new Map(choice.map((c, i) => [layers[i], sensitivity[i].options[c].value]));
  const within = (r: MoeRun) => r.meanExperts <= target * (1 + BUDGET_SLACK) + 1e-9;

  // 2-3. allocation, verified by a real run (shrinking the allocation's budget while the real one is exceeded)
  let best: { choice: number[]; row: TuneRow } | undefined;
  let predicted = NaN;
  let cap = capacity;
  const tried = new Set<string>();
  for (let attempt = 0; attempt < 4; ) {
    const a = allocate(table, cap, unit);
    if (!a) break;
    const schedule = scheduleOf(cfg, valuesOf(a.choice));
    if (tried.has(schedule.flags)) {
      cap -= unit; // the shrunk budget gave the same allocation: shrink until it changes
      continue;
    }
    tried.add(schedule.flags);
    attempt++;
    const calib = await run(schedule.moe);
    cfg.log(`tune: budget ${budget}: allocation: ${schedule.flags}: predicted KLD ${a.loss.toFixed(4)}, measured ${calib.kld.toFixed(4)} at ${calib.meanExperts.toFixed(2)} experts per token`);
    if (within(calib)) {
      predicted = a.loss;
      best = { choice: a.choice, row: { schedule, calib } };
      break;
    }
    cap *= target / calib.meanExperts;
  }
  if (!best) throw new TsmoeError(`tune: no schedule within the budget of ${target.toFixed(2)} experts per token (the cheapest options exceed it)`);
  const start = best.row;

  // refinement: one step of experts from one layer to another, best-rated moves first (each schedule once)
  for (let round = 0; cfg.refine > 0 && round < 8; round++) {
    const from: number[] = best.choice;
    const moves: Neighbour[] = neighbours(from, table).filter((m) => m.cost <= capacity + 1e-9 && !tried.has(scheduleOf(cfg, valuesOf(m.choice)).flags));
    let improved = false;
    for (const m of moves.slice(0, cfg.refine)) {
      const schedule = scheduleOf(cfg, valuesOf(m.choice));
      tried.add(schedule.flags);
      const calib = await run(schedule.moe);
      const ok = within(calib) && calib.kld < best.row.calib.kld;
      cfg.log(`tune: budget ${budget}: refine: ${schedule.flags}: KLD ${calib.kld.toFixed(4)} at ${calib.meanExperts.toFixed(2)} experts${ok ? " (better)" : ""}`);
      if (ok) {
        best = { choice: m.choice, row: { schedule, calib } };
        improved = true;
      }
    }
    if (!improved) break;
  }

  // fill (thresholds only): the options' steps leave part of the budget unspent; raise every layer's
  // threshold by the same offset d/1000, the largest d whose real run stays within the budget (bisection,
  // the mean grows with d; on the embedded model +0.01 in every layer costs about 0.08 experts per token),
  // kept when it lowers the KLD
  if (cfg.dynamic && cfg.refine > 0 && best.row.calib.meanExperts < target) {
    const base = valuesOf(best.choice);
    const raised = (d: number) => new Map([...base].map(([l, p]) => [l, Math.min(1, Math.round(p * 1000 + d) / 1000)]));
    let lo = 0;
    let hi = FILL_STEPS + 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      const schedule = scheduleOf(cfg, raised(mid));
      const calib = await run(schedule.moe);
      const ok = within(calib);
      cfg.log(`tune: budget ${budget}: fill +${mid / 1000}: ${schedule.flags}: KLD ${calib.kld.toFixed(4)} at ${calib.meanExperts.toFixed(2)} experts${ok && calib.kld < best.row.calib.kld ? " (better)" : ""}`);
      if (ok) {
        lo = mid;
        if (calib.kld < best.row.calib.kld) best = { choice: best.choice, row: { schedule, calib } };
      } else hi = mid;
    }
  }

  // 4. the uniform settings of the same budget
  const n = Math.max(1, Math.floor(target + 1e-9));
  const uniform: Schedule = { label: `uniform N=${n}`, moe: { mask: cfg.mask, nExpert: n }, flags: `--moe-n-expert ${n}${cfg.mask === "hard" ? " --moe-mask hard" : ""}` };
  const uniformRow: TuneRow = { schedule: uniform, calib: await run(uniform.moe) };
  cfg.log(`tune: budget ${budget}: ${uniform.label}: KLD ${uniformRow.calib.kld.toFixed(4)}`);
  const p = await matchCumP(ev, cfg, best.row.calib.meanExperts, (moe, chunks) => run(moe, chunks));
  const cumP: Schedule = { label: `cum-p ${p}`, moe: { mask: cfg.mask, cumP: p }, flags: `--moe-cum-p ${p}${cfg.mask === "hard" ? " --moe-mask hard" : ""}` };
  const cumPRow: TuneRow = { schedule: cumP, calib: await run(cumP.moe) };
  cfg.log(`tune: budget ${budget}: ${cumP.label}: KLD ${cumPRow.calib.kld.toFixed(4)} at ${cumPRow.calib.meanExperts.toFixed(2)} experts per token`);
  const expressible = cfg.dynamic ? cumPRow : uniformRow;
  if (within(expressible.calib) && expressible.calib.kld < best.row.calib.kld) {
    const all = new Map(layers.map((l) => [l, cfg.dynamic ? p : n]));
    cfg.log(`tune: budget ${budget}: the uniform ${expressible.schedule.label} beats the allocation on the calibration text: it is the result`);
    best = { choice: best.choice, row: { schedule: scheduleOf(cfg, all), calib: expressible.calib } };
  }
  return { budget, predicted, start, tuned: best.row, uniform: uniformRow, cumP: cumPRow, runs };
}

interface Neighbour {
  choice: number[];
  /** summed per-layer losses and costs */
  loss: number;
  cost: number;
}

/** Schedules one option step away: one layer one option cheaper, another one option dearer; by predicted loss. */
function neighbours(choice: number[], table: LayerOption[][]): Neighbour[] {
  // options of each layer in order of cost
  const order = table.map((opts) => opts.map((_, i) => i).sort((a, b) => opts[a].cost - opts[b].cost));
  const rank = choice.map((c, l) => order[l].indexOf(c));
  const out: Neighbour[] = [];
  for (let a = 0; a < table.length; a++) {
    if (rank[a] === 0) continue;
    for (let b = 0; b < table.length; b++) {
      if (b === a || rank[b] === order[b].length - 1) continue;
      const next = [...choice];
      next[a] = order[a][rank[a] - 1];
      next[b] = order[b][rank[b] + 1];
      out.push({
        choice: next,
        loss: next.reduce((s, c, l) => s + table[l][c].loss, 0),
        cost: next.reduce((s, c, l) => s + table[l][c].cost, 0),
      });
    }
  }
  return out.sort((x, y) => x.loss - y.loss);
}

/**
 * The --moe-cum-p (two decimals) whose mean experts per token on the calibration text come closest to
 * `meanExperts`: bisection (the mean grows with P) on the first chunks, at most 8 runs.
 */
async function matchCumP(
  ev: TuneEvaluator,
  cfg: TuneConfig,
  meanExperts: number,
  run: (moe: MoeOptions, chunks?: number) => Promise<MoeRun>,
): Promise<number> {
  const chunks = Math.min(ev.nChunk, 4);
  let lo = 0;
  let hi = 100;
  let best = { p: 100, gap: Infinity };
  while (hi - lo > 1) {
    const mid = Math.round((lo + hi) / 2);
    const r = await run({ mask: cfg.mask, cumP: mid / 100 }, chunks);
    const gap = Math.abs(r.meanExperts - meanExperts);
    if (gap < best.gap) best = { p: mid, gap };
    if (r.meanExperts < meanExperts) lo = mid;
    else hi = mid;
  }
  return best.p / 100;
}
