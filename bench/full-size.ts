/**
 * tsmoe against llama.cpp (node-llama-cpp) on full-size random-weight models (made by bench/make-model.ts):
 *   npx tsx bench/full-size.ts [--dir /work/bigmodels] [--models olmoe-Q8_0,olmoe-Q4_K_M,qwen3moe-Q4_K_M,gpt-oss-MXFP4_MOE]
 *                              [--engines tsmoe,llama] [--threads 1,2] [--pp 64,512] [-n 32] [--reps 2] [--ctx 1024]
 * (also `npx tsx bench/vs-llamacpp.ts --full [same options]`). A model name M means the file DIR/M.gguf,
 * made with `npx tsx bench/make-model.ts --arch A --type T -o DIR/A-T.gguf`.
 *
 * Each engine, model and thread count runs in a child process of its own: an 18 GB model's copy in tsmoe and
 * llama.cpp's mapping of the file do not fit in RAM together, and each child's peak RSS is its own. A child
 * loads the model (timed), makes one untimed short run, then `reps` times: the first prompt length
 * (pp64) followed by `-n` decoded tokens (tg), then each longer prompt alone in a fresh session/context;
 * the best run of each is kept. Before tsmoe's children the file is read twice with `cat FILE > /dev/null`
 * and the second read is timed (the warm page cache load-time reference; a file larger than the free page
 * cache is not all warm). tsmoe's peak RSS (VmHWM) is compared with file size + its F32 KV cache at --ctx +
 * 250 MB. tsmoe plans its memory for --ctx: a model that does not fit in the memory available streams its
 * experts, and the notes under the tables say so (as they say when weights run on the reference kernels).
 * Prints markdown tables for bench/RESULTS.md. Other processes share the machine: the 1-minute load average
 * at the end of each child is printed beside its numbers.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadGguf } from "../src/gguf/reader.ts";
import { loadModel } from "../src/model/load.ts";
import { best, promptTokens, runLlama, runTsmoe, type Speed } from "./engines.ts";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const ENGINES = ["tsmoe", "llama"] as const;
type Engine = (typeof ENGINES)[number];

interface ChildResult {
  engine: Engine;
  threads: number;
  loadS: number;
  /** VmHWM of the child at the end */
  peakRssMB: number;
  /** per prompt length: tokens/s of the prompt (best run) */
  pp: Record<number, number>;
  /** decode tokens/s after the first prompt (best run) */
  tg: number;
  /** F32 KV cache bytes at --ctx (tsmoe's layout) */
  kvMB: number;
  load: number;
  /** tsmoe's load notes: experts streamed (memoryPlan), weights on the reference kernels (slowKernels) */
  notes?: string[];
}

function vmHwmMB(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
  return m ? Number(m[1]) / 1024 : process.resourceUsage().maxRSS / 1024;
}

/** Child process: one engine, one model, one thread count; prints a RESULT line. */
async function measure(engine: Engine, path: string, threads: number, pps: number[], nTg: number, reps: number, nCtx: number): Promise<void> {
  let run: (prompt: number[], nTg: number) => Promise<Speed>;
  let nVocab: number;
  let kvMB = 0;
  let dispose: () => Promise<void>;
  const notes: string[] = [];
  const t0 = performance.now();
  if (engine === "tsmoe") {
    const model = await loadModel(path, { threads, nCtx });
    for (const n of [model.memoryPlan, model.slowKernels]) if (n) notes.push(n);
    const hp = model.hparams;
    nVocab = hp.nVocab;
    kvMB = (hp.nLayer * nCtx * hp.nHeadKv * (hp.nEmbdHeadK + hp.nEmbdHeadV) * 4) / 2 ** 20;
    run = (p, n) => runTsmoe(model, p, n, nCtx);
    dispose = () => model.dispose();
  } else {
    const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
    const llama = await getLlama({ gpu: false, build: "never", maxThreads: 0, logLevel: LlamaLogLevel.error });
    const lm = await llama.loadModel({ modelPath: path });
    nVocab = (await loadGguf(path, { headerOnly: true })).tensors.get("token_embd.weight")?.shape[1] ?? 1000;
    run = (p, n) => runLlama(lm, threads, p, n, nCtx);
    dispose = () => lm.dispose();
  }
  const loadS = (performance.now() - t0) / 1000;
  await run(promptTokens(nVocab, 8), 2);
  const ppRuns: Record<number, Speed[]> = {};
  for (let r = 0; r < reps; r++)
    for (const [i, pp] of pps.entries()) (ppRuns[pp] ??= []).push(await run(promptTokens(nVocab, pp), i === 0 ? nTg : 0));
  await dispose();
  const pp: Record<number, number> = {};
  for (const n of pps) pp[n] = best(ppRuns[n]!).pp;
  const result: ChildResult = { engine, threads, loadS, peakRssMB: vmHwmMB(), pp, tg: best(ppRuns[pps[0]!]!).tg, kvMB, load: loadavg()[0]!, notes };
  console.log("RESULT " + JSON.stringify(result));
}

function child(args: string[]): ChildResult {
  const r = spawnSync(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), ...args], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 64 * 2 ** 20,
  });
  const line = r.stdout.split("\n").find((l) => l.startsWith("RESULT "));
  if (r.status !== 0 || !line) throw new Error(`child ${args.join(" ")} failed with status ${r.status}`);
  return JSON.parse(line.slice(7)) as ChildResult;
}

/** seconds of `cat path > /dev/null`, the second of two reads */
function catSeconds(path: string): number {
  spawnSync("sh", ["-c", `cat '${path}' > /dev/null`]);
  const t0 = performance.now();
  spawnSync("sh", ["-c", `cat '${path}' > /dev/null`]);
  return (performance.now() - t0) / 1000;
}

interface ModelRun {
  name: string;
  fileMB: number;
  catS?: number;
  results: ChildResult[];
}

function tables(runs: ModelRun[], pps: number[], nTg: number, nCtx: number): string[] {
  const f = (v: number | undefined, d = 2): string => (v === undefined || !Number.isFinite(v) ? "–" : v.toFixed(d));
  const ratio = (a: number | undefined, b: number | undefined): string => (a && b ? f(a / b) : "–");
  const out: string[] = [];
  const cols = [...pps.map((p) => `pp${p}`), `tg${nTg}`];
  out.push(`| model | file GiB | threads | ${cols.map((c) => `${c} tsmoe | ${c} llama.cpp | ${c} ratio`).join(" | ")} | load avg |`);
  out.push(`|---|---|---|${cols.map(() => "---|---|---|").join("")}---|`);
  for (const m of runs) {
    const threads = [...new Set(m.results.map((r) => r.threads))];
    for (const t of threads) {
      const ts = m.results.find((r) => r.engine === "tsmoe" && r.threads === t);
      const ll = m.results.find((r) => r.engine === "llama" && r.threads === t);
      const cells = [...pps.map((p) => [ts?.pp[p], ll?.pp[p]]), [ts?.tg, ll?.tg]].map(([a, b]) => `${f(a)} | ${f(b)} | ${ratio(a, b)}`);
      const loads = m.results.filter((r) => r.threads === t).map((r) => r.load.toFixed(1));
      out.push(`| ${m.name} | ${f(m.fileMB / 1024)} | ${t} | ${cells.join(" | ")} | ${loads.join(", ")} |`);
    }
  }
  out.push("");
  out.push(`| model | file GiB | tsmoe load s | cat s (warm) | load / cat | tsmoe peak RSS GiB | file + KV@${nCtx} + 250 MB | RSS / budget | llama.cpp load s | llama.cpp peak RSS GiB |`);
  out.push("|---|---|---|---|---|---|---|---|---|---|");
  for (const m of runs) {
    const ts = m.results.filter((r) => r.engine === "tsmoe");
    const ll = m.results.filter((r) => r.engine === "llama");
    const minLoad = (rs: ChildResult[]): number | undefined => (rs.length ? Math.min(...rs.map((r) => r.loadS)) : undefined);
    const maxRss = (rs: ChildResult[]): number | undefined => (rs.length ? Math.max(...rs.map((r) => r.peakRssMB)) : undefined);
    const budget = ts.length ? m.fileMB + ts[0]!.kvMB + 250 : undefined;
    const rss = maxRss(ts);
    out.push(
      `| ${m.name} | ${f(m.fileMB / 1024)} | ${f(minLoad(ts), 1)} | ${f(m.catS, 1)} | ${ratio(minLoad(ts), m.catS)} | ${f(rss && rss / 1024)} | ${f(budget && budget / 1024)} | ${ratio(rss, budget)} | ${f(minLoad(ll), 1)} | ${f(maxRss(ll) && maxRss(ll)! / 1024)} |`,
    );
  }
  return out;
}

async function main(): Promise<void> {
  const childAt = process.argv.indexOf("--child");
  const pps = arg("--pp", "64,512").split(",").map(Number);
  const nTg = Number(arg("-n", "32"));
  const reps = Number(arg("--reps", "2"));
  const nCtx = Number(arg("--ctx", "1024"));
  if (childAt >= 0) {
    const [engine, path, threads] = process.argv.slice(childAt + 1);
    await measure(engine as Engine, path!, Number(threads), pps, nTg, reps, nCtx);
    return;
  }
  const dir = arg("--dir", "/work/bigmodels");
  const models = arg("--models", "olmoe-Q8_0,olmoe-Q4_K_M,qwen3moe-Q4_K_M,gpt-oss-MXFP4_MOE").split(",");
  const engines = arg("--engines", "tsmoe,llama").split(",") as Engine[];
  const threadList = arg("--threads", "1,2").split(",").map(Number);
  for (const e of engines) if (!ENGINES.includes(e)) throw new Error(`unknown engine '${e}' (tsmoe, llama)`);
  if (pps.some((p) => !Number.isInteger(p) || p < 2) || !(nCtx >= Math.max(...pps) && nCtx >= pps[0]! + nTg)) throw new Error("bad --pp / -n / --ctx");
  const runs: ModelRun[] = [];
  for (const name of models) {
    const path = join(dir, `${name}.gguf`);
    if (!existsSync(path)) throw new Error(`${path} does not exist: make it with bench/make-model.ts (e.g. --arch olmoe --type Q8_0 -o ${dir}/olmoe-Q8_0.gguf)`);
    const m: ModelRun = { name, fileMB: statSync(path).size / 2 ** 20, results: [] };
    runs.push(m);
    for (const threads of threadList)
      for (const engine of engines) {
        if (engine === "tsmoe" && m.catS === undefined) m.catS = catSeconds(path);
        const opts = ["--pp", pps.join(","), "-n", String(nTg), "--reps", String(reps), "--ctx", String(nCtx)];
        const r = child(["--child", engine, path, String(threads), ...opts]);
        console.error(`${name} ${engine} ${threads}t: ${JSON.stringify(r)}`);
        m.results.push(r);
      }
  }
  console.log(`Full-size random-weight models (bench/make-model.ts), tokens/s (ratio = tsmoe / llama.cpp), best of ${reps}; each engine, model and thread count in its own process:`);
  console.log("");
  for (const l of tables(runs, pps, nTg, nCtx)) console.log(l);
  const notes = runs.flatMap((m) => [...new Set(m.results.flatMap((r) => r.notes ?? []))].map((n) => `- ${m.name}: ${n}`));
  if (notes.length) console.log(["", "tsmoe's load notes:", ...notes].join("\n"));
}

await main();
