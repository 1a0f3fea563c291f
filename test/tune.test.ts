/**
 * `tsmoe tune`: the budget allocator (exact multiple-choice knapsack) against brute force on synthetic
 * sensitivities, the search driver on a synthetic evaluator, and the command end to end on the embedded
 * model with a tiny calibration text.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { buildProgram } from "../src/cli/main.ts";
import { parseCumPLayerSpec, parseLayerSpec } from "../src/cli/moe-options.ts";
import { TsmoeError } from "../src/errors.ts";
import type { MoeRun } from "../src/eval/moe-eval.ts";
import { spreadChunks } from "../src/eval/text.ts";
import { allocate, layerSpec, type LayerOption } from "../src/eval/tune-alloc.ts";
import { measureSensitivity, scheduleOf, tuneBudget, type TuneConfig, type TuneEvaluator } from "../src/eval/tune.ts";
import type { MoeOptions } from "../src/model/api.ts";
import { Rng } from "../src/sample/rng.ts";
import { ROOT, runCli } from "./helpers.ts";

/** The best choice by trying every combination. */
function bruteForce(layers: LayerOption[][], budget: number): number {
  let best = Infinity;
  const walk = (l: number, cost: number, loss: number) => {
    if (cost > budget + 1e-9) return;
    if (l === layers.length) {
      best = Math.min(best, loss);
      return;
    }
    for (const o of layers[l]) walk(l + 1, cost + o.cost, loss + o.loss);
  };
  walk(0, 0, 0);
  return best;
}

/** Loss curves like measured ones: counts 1..k, the loss falling with N, a random scale per layer. */
function syntheticLayers(rng: Rng, nLayer: number, k: number): LayerOption[][] {
  return Array.from({ length: nLayer }, () => {
    const scale = 0.05 + (rng.nextU32() % 1000) / 2000;
    return Array.from({ length: k }, (_, i) => ({ cost: i + 1, loss: i + 1 === k ? 0 : scale * ((k - i - 1) / k) ** 2 * (1 + (rng.nextU32() % 100) / 400) }));
  });
}

describe("allocate (multiple-choice knapsack)", () => {
  it("finds the brute-force optimum on random sensitivities, within the budget", () => {
    const rng = new Rng(7);
    for (let trial = 0; trial < 20; trial++) {
      const layers = syntheticLayers(rng, 4, 5);
      const budget = 4 + (rng.nextU32() % 17);
      const a = allocate(layers, budget)!;
      expect(a.cost).toBeLessThanOrEqual(budget);
      expect(a.loss).toBeCloseTo(bruteForce(layers, budget), 12);
      expect(a.loss).toBeCloseTo(a.choice.reduce((s, c, l) => s + layers[l][c].loss, 0), 12);
    }
  });

  it("is exact where greedy (least loss per expert saved) is not: non-convex curves", () => {
    // greedy would take B down twice (0.5 per expert, then 0.5) for a loss of 1.0; dropping A whole costs 0.95
    const A = [{ cost: 2, loss: 0 }, { cost: 1, loss: 0.9 }, { cost: 0, loss: 0.95 }];
    const B = [{ cost: 2, loss: 0 }, { cost: 1, loss: 0.5 }, { cost: 0, loss: 1.0 }];
    const a = allocate([A, B], 2)!;
    expect(a.choice).toEqual([2, 0]);
    expect(a.loss).toBeCloseTo(0.95, 12);
  });

  it("rounds fractional costs up to the unit, so the result never exceeds the budget", () => {
    const layers = [
      [{ cost: 1.234, loss: 0.3 }, { cost: 2.51, loss: 0.1 }, { cost: 8, loss: 0 }],
      [{ cost: 1.5, loss: 0.2 }, { cost: 3.333, loss: 0.05 }, { cost: 8, loss: 0 }],
    ];
    const a = allocate(layers, 5, 0.01)!;
    expect(a.cost).toBeLessThanOrEqual(5);
    expect(a.loss).toBeCloseTo(bruteForce(layers, 5), 12);
    expect(allocate(layers, 2.7, 0.01)).toBeUndefined(); // the cheapest choice costs 2.734
  });

  it("writes per-layer values as a spec the option parsers read back", () => {
    const counts = new Map([[0, 6], [1, 4], [2, 4], [3, 4], [5, 4], [4, 2]]);
    expect(layerSpec(counts)).toBe("0:6,1-3:4,4:2,5:4");
    expect(parseLayerSpec(layerSpec(counts))).toEqual(counts);
    const ps = new Map([[0, 0.9], [1, 0.6], [2, 0.6]]);
    expect(scheduleOf({ mask: "soft", dynamic: true }, ps).flags).toBe("--moe-cum-p-layers 0:0.9,1-2:0.6");
    expect(parseCumPLayerSpec("0:0.9,1-2:0.6")).toEqual(ps);
    expect(scheduleOf({ mask: "hard", dynamic: false }, counts).flags).toBe("--moe-n-expert-layers 0:6,1-3:4,4:2,5:4 --moe-mask hard");
  });
});

/**
 * A synthetic model of 4 layers, k = 8: a layer at N loses s_l (8 - N)^2 / 64, the losses add up with a
 * penalty for adjacent reduced layers (so real runs differ from the prediction); under cum-p P a layer
 * uses 8P experts and loses like a soft count of 8P, times 0.8.
 */
function syntheticEvaluator(): TuneEvaluator & { calls: MoeOptions[] } {
  const scale = [0.4, 0.1, 0.15, 0.12];
  const k = 8;
  const layers = [0, 1, 2, 3];
  const run = (counts: number[], factor: number): MoeRun => {
    const losses = counts.map((n, l) => (scale[l] * (k - n) ** 2) / 64);
    let kld = losses.reduce((a, b) => a + b, 0) * factor;
    for (let l = 1; l < counts.length; l++) if (counts[l] < k && counts[l - 1] < k) kld += 0.002;
    const mean = counts.reduce((a, b) => a + b, 0) / counts.length;
    return { kld, kldErr: 0, ppl: 10 * Math.exp(kld), pplBase: 10, sameTop: 1 - kld, meanExperts: mean, layerExperts: new Map(counts.map((n, l) => [l, n])), count: 100 };
  };
  const calls: MoeOptions[] = [];
  return {
    calls,
    moeLayers: layers,
    nChunk: 4,
    base: run([k, k, k, k], 1),
    async evaluate(moe: MoeOptions | undefined) {
      calls.push(moe!);
      const dynamic = moe?.cumP !== undefined || moe?.layerCumP !== undefined;
      const counts = layers.map((l) => {
        const p = moe?.layerCumP?.get(l) ?? moe?.cumP;
        if (p !== undefined) return k * p;
        return moe?.layers?.get(l) ?? moe?.nExpert ?? k;
      });
      return run(counts, dynamic ? 0.8 : 1);
    },
  };
}

describe("spreadChunks (calibration chunks spread over the text)", () => {
  const tokens = Array.from({ length: 103 }, (_, i) => i); // 10 whole chunks of 10, and 3 tokens
  it("takes whole chunks evenly spaced from the first, in order", () => {
    expect(spreadChunks(tokens, 10, 2)).toEqual([...tokens.slice(0, 10), ...tokens.slice(50, 60)]);
    expect(spreadChunks(tokens, 10, 3)).toEqual([...tokens.slice(0, 10), ...tokens.slice(30, 40), ...tokens.slice(60, 70)]);
  });
  it("leaves the text as it is for one chunk or all of them", () => {
    for (const n of [-1, 1, 10, 11]) expect(spreadChunks(tokens, 10, n)).toEqual(tokens);
  });
});

describe("tune (the search, on a synthetic evaluator)", () => {
  const log = () => {};
  const tune = async (ev: TuneEvaluator, cfg: TuneConfig & { budget: number }) => {
    const sensitivity = await measureSensitivity(ev, cfg);
    return { sensitivity, ...(await tuneBudget(ev, cfg, sensitivity, cfg.budget)) };
  };

  it("allocates counts within the budget, better than uniform N, with the sensitivities it measured", async () => {
    const ev = syntheticEvaluator();
    const r = await tune(ev, { k: 8, mask: "soft", budget: 0.5, dynamic: false, options: [1, 2, 3, 4, 5, 6, 7], refine: 3, log });
    expect(r.sensitivity.map((s) => s.options.length)).toEqual([8, 8, 8, 8]);
    expect(r.sensitivity[0].options[0]).toMatchObject({ value: 1, cost: 1 });
    expect(r.sensitivity[0].options[0].loss).toBeCloseTo((0.4 * 49) / 64, 12);
    expect(r.tuned.calib.meanExperts).toBeLessThanOrEqual(4);
    expect(r.tuned.calib.kld).toBeLessThan(r.uniform.calib.kld);
    expect(r.uniform.schedule.flags).toBe("--moe-n-expert 4");
    // the most sensitive layer keeps the most experts
    const counts = r.tuned.schedule.moe.layers!;
    expect(counts.get(0)).toBe(Math.max(...counts.values()));
    expect(r.tuned.schedule.flags).toMatch(/^--moe-n-expert-layers /);
    expect(r.runs + 4 * 7).toBe(ev.calls.length);
  });

  it("with dynamic thresholds, matches --moe-cum-p to the tuned mean experts and is no worse than it", async () => {
    const ev = syntheticEvaluator();
    const r = await tune(ev, { k: 8, mask: "soft", budget: 0.5, dynamic: true, options: [0.3, 0.5, 0.7, 0.9], refine: 2, log });
    expect(r.tuned.schedule.flags).toMatch(/^--moe-cum-p-layers /);
    expect(r.tuned.calib.meanExperts).toBeLessThanOrEqual(4 * 1.002);
    expect(r.cumP.schedule.moe.cumP! * 8).toBeCloseTo(r.tuned.calib.meanExperts, 0);
    expect(r.tuned.calib.kld).toBeLessThanOrEqual(r.cumP.calib.kld);
  });

  it("with dynamic thresholds, fills the budget the options' steps left unspent (thresholds raised in thousandths)", async () => {
    const ev = syntheticEvaluator();
    const lines: string[] = [];
    // 0.3, 0.5, 0.7 cost 2.4, 4, 5.6 experts: no choice of them spends 3.4 of the 4 x 3.4 budget exactly
    const r = await tune(ev, { k: 8, mask: "soft", budget: 3.4 / 8, dynamic: true, options: [0.3, 0.5, 0.7], refine: 2, log: (l) => lines.push(l) });
    expect(r.start.calib.meanExperts).toBeLessThan(3.4 - 0.1);
    expect(r.tuned.calib.meanExperts).toBeLessThanOrEqual(3.4 * 1.002 + 1e-9);
    expect(r.tuned.calib.meanExperts).toBeGreaterThan(3.4 - 0.01); // 0.001 more in 4 layers costs 0.008 here
    expect(r.tuned.calib.kld).toBeLessThan(r.start.calib.kld);
    expect(lines.some((l) => /fill \+0\.\d+: --moe-cum-p-layers .*\(better\)/.test(l))).toBe(true);
  });

  it("the refinement never leaves the budget and never ends worse on the calibration text than the allocation it started from", async () => {
    for (const dynamic of [false, true])
      for (const budget of [0.25, 0.4, 0.5, 0.6, 0.75]) {
        const ev = syntheticEvaluator();
        const options = dynamic ? [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9] : [1, 2, 3, 4, 5, 6, 7];
        const r = await tune(ev, { k: 8, mask: "soft", budget, dynamic, options, refine: 6, log });
        expect(r.tuned.calib.meanExperts, `${dynamic} ${budget}`).toBeLessThanOrEqual(8 * budget * 1.002 + 1e-9);
        expect(r.tuned.calib.kld, `${dynamic} ${budget}`).toBeLessThanOrEqual(r.start.calib.kld);
        expect(r.start.calib.meanExperts).toBeLessThanOrEqual(8 * budget * 1.002 + 1e-9);
      }
  });

  it("fails with one line when the budget is below the cheapest options", async () => {
    const ev = syntheticEvaluator();
    await expect(tune(ev, { k: 8, mask: "soft", budget: 0.1, dynamic: false, options: [2, 4], refine: 0, log })).rejects.toThrow(/no schedule within the budget of 0.80/);
  });
});

describe("tsmoe tune (CLI, embedded model)", () => {
  const dir = mkdtempSync(join(tmpdir(), "tsmoe-tune-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const text = readFileSync(join(ROOT, "models", "eval.txt"), "utf8");
  const calib = join(dir, "calib.txt");
  const held = join(dir, "held.txt");
  writeFileSync(calib, text.slice(0, 2000));
  writeFileSync(held, text.slice(100000, 102000));

  it("prints a ready schedule and compares it with uniform N and cum-p on calibration and held-out text", () => {
    const r = runCli(["tune", "-f", calib, "--eval-file", held, "-c", "64", "--chunks", "1", "-t", "1", "--budget", "0.5", "--moe-n-expert", "2,4", "--refine", "1"]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/tune: sensitivity 12\/12: layer 5 N=4/);
    const flags = /^ {4}(--moe-n-expert-layers (\S+))$/m.exec(r.stdout);
    expect(flags, r.stdout).not.toBeNull();
    const counts = parseLayerSpec(flags![2]);
    expect([...counts.keys()]).toEqual([0, 1, 2, 3, 4, 5]);
    expect([...counts.values()].reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(24);
    const row = (name: string) => r.stdout.split("\n").find((l) => l.startsWith(`| ${name}`))!.split("|").map((c) => c.trim());
    expect(row("model")[3]).toBe("8.00");
    const tuned = row("tuned");
    expect(tuned[2]).toBe(`\`${flags![1]}\``);
    expect(Number(tuned[3])).toBeLessThanOrEqual(4);
    expect(tuned.length).toBe(12); // calibration and held-out columns
    expect(row("uniform N=4")[2]).toBe("`--moe-n-expert 4`");
    expect(row("cum-p 0.")[2]).toMatch(/^`--moe-cum-p 0\.\d+`$/);
    // the search never keeps a schedule worse than uniform N on the calibration text
    expect(Number(tuned[4].split(" ")[0])).toBeLessThanOrEqual(Number(row("uniform N=4")[4].split(" ")[0]));
    expect(r.stdout).toMatch(/\| layer \| +N=2 \| +N=4 \| +N=8 \|/);
  });

  it("tsmoe tradeoff takes schedules as settings (--moe-n-expert-layers, --moe-cum-p-layers; repeatable)", () => {
    const out = join(dir, "tradeoff");
    const r = runCli(["tradeoff", "-f", calib, "-c", "64", "--chunks", "1", "-n", "2", "-r", "1", "-t", "1", "--moe-n-expert", "4", "--moe-mask", "soft",
      "--moe-n-expert-layers", "0:6,1-5:4", "--moe-n-expert-layers", "0-5:4", "--moe-cum-p-layers", "0-5:1", "-o", out]);
    expect(r.status, r.stderr).toBe(0);
    const rows = (JSON.parse(readFileSync(`${out}.json`, "utf8")) as { rows: Record<string, number | string | null>[] }).rows;
    expect(rows.map((x) => x.setting)).toEqual(["model", "N=4 soft", "layers 0:6,1-5:4 soft", "layers 0-5:4 soft", "cum-p layers 0-5:1"]);
    const row = (name: string) => rows.find((x) => x.setting === name)!;
    expect(row("layers 0-5:4 soft").kld).toBe(row("N=4 soft").kld); // the same routing, spelled per layer
    expect(row("layers 0:6,1-5:4 soft").mean_experts).toBeCloseTo(26 / 6, 3);
    expect(row("cum-p layers 0-5:1").kld as number).toBeLessThan(1e-4); // P = 1 is the model
    expect(row("layers 0:6,1-5:4 soft").mode).toBe("layers");
  });

  it("rejects bad values with one line", async () => {
    const bad = async (args: string[], re: RegExp) => {
      let err: unknown;
      try {
        await buildProgram().parseAsync(["node", "tsmoe", "tune", ...args]);
      } catch (e) {
        err = e;
      }
      expect(err, args.join(" ")).toBeInstanceOf(TsmoeError);
      expect((err as Error).message).toMatch(re);
    };
    await bad(["-f", calib], /no budget/);
    await bad(["-f", calib, "--budget", "1.5"], /--budget: must be in \(0, 1\]/);
    await bad(["-f", calib, "--budget", "x"], /--budget: expected a number/);
    await bad(["--budget", "0.5"], /no calibration text/);
    await bad(["-f", calib, "--budget", "0.5", "--moe-mask", "firm"], /--moe-mask: expected soft or hard/);
    await bad(["-f", calib, "--budget", "0.5", "-c", "64", "--moe-n-expert", "2,8", "-t", "1"], /below the model's k = 8/);
    await bad(["-f", calib, "--budget", "0.5", "--chunks", "0"], /--chunks must be -1/);
    await bad(["-f", calib, "--budget", "0.5", "--chunk-sampling", "random"], /--chunk-sampling: expected spread or first/);
  });
});
