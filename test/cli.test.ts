/**
 * The user commands on generated models: `tsmoe` / `run` (generation, sampling options, chat), `bench`
 * and `tradeoff` (grids, md/CSV/JSON/SVG outputs); bad values give one-line errors and exit code 1;
 * `--help` lists every option.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { buildProgram } from "../src/cli/main.ts";
import { renderBar } from "../src/cli/progress.ts";
import { TsmoeError } from "../src/errors.ts";
import { expandLlamaFlags } from "../src/cli/run.ts";
import { writeRandomModel } from "../src/gguf/random-model.ts";
import { ROOT, expectOneLineError, runCli } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "tsmoe-cli-"));
const moe = join(dir, "moe.gguf");
const dense = join(dir, "dense.gguf");
const textPath = join(dir, "text.txt");

const SHAPE = { nLayer: 2, nEmbd: 64, nHead: 4, nHeadKv: 2, headDim: 16, nVocab: 512, nCtx: 256 };

beforeAll(async () => {
  await writeRandomModel(moe, { arch: "qwen3moe", seed: 3, ...SHAPE, nExpert: 8, nExpertUsed: 4, nFfExp: 16, chatTemplate: true });
  await writeRandomModel(dense, { arch: "llama", seed: 4, ...SHAPE, nFf: 64 });
  const words = "once upon a time there was a little girl who lived in a house near the big green wood".split(" ");
  writeFileSync(textPath, Array.from({ length: 160 }, (_, i) => words[(i * 7) % words.length]).join(" ") + "\n");
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the command line in this process and checks it fails with a one-line TsmoeError (printed as `error: ...`, exit 1). */
async function expectUserError(args: string[], re: RegExp): Promise<void> {
  let err: unknown;
  try {
    await buildProgram().parseAsync(["node", "tsmoe", ...args]);
  } catch (e) {
    err = e;
  }
  expect(err, args.join(" ")).toBeInstanceOf(TsmoeError);
  expect((err as Error).message).not.toContain("\n");
  expect((err as Error).message).toMatch(re);
}


describe("tsmoe run (the default command)", () => {
  it("greedy generation is reproducible and streams after the prompt; timings go to stderr", () => {
    const args = ["-m", moe, "-p", "once upon a time", "-n", "12", "--temp", "0"];
    const a = runCli(args);
    expect(a.status, a.stderr).toBe(0);
    expect(a.stdout.startsWith("once upon a time")).toBe(true);
    expect(a.stdout.length).toBeGreaterThan("once upon a time".length);
    expect(runCli(["run", ...args]).stdout).toBe(a.stdout);
    expect(a.stderr).toMatch(/load time = +\d+\.\d+ ms/);
    expect(a.stderr).toMatch(/prompt eval time = +\d+\.\d+ ms \/ +\d+ tokens/);
    expect(a.stderr).toMatch(/eval time = +\d+\.\d+ ms \/ +11 runs/); // 12 tokens sampled, the last one not evaluated
    expect(a.stderr).toMatch(/sampling time = +\d+\.\d+ ms \/ +12 runs/);
    expect(a.stderr).toMatch(/mean experts per token: 4\.00 \(model: 4 of 8\)/);
  });

  it("the same seed gives the same text; --no-display-prompt hides the prompt; --moe-n-expert routes fewer experts", () => {
    const args = ["-m", moe, "-p", "the girl", "-n", "16", "-s", "7", "--temp", "1.5", "--top-k", "0", "--min-p", "0"];
    const a = runCli(args);
    const b = runCli(args);
    expect(a.status).toBe(0);
    expect(a.stderr).toMatch(/sampler seed: 7/);
    expect(b.stdout).toBe(a.stdout);
    const hidden = runCli([...args, "--no-display-prompt", "--moe-n-expert", "2", "--moe-mask", "hard"]);
    expect(hidden.status, hidden.stderr).toBe(0);
    expect(hidden.stdout.startsWith("the girl")).toBe(false);
    expect(hidden.stderr).toMatch(/mean experts per token: 2\.00/);
  });

  it("chat mode reads user turns from stdin and uses the model's chat template", async () => {
    const r = runCli(["-m", moe, "--conversation", "--system-prompt", "be brief", "-n", "4", "--temp", "0"], { input: "hello\nhow are you\n" });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("> hello");
    expect(r.stdout).toContain("> how are you");
    expect(r.stderr).toMatch(/prompt eval time/);
    await expectUserError(["-m", dense, "--conversation", "--chat-template", "nope"], /--chat-template: unknown template 'nope'/);
  });

  it("Ctrl-C stops generation cleanly, still prints the timings and exits with 130 (llama-cli)", async () => {
    const child = spawn(process.execPath, [join(ROOT, "bin", "tsmoe"), "-m", moe, "-p", "hello", "-n", "-1", "-c", "256", "--temp", "0"], { cwd: ROOT });
    let out = "";
    let err = "";
    let sent = false;
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (!sent && out.length > "hello".length) {
        sent = true;
        child.kill("SIGINT");
      }
    });
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
    expect(sent).toBe(true);
    expect(code).toBe(130);
    expect(err).toMatch(/interrupted/);
    expect(err).toMatch(/eval time = +\d+\.\d+ ms/);
  });

  it("draws the loading progress bar", () => {
    expect(renderBar("loading model", 512, 1024, 80)).toBe(`loading model [${"#".repeat(20)}${".".repeat(20)}]  50% 0.0/0.0 MiB`);
    expect(renderBar("x", 3 * 1048576, 3 * 1048576, 60)).toMatch(/^x \[#+\] 100% 3\.0\/3\.0 MiB$/);
  });

  it("maps llama.cpp's -cnv and -sys", () => {
    expect(expandLlamaFlags(["node", "tsmoe", "-cnv", "-sys", "hi", "--", "-cnv"])).toEqual([
      "node",
      "tsmoe",
      "--conversation",
      "--system-prompt",
      "hi",
      "--",
      "-cnv",
    ]);
  });

  it("rejects bad values with one-line errors", async () => {
    expectOneLineError(["-m", moe, "--temp", "hot"], /--temp: expected a number/);
    await expectUserError(["-m", moe, "--top-p", "1.5"], /--top-p/);
    await expectUserError(["-m", moe, "-n", "x"], /--n-predict: expected an integer/);
    await expectUserError(["-m", moe, "--moe-n-expert", "9"], /only 8 experts/);
    expectOneLineError(["-m", join(dir, "nope.gguf")], /model file not found/);
    await expectUserError(["-m", moe, "-p", "a", "-f", textPath], /not both/);
    await expectUserError(["-m", moe, "-c", "8", "-f", textPath], /prompt is too long/);
  });

  it("--help lists every option", () => {
    const r = runCli(["run", "--help"]);
    expect(r.status).toBe(0);
    for (const flag of ["--model", "--prompt", "--file", "--n-predict", "--ctx-size", "--threads", "--seed", "--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty", "--repeat-last-n", "--conversation", "--system-prompt", "--chat-template", "--chat-template-file", "--no-display-prompt", "--moe-n-expert", "--moe-mask", "--moe-n-expert-layers", "--moe-cum-p", "--moe-ser", "--moe-stats", "--override-kv"])
      expect(r.stdout).toContain(flag);
  });
});

describe("tsmoe bench", () => {
  it("JSON and CSV hold one row per threads x setting x test; markdown is llama-bench's table", () => {
    const args = ["bench", "-m", moe, "-p", "8", "-n", "4", "-r", "2", "-t", "1", "--moe-n-expert", "4,2", "--moe-mask", "soft,hard", "--moe-cum-p", "0.6"];
    const j = runCli([...args, "-o", "json"]);
    expect(j.status, j.stderr).toBe(0);
    const rows = JSON.parse(j.stdout) as Record<string, unknown>[];
    expect(rows.length).toBe(5 * 2);
    expect(rows.map((r) => r.test)).toEqual(Array.from({ length: 5 }, () => ["pp8", "tg4"]).flat());
    expect(rows.map((r) => r.moe_setting)).toEqual(["N=4 soft", "N=4 soft", "N=2 soft", "N=2 soft", "N=4 hard", "N=4 hard", "N=2 hard", "N=2 hard", "cum-p 0.6", "cum-p 0.6"]);
    for (const r of rows) {
      expect(r.avg_ts as number).toBeGreaterThan(0);
      expect((r.samples_ts as number[]).length).toBe(2);
      expect(r.n_threads).toBe(1);
    }
    expect(rows[2].mean_experts).toBe(2);
    const c = runCli(["bench", "-m", moe, "-p", "8", "-n", "0", "-r", "1", "-t", "1", "-o", "csv"]);
    expect(c.status, c.stderr).toBe(0);
    const lines = c.stdout.trim().split("\n");
    expect(lines.length).toBe(2);
    expect(lines[0].split(",")).toContain("avg_ts");
    const m = runCli(["bench", "-m", moe, "-p", "0", "-n", "4", "-r", "1", "-t", "1"]);
    expect(m.status, m.stderr).toBe(0);
    const md = m.stdout.trim().split("\n");
    expect(md[0]).toMatch(/^\| model +\| +size \| +params \| backend \| threads \| +experts \| mask \| +test \| +t\/s \|$/);
    expect(md.length).toBe(3);
    expect(md[2]).toMatch(/\| +tg4 \| +\d+\.\d+ ± \d+\.\d+ \|$/);
  });

  it("rejects bad values and lists its options", async () => {
    await expectUserError(["bench", "-m", moe, "--moe-mask", "soft,medium"], /--moe-mask: expected soft or hard/);
    await expectUserError(["bench", "-m", moe, "-r", "0"], /--repetitions: must be at least 1/);
    expectOneLineError(["bench", "-m", moe, "-o", "xml"], /xml/);
    await expectUserError(["bench", "-m", moe, "-p", "0", "-n", "0"], /nothing to measure/);
    const h = runCli(["bench", "--help"]);
    for (const flag of ["--model", "--n-prompt", "--n-gen", "--repetitions", "--threads", "--batch-size", "--moe-n-expert", "--moe-mask", "--moe-cum-p", "--moe-ser", "--override-kv", "--output"])
      expect(h.stdout).toContain(flag);
  });
});

describe("tsmoe tradeoff", () => {
  it("measures every setting against the model's routing and writes md, JSON, CSV and SVG", () => {
    const out = join(dir, "tradeoff");
    const r = runCli(["tradeoff", "-m", moe, "-f", textPath, "-c", "32", "--chunks", "2", "-n", "4", "-r", "2", "-t", "1", "--moe-n-expert", "4,1", "--moe-cum-p", "0.5", "--moe-ser", "1,0.5", "-o", out]);
    expect(r.status, r.stderr).toBe(0);
    const json = JSON.parse(readFileSync(`${out}.json`, "utf8")) as { rows: Record<string, number | string | null>[] };
    expect(json.rows.map((x) => x.setting)).toEqual(["model", "N=4 soft", "N=1 soft", "N=4 hard", "N=1 hard", "cum-p 0.5", "ser 1,0.5"]);
    const row = (name: string) => json.rows.find((x) => x.setting === name)!;
    expect(row("model").kld).toBe(0);
    expect(row("model").same_top).toBe(1);
    // N = k is the model itself, in both masks
    expect(row("N=4 soft").kld as number).toBeLessThan(1e-4);
    expect(row("N=4 hard").ppl).toBeCloseTo(row("model").ppl as number, 2);
    expect(row("N=1 soft").kld as number).toBeGreaterThan(0.001);
    expect(row("N=1 hard").mean_experts).toBe(1);
    expect(row("cum-p 0.5").experts).toBeNull();
    expect(row("cum-p 0.5").mean_experts as number).toBeGreaterThanOrEqual(1);
    expect(row("cum-p 0.5").mean_experts as number).toBeLessThanOrEqual(4);
    for (const x of json.rows) {
      expect(x.decode_tps as number).toBeGreaterThan(0);
      expect(x.decode_tps_min as number).toBeLessThanOrEqual(x.decode_tps as number);
      expect(x.speedup_max as number).toBeGreaterThanOrEqual(x.speedup as number);
    }
    expect(row("model")).toMatchObject({ speedup: 1, speedup_min: 1, speedup_max: 1 }); // its own ratio in every round
    const csv = readFileSync(`${out}.csv`, "utf8").trim().split("\n");
    expect(csv.length).toBe(8);
    expect(csv[0]).toBe("setting,mode,experts,mean_experts,prompt_tps,decode_tps,speedup,ppl,ppl_change,kld,same_top,decode_tps_min,decode_tps_max,speedup_min,speedup_max");
    expect(readFileSync(`${out}.md`, "utf8")).toBe(r.stdout);
    const svg = readFileSync(`${out}.svg`, "utf8");
    expect(svg.startsWith("<svg xmlns=\"http://www.w3.org/2000/svg\"")).toBe(true);
    expect(svg.trim().endsWith("</svg>")).toBe(true);
    expect(svg.match(/<polyline /g)?.length).toBe(4); // soft, hard, cum-p, ser
    expect(svg.match(/>model<\/text>/g)?.length).toBe(2); // the model point labelled once (and in the legend)
    expect(r.stderr).toMatch(/timing round 2\/2/);
    expect(svg).not.toMatch(/NaN|undefined/);
  });

  it("rejects bad values and lists its options", async () => {
    expectOneLineError(["tradeoff", "-m", dense, "-f", textPath, "-c", "32"], /dense model/);
    await expectUserError(["tradeoff", "-m", moe, "-f", textPath, "--moe-ser", "2;0.2"], /--moe-ser: expected KMIN,T/);
    await expectUserError(["tradeoff", "-m", moe, "-f", textPath, "--moe-cum-p", "1.5"], /--moe-cum-p: P must be in/);
    await expectUserError(["tradeoff", "-m", moe], /no text/);
    const h = runCli(["tradeoff", "--help"]);
    for (const flag of ["--model", "--file", "--ctx-size", "--chunks", "--batch-size", "--threads", "--n-gen", "--repetitions", "--moe-n-expert", "--moe-mask", "--moe-cum-p", "--moe-ser", "--override-kv", "--out", "--out-md", "--out-json", "--out-csv", "--out-svg", "--kl-divergence-base"])
      expect(h.stdout).toContain(flag);
  });
});
