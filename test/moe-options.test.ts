/**
 * The MoE command-line options (src/cli/moe-options.ts): parsing through commander, every error (one-line
 * UsageError), validation against the model's hyperparameters (src/model/moe-check.ts), the dense-model
 * warning, the stats table (src/eval/moe-report.ts).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addMoeOptions, moeOptionsFrom, parseKvOverride, type MoeCliValues } from "../src/cli/moe-options.ts";
import { formatMeanExperts, formatMoeStats, meanExperts } from "../src/eval/moe-report.ts";
import { TsmoeError, UsageError } from "../src/errors.ts";
import { checkMoeOptions } from "../src/model/moe-check.ts";
import { writeRandomModel } from "../src/gguf/random-model.ts";
import { loadModel } from "../src/model/load.ts";
import type { MoeLayerStats, MoeOptions } from "../src/model/api.ts";
import { runCli } from "./helpers.ts";

function parse(args: string[]) {
  const cmd = addMoeOptions(new Command().exitOverride());
  cmd.parse(args, { from: "user" });
  return moeOptionsFrom(cmd.opts<MoeCliValues>());
}

/** The UsageError (or TsmoeError) message `fn` throws (fails when it throws nothing or another kind of error). */
function usageError(fn: () => unknown, kind: typeof TsmoeError = UsageError): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(kind);
    const msg = (err as Error).message;
    expect(msg).not.toContain("\n");
    return msg;
  }
  throw new Error("no error thrown");
}

const qwen3moe = { arch: "qwen3moe", nExpert: 128, nExpertUsed: 8, nLayer: 48 };

describe("parsing", () => {
  it("gives no routing options when none are given", () => {
    expect(parse([])).toEqual({ moe: undefined, overrideKv: [], stats: false });
    expect(parse(["--moe-mask", "soft"]).moe).toBeUndefined();
  });

  it("--moe-prefetch on|off (absent: the default, on when streaming)", () => {
    expect(parse([]).moePrefetch).toBeUndefined();
    expect(parse(["--moe-prefetch", "off"]).moePrefetch).toBe(false);
    expect(parse(["--moe-prefetch", "on"]).moePrefetch).toBe(true);
    expect(() => parse(["--moe-prefetch", "maybe"])).toThrow(/argument 'maybe' is invalid\. Allowed choices are on, off/);
  });

  it("parses every option", () => {
    const r = parse([
      "--moe-n-expert", "4",
      "--moe-mask", "hard",
      "--moe-n-expert-layers", "0-3:8, 4-47:2",
      "--moe-cum-p", "0.9",
      "--moe-ser", "2,0.25",
      "--moe-stats",
      "--override-kv", "qwen3moe.expert_used_count=int:6",
      "--override-kv", "general.name=str:a=b:c",
    ]);
    expect(r.moe?.nExpert).toBe(4);
    expect(r.moe?.mask).toBe("hard");
    expect(r.moe?.layers?.size).toBe(48);
    expect(r.moe?.layers?.get(3)).toBe(8);
    expect(r.moe?.layers?.get(4)).toBe(2);
    expect(r.moe?.layers?.get(47)).toBe(2);
    expect(r.moe?.cumP).toBe(0.9);
    expect(r.moe?.ser).toEqual({ kmin: 2, t: 0.25 });
    expect(r.stats).toBe(true);
    expect(r.overrideKv).toEqual([
      { key: "qwen3moe.expert_used_count", type: "int", value: 6 },
      { key: "general.name", type: "str", value: "a=b:c" },
    ]);
  });

  it("accepts single layers, the hard mask alone and boundary values", () => {
    expect(parse(["--moe-n-expert-layers", "7:1"]).moe?.layers).toEqual(new Map([[7, 1]]));
    expect(parse(["--moe-mask", "hard"]).moe).toEqual({ mask: "hard" });
    expect(parse(["--moe-cum-p", "1"]).moe?.cumP).toBe(1);
    expect(parse(["--moe-cum-p-layers", "0-1:0.9, 3:1"]).moe?.layerCumP).toEqual(new Map([[0, 0.9], [1, 0.9], [3, 1]]));
    expect(parse(["--moe-ser", "1,0"]).moe?.ser).toEqual({ kmin: 1, t: 0 });
    expect(parse(["--moe-ser", "3,1"]).moe?.ser).toEqual({ kmin: 3, t: 1 });
  });

  it("parses --override-kv like llama.cpp", () => {
    expect(parseKvOverride("a.b=float:-2.5e-1")).toEqual({ key: "a.b", type: "float", value: -0.25 });
    expect(parseKvOverride("x=bool:true")).toEqual({ key: "x", type: "bool", value: true });
    expect(parseKvOverride("x=bool:false")).toEqual({ key: "x", type: "bool", value: false });
    expect(parseKvOverride("x=str:")).toEqual({ key: "x", type: "str", value: "" });
    expect(parseKvOverride("x=int:-3")).toEqual({ key: "x", type: "int", value: -3 });
  });
});

describe("parse errors (one-line UsageError)", () => {
  it.each([
    [["--moe-n-expert", "0"], /--moe-n-expert 0: must be at least 1/],
    [["--moe-n-expert", "-2"], /at least 1/],
    [["--moe-n-expert", "2.5"], /expected an integer/],
    [["--moe-n-expert", "four"], /expected an integer/],
    [["--moe-mask", "medium"], /--moe-mask: expected soft or hard/],
    [["--moe-n-expert-layers", "0-3"], /malformed item '0-3'/],
    [["--moe-n-expert-layers", "0-3:8,,5:2"], /malformed item ''/],
    [["--moe-n-expert-layers", "a:2"], /malformed/],
    [["--moe-n-expert-layers", "0-3:x"], /malformed/],
    [["--moe-n-expert-layers", "4-2:1"], /backwards/],
    [["--moe-n-expert-layers", "0-3:0"], /at least 1/],
    [["--moe-n-expert-layers", "0-3:2,3:4"], /layer 3 is named twice/],
    [["--moe-cum-p", "0"], /--moe-cum-p: P must be in \(0, 1\]/],
    [["--moe-cum-p", "1.01"], /P must be in/],
    [["--moe-cum-p", "-0.5"], /P must be in/],
    [["--moe-cum-p", "abc"], /expected a number/],
    [["--moe-cum-p-layers", "0-1:0"], /--moe-cum-p-layers: P must be in \(0, 1\]/],
    [["--moe-cum-p-layers", "0:0.5,0:0.6"], /layer 0 is named twice/],
    [["--moe-cum-p-layers", "0:x"], /--moe-cum-p-layers \(layers 0\): expected a number/],
    [["--moe-cum-p-layers", "0.5"], /--moe-cum-p-layers: malformed item/],
    [["--moe-ser", "2"], /expected KMIN,T/],
    [["--moe-ser", "0,0.5"], /KMIN must be at least 1/],
    [["--moe-ser", "1.5,0.5"], /expected an integer/],
    [["--moe-ser", "2,1.5"], /T must be in \[0, 1\]/],
    [["--moe-ser", "2,-0.1"], /T must be in/],
    [["--override-kv", "novalue"], /--override-kv: malformed 'novalue'/],
    [["--override-kv", "=int:3"], /malformed/],
    [["--override-kv", "a.b=4"], /invalid type/],
    [["--override-kv", "a.b=uint:4"], /invalid type/],
    [["--override-kv", "a.b=int:4x"], /expected an integer/],
    [["--override-kv", "a.b=float:"], /expected a number/],
    [["--override-kv", "a.b=bool:yes"], /invalid boolean 'yes'/],
    [["--override-kv", `a=str:${"x".repeat(128)}`], /longer than 127/],
    [["--override-kv", `${"k".repeat(128)}=int:1`], /key longer than 127/],
  ])("%j", (args, message) => {
    expect(usageError(() => parse(args))).toMatch(message);
  });
});

describe("validation against the model", () => {
  const v = (moe: MoeOptions | undefined, hp = qwen3moe) => checkMoeOptions(moe, hp);
  const K = (p: ReturnType<typeof v>, il: number) => p.layer(il, qwen3moe.nExpertUsed, qwen3moe.nExpert);

  it("accepts valid options and returns the policy: {K, computed, cumP} per layer", () => {
    const moe: MoeOptions = { mask: "soft", nExpert: 128, layers: new Map([[47, 1]]), cumP: 1, layerCumP: new Map([[3, 0.5]]), ser: { kmin: 9, t: 0 } };
    const soft = v(moe);
    expect([K(soft, 0), K(soft, 3), K(soft, 47)]).toEqual([{ K: 128, computed: 128, cumP: 1 }, { K: 128, computed: 128, cumP: 0.5 }, { K: 1, computed: 1, cumP: 1 }]);
    expect([soft.hard, soft.ser]).toEqual([false, { kmin: 9, t: 0 }]);
    expect(K(v({ mask: "soft", layerCumP: new Map([[3, 0.5]]) }), 2).cumP).toBeUndefined();
    const hard = v({ mask: "hard", nExpert: 3 });
    expect([hard.hard, K(hard, 5)]).toEqual([true, { K: 8, computed: 3 }]);
    expect(K(v(undefined), 0)).toEqual({ K: 8, computed: 8 });
  });

  it.each([
    [{ mask: "soft", nExpert: 0 }, /--moe-n-expert 0: must be at least 1/],
    [{ mask: "soft", nExpert: 129 }, /--moe-n-expert 129: the model has only 128 experts/],
    [{ mask: "hard", nExpert: 9 }, /--moe-n-expert 9: the hard mask keeps at most the model's 8 experts/],
    [{ mask: "soft", layers: new Map([[48, 2]]) }, /layer 48 out of range \(the model has layers 0-47\)/],
    [{ mask: "soft", layers: new Map([[-1, 2]]) }, /layer -1 out of range/],
    [{ mask: "soft", layers: new Map([[3, 200]]) }, /layer 3 count 200: the model has only 128 experts/],
    [{ mask: "hard", layers: new Map([[3, 12]]) }, /layer 3 count 12: the hard mask keeps at most/],
    [{ mask: "soft", layers: new Map([[3, 0]]) }, /layer 3 count 0: must be at least 1/],
    [{ mask: "soft", cumP: 0 }, /--moe-cum-p/],
    [{ mask: "soft", cumP: 2 }, /--moe-cum-p/],
    [{ mask: "soft", layerCumP: new Map([[48, 0.5]]) }, /--moe-cum-p-layers: layer 48 out of range \(the model has layers 0-47\)/],
    [{ mask: "soft", layerCumP: new Map([[3, 0]]) }, /--moe-cum-p-layers: P must be in \(0, 1\], got 0 for layer 3/],
    [{ mask: "soft", ser: { kmin: 0, t: 0.5 } }, /KMIN must be at least 1/],
    [{ mask: "soft", ser: { kmin: 1, t: 1.5 } }, /T must be in \[0, 1\]/],
  ] as [MoeOptions, RegExp][])("%o", (moe, message) => {
    expect(usageError(() => v(moe))).toMatch(message);
  });

  it("uses the expert count after --override-kv (the hparams it is given)", () => {
    expect(v({ mask: "hard", nExpert: 10 }, { ...qwen3moe, nExpertUsed: 10 }).layer(0, 10, 128)).toEqual({ K: 10, computed: 10 });
  });

});

describe("statistics output", () => {
  const stats: MoeLayerStats[] = [
    { layer: 0, tokens: 10, meanExperts: 4, massKept: 1, load: [10, 10, 10, 10, 0, 0, 0, 0], entropy: 1.5 },
    { layer: 1, tokens: 30, meanExperts: 2, massKept: 0.625, load: [0, 5, 25, 30, 0, 0, 0, 0], entropy: 2.0 },
  ];

  it("averages experts per token over layers weighted by tokens", () => {
    expect(meanExperts(stats)).toBeCloseTo((10 * 4 + 30 * 2) / 40, 12);
    expect(formatMeanExperts(stats, { nExpert: 8, nExpertUsed: 4 })).toBe("mean experts per token: 2.50 (model: 4 of 8)");
    expect(formatMeanExperts([])).toBe("mean experts per token: n/a");
  });

  it("prints a per-layer table with busiest and idlest expert", () => {
    const lines = formatMoeStats(stats).split("\n");
    expect(lines[0].split(/\s{2,}/)).toEqual(["layer", "tokens", "experts", "mass kept", "busiest", "idlest", "entropy"]);
    expect(lines[1].trim().split(/\s{2,}/)).toEqual(["0", "10", "4.00", "100.0%", "#0 25.0%", "#4 0.0%", "1.500"]);
    expect(lines[2].trim().split(/\s{2,}/)).toEqual(["1", "30", "2.00", "62.5%", "#3 50.0%", "#0 0.0%", "2.000"]);
    expect(lines).toHaveLength(3);
    // a session without SessionOptions.moeStats has only tokens and mean experts
    const plain = formatMoeStats([{ layer: 0, tokens: 10, meanExperts: 4 }]).split("\n");
    expect(plain[1].trim().split(/\s{2,}/)).toEqual(["0", "10", "4.00", "-", "-", "-", "-"]);
  });
});

describe("through the CLI (tsmoe run)", () => {
  let dir: string;
  let moe: string;
  let dense: string;
  const shape = { nLayer: 2, nEmbd: 64, nHead: 2, nHeadKv: 2, headDim: 32, nFf: 64, nFfExp: 16, seed: 3 };
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "tsmoe-moe-options-"));
    moe = await writeRandomModel(join(dir, "moe.gguf"), { arch: "qwen3moe", ...shape, nExpert: 8, nExpertUsed: 4 });
    dense = await writeRandomModel(join(dir, "dense.gguf"), { arch: "llama", ...shape });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const run = (model: string, args: string[]) => runCli(["run", "-m", model, "-p", "a", "-n", "2", "-t", "1", "--seed", "1", ...args]);

  it("reports a bad value as one error line and exit status 1", () => {
    for (const [args, message] of [
      [["--moe-n-expert", "0"], "error: --moe-n-expert 0: must be at least 1"],
      [["--moe-mask", "hard", "--moe-n-expert", "5"], "error: --moe-n-expert 5: the hard mask keeps at most the model's 4 experts per token (use --moe-mask soft for more)"],
      [["--moe-n-expert-layers", "1-2:2"], "error: --moe-n-expert-layers: layer 2 out of range (the model has layers 0-1)"],
      [["--moe-cum-p-layers", "5:0.5"], "error: --moe-cum-p-layers: layer 5 out of range (the model has layers 0-1)"],
    ] as [string[], string][]) {
      const r = run(moe, args);
      expect(r.status, args.join(" ")).toBe(1);
      expect(r.stderr.trim().split("\n").filter((l) => l.startsWith("error:"))).toEqual([message]);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });

  it("checks the options against the header before any tensor data is read", async () => {
    const read: number[] = [];
    const header: unknown[] = [];
    const load = loadModel(moe, {
      threads: 1,
      onProgress: (done) => read.push(done),
      onHeader: (hp) => {
        header.push(hp);
        throw new UsageError("stop here");
      },
    });
    await expect(load).rejects.toThrow("stop here");
    expect(header).toEqual([{ arch: "qwen3moe", nExpert: 8, nExpertUsed: 4, nLayer: 2 }]);
    expect(read).toEqual([]);
    // without a throw the same load goes on to read the tensors
    const model = await loadModel(moe, { threads: 1, onProgress: (done) => read.push(done), onHeader: () => {} });
    await model.dispose();
    expect(read.length).toBeGreaterThan(1);
  });

  it("prints the mean experts and the --moe-stats table; warns and ignores the options on a dense model", () => {
    const r = run(moe, ["--moe-n-expert", "2", "--moe-stats"]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain("mean experts per token: 2.00 (model: 4 of 8)");
    expect(r.stderr).toMatch(/layer\s+tokens\s+experts\s+mass kept\s+busiest\s+idlest\s+entropy\n0\s+\d+\s+2\.00\s/);
    const d = run(dense, ["--moe-n-expert", "2", "--moe-stats"]);
    expect(d.status, d.stderr).toBe(0);
    const warning = "warning: the model (llama) is dense (no experts): the MoE options are ignored";
    expect(d.stderr.split("\n").filter((l) => l === warning)).toHaveLength(1);
    expect(run(dense, []).stderr).not.toContain("warning:");
  });
});
