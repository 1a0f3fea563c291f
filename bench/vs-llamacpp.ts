/**
 * tsmoe against llama.cpp (node-llama-cpp) on the same GGUF files, same thread count:
 *   npx tsx bench/vs-llamacpp.ts [--threads 2] [--layers 2] [--reps 3] [--models olmoe,qwen3moe,embedded]
 *                                [--types Q8_0,Q4_K_M] [--write]
 *
 * `--models embedded` adds the embedded model (models/tiny-moe-32x8-q8_0.gguf) as it is.
 * Models: random weights with the real models' shapes (bench/real-shapes.ts, written by bench/make-model.ts),
 * cut to a few layers (cached in the OS temp dir): OLMoE-1B-7B (n_embd 2048, 16 heads of 128, 64 experts of 1024, top-8) and Qwen3-30B-A3B (n_embd
 * 2048, 32 query / 4 KV heads of 128, 128 experts of 768, top-8). The vocabulary is cut to 2048: with 2
 * of the real models' 16 / 48 layers a full vocabulary (50k / 152k) would make the output layer most of a
 * token's work; at 2048 it is ~3% (~10% in the full models). Types: Q8_0 everywhere, or Q4_K_M-like (Q4_K, with
 * Q6_K for output, attn_v and ffn_down in llama-quantize's "more bits" layers).
 * `--full [options of bench/full-size.ts]` measures the full-size files instead (bench/full-size.ts).
 *
 * Per model: prompt processing of 64 tokens (pp64, fresh session) and decode of 32 tokens after it (tg32,
 * one token per eval, greedy), then in fresh contexts pp512 (one batch of 512 tokens) and a perplexity-shaped
 * run (one chunk of 512 tokens with the logits of every position, as llama-perplexity evaluates a chunk),
 * with tsmoe and llama.cpp at `threads` and at 1 thread, alternating `reps`
 * times after one untimed run each (best run kept; thread scaling also as the median of paired rounds); tokens per CPU-second of the 1-thread runs compare the kernels independently of
 * other load. Each model is measured in a child process so the peak RSS taken after tsmoe's first run is
 * tsmoe's own. Prints a table; --write also writes bench/RESULTS.md.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { writeBlockModel } from "../src/gguf/block-model.ts";
import { loadModel } from "../src/model/load.ts";
import { createPoolBackend } from "../src/pool/backend.ts";
import { GGMLType } from "../src/tensor/types.ts";
import { quantize } from "../src/tensor/quantize.ts";
import { randn } from "../src/tensor/random.ts";
import { allocTensorBytes } from "../src/kernels/wasm/memory.ts";
import type { Weight } from "../src/kernels/matmul.ts";
import { makeModelOptions } from "./make-model.ts";
import { REAL_SHAPES } from "./real-shapes.ts";
import { best, promptTokens, runLlama, runTsmoe, type Speed } from "./engines.ts";

const HERE = dirname(fileURLToPath(import.meta.url));

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const PP_TOKENS = 64;
/** pp512 and the perplexity-shaped run: one chunk of this many tokens */
const LONG_TOKENS = 512;
const TG_TOKENS = 32;
const N_VOCAB = 2048;

/** Writes the random model (Q8_0 or Q4_K_M) with `nLayer` layers and the vocabulary cut to N_VOCAB to `path`. */
function generate(path: string, arch: string, typeName: string, nLayer: number): void {
  writeBlockModel(path, { ...makeModelOptions(arch, { layers: nLayer, vocab: N_VOCAB, type: typeName }), seed: 7 });
}

/** `--models embedded`: the embedded model as it is (all its layers, its vocabulary) */
const EMBEDDED = join(HERE, "..", "models", "tiny-moe-32x8-q8_0.gguf");

function modelPath(arch: string, typeName: string, nLayer: number): string {
  if (arch === "embedded") return EMBEDDED;
  return join(tmpdir(), `tsmoe-vs-llamacpp-${arch}-${nLayer}L-v${N_VOCAB}-${typeName}.gguf`);
}

/** the median of many-thread / 1-thread decode speed over runs made in the same alternation round */
function pairedScaling(many: Speed[], one: Speed[]): number {
  const r = many.map((m, i) => m.tg / one[i]!.tg).sort((a, b) => a - b);
  return r.length % 2 ? r[r.length >> 1]! : (r[r.length / 2 - 1]! + r[r.length / 2]!) / 2;
}

interface ChildResult {
  tsmoe: Speed;
  llama: Speed;
  tsmoe1: Speed;
  llama1: Speed;
  /** pp512 (`pp`) and the perplexity-shaped run (`ppl`) per engine and thread count: tokens/s and per CPU-second */
  long: Record<"tsmoe" | "llama" | "tsmoe1" | "llama1", { pp: Speed; ppl: Speed }>;
  /** peak RSS after loading and running the model with `threads` threads (before anything else loads) */
  tsmoeRssMB: number;
  /** median over the alternation rounds of (tg at `threads`) / (tg at 1 thread) in the same round */
  tsmoeScaling: number;
  llamaScaling: number;
  /** RSS of the process before loading the model */
  baseRssMB: number;
  fileMB: number;
  load: number;
}

/** Child process: measures one model file, prints a JSON ChildResult line. */
async function measure(path: string, threads: number, reps: number): Promise<void> {
  const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
  const fileMB = statSync(path).size / 2 ** 20;
  const baseRssMB = process.memoryUsage().rss / 2 ** 20;

  const model = await loadModel(path, { threads });
  const prompt = promptTokens(model.hparams.nVocab, PP_TOKENS);
  const runs = { tsmoe: [] as Speed[], llama: [] as Speed[], tsmoe1: [] as Speed[], llama1: [] as Speed[] };
  // a first untimed run of each engine and thread count (JIT and caches warm up; tsmoe's peak RSS is taken after its first run)
  await runTsmoe(model, prompt, TG_TOKENS, 256);
  const tsmoeRssMB = process.resourceUsage().maxRSS / 1024;

  const model1 = await loadModel(path, { threads: 1 });
  const llama = await getLlama({ gpu: false, build: "never", maxThreads: 0, logLevel: LlamaLogLevel.error });
  const lm = await llama.loadModel({ modelPath: path });
  await runTsmoe(model1, prompt, TG_TOKENS, 256);
  await runLlama(lm, threads, prompt, TG_TOKENS, 256);
  await runLlama(lm, 1, prompt, TG_TOKENS, 256);
  for (let r = 0; r < reps; r++) {
    runs.tsmoe.push(await runTsmoe(model, prompt, TG_TOKENS, 256));
    runs.llama.push(await runLlama(lm, threads, prompt, TG_TOKENS, 256));
    runs.tsmoe1.push(await runTsmoe(model1, prompt, TG_TOKENS, 256));
    runs.llama1.push(await runLlama(lm, 1, prompt, TG_TOKENS, 256));
  }
  // the long prompts, each in a fresh context, alternating the same way
  const long = promptTokens(model.hparams.nVocab, LONG_TOKENS);
  const longRuns = Object.fromEntries(["tsmoe", "llama", "tsmoe1", "llama1"].map((k) => [k, { pp: [] as Speed[], ppl: [] as Speed[] }]));
  const oneLong = async (all: boolean): Promise<Record<string, Speed>> => ({
    tsmoe: await runTsmoe(model, long, 0, LONG_TOKENS, all),
    llama: await runLlama(lm, threads, long, 0, LONG_TOKENS, all),
    tsmoe1: await runTsmoe(model1, long, 0, LONG_TOKENS, all),
    llama1: await runLlama(lm, 1, long, 0, LONG_TOKENS, all),
  });
  await oneLong(false);
  for (let r = 0; r < reps; r++)
    for (const all of [false, true]) for (const [k, v] of Object.entries(await oneLong(all))) longRuns[k]![all ? "ppl" : "pp"].push(v);
  await model.dispose();
  await model1.dispose();
  await lm.dispose();

  const result: ChildResult = {
    tsmoe: best(runs.tsmoe),
    llama: best(runs.llama),
    tsmoe1: best(runs.tsmoe1),
    llama1: best(runs.llama1),
    long: Object.fromEntries(Object.entries(longRuns).map(([k, v]) => [k, { pp: best(v.pp), ppl: best(v.ppl) }])) as ChildResult["long"],
    tsmoeRssMB,
    tsmoeScaling: pairedScaling(runs.tsmoe, runs.tsmoe1),
    llamaScaling: pairedScaling(runs.llama, runs.llama1),
    baseRssMB,
    fileMB,
    load: loadavg()[0]!,
  };
  console.log("RESULT " + JSON.stringify(result));
}

/** Microseconds per matmul dispatch: a 64x64 F32 product forced through 2 threads vs run on 1. */
async function dispatchOverhead(): Promise<{ oneUs: number; twoUs: number }> {
  const data = new Uint8Array(new SharedArrayBuffer(64 * 64 * 4));
  const w = { type: GGMLType.F32, ne0: 64, ne1: 64, data };
  const x = new Float32Array(64).fill(1);
  const time = async (n: number): Promise<number> => {
    const b = await createPoolBackend(n, { minParallelMacs: 0 });
    const out = b.allocF32(64);
    for (let i = 0; i < 2000; i++) b.matmul(w, x, 1, out);
    const t0 = performance.now();
    const N = 20000;
    for (let i = 0; i < N; i++) b.matmul(w, x, 1, out);
    const us = ((performance.now() - t0) * 1000) / N;
    await b.dispose();
    return us;
  };
  return { oneUs: await time(1), twoUs: await time(2) };
}

/**
 * The ceiling for decode scaling on this machine: multiply-adds per second of the matmul kernels alone
 * through the pool at 1 and `threads` threads, on products shaped like a MoE layer's (8 Q4_K products of
 * 2048 x 768 per dispatch, one token, cycling through 64 weights = 56 MB so they stream from memory as in
 * decode). No routing, norms, attention or other serial work: what is left is the kernels, the dispatch and
 * the threads sharing the memory system. Best of 3 alternating runs of ~1 s each.
 */
async function kernelScaling(threads: number): Promise<{ oneGmacs: number; manyGmacs: number }> {
  const ne0 = 2048, ne1 = 768, nW = 64, perJob = 8;
  const proto = quantize(GGMLType.Q4_K, randn(ne0 * ne1, 3), ne1, ne0);
  const ws: Weight[] = Array.from({ length: nW }, () => {
    const data = allocTensorBytes(proto.length);
    data.set(proto);
    return { type: GGMLType.Q4_K, ne0, ne1, data };
  });
  const x = new Float32Array(randn(ne0, 4));
  const rate = async (n: number, backend: Awaited<ReturnType<typeof createPoolBackend>>): Promise<number> => {
    const outs = Array.from({ length: perJob }, () => backend.allocF32(ne1));
    let i = 0, macs = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < 1000) {
      backend.matmulMany(outs.map((out, j) => ({ w: ws[(i + j) % nW]!, x, nTokens: 1, out })));
      i += perJob;
      macs += perJob * ne0 * ne1;
    }
    return macs / ((performance.now() - t0) * 1e6);
  };
  const one = await createPoolBackend(1);
  const many = await createPoolBackend(threads);
  let oneGmacs = 0, manyGmacs = 0;
  await rate(1, one);
  await rate(threads, many);
  for (let r = 0; r < 3; r++) {
    oneGmacs = Math.max(oneGmacs, await rate(1, one));
    manyGmacs = Math.max(manyGmacs, await rate(threads, many));
  }
  await one.dispose();
  await many.dispose();
  return { oneGmacs, manyGmacs };
}

function child(args: string[]): string {
  const r = spawnSync(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), ...args], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 64 * 2 ** 20,
  });
  if (r.status !== 0) throw new Error(`child ${args.join(" ")} failed with status ${r.status}`);
  return r.stdout;
}

async function main(): Promise<void> {
  if (process.argv.includes("--full")) {
    const full = join(HERE, "full-size.ts");
    const r = spawnSync(process.execPath, ["--import", "tsx", full, ...process.argv.slice(process.argv.indexOf("--full") + 1)], { stdio: "inherit" });
    process.exit(r.status ?? 1);
  }
  if (process.argv.includes("--generate")) {
    const [path, arch, type, layers] = process.argv.slice(process.argv.indexOf("--generate") + 1);
    generate(path!, arch!, type!, Number(layers));
    return;
  }
  if (process.argv.includes("--kernel-scaling")) {
    console.log("RESULT " + JSON.stringify(await kernelScaling(Number(process.argv[process.argv.indexOf("--kernel-scaling") + 1]))));
    return;
  }
  if (process.argv.includes("--measure")) {
    const [path, threads, reps] = process.argv.slice(process.argv.indexOf("--measure") + 1);
    await measure(path!, Number(threads), Number(reps));
    return;
  }
  const threads = Number(arg("--threads", "2"));
  const nLayer = Number(arg("--layers", "2"));
  const reps = Number(arg("--reps", "3"));
  const archs = arg("--models", "olmoe,qwen3moe").split(",");
  const types = arg("--types", "Q8_0,Q4_K_M").split(",");

  const d = await dispatchOverhead();
  const lines: string[] = [];
  const say = (l: string): void => {
    console.log(l);
    lines.push(l);
  };
  say(`dispatch: 64x64 F32 matmul ${d.oneUs.toFixed(1)} µs on 1 thread, ${d.twoUs.toFixed(1)} µs through 2 threads (minParallelMacs 0); load avg ${loadavg()[0]!.toFixed(1)}`);
  // in a child process of its own: its weights stay out of the RSS of the measurements
  const ksLine = child(["--kernel-scaling", String(threads)]).split("\n").find((l) => l.startsWith("RESULT "));
  if (!ksLine) throw new Error("no kernel scaling result");
  const ks = JSON.parse(ksLine.slice(7)) as { oneGmacs: number; manyGmacs: number };
  say("");
  say(
    `kernels alone (8 Q4_K 2048x768 products per dispatch, 1 token, 56 MB of weights): ${ks.oneGmacs.toFixed(2)} G multiply-adds/s on 1 thread, ${ks.manyGmacs.toFixed(2)} on ${threads}: ${(ks.manyGmacs / ks.oneGmacs).toFixed(2)}x (the ceiling for decode's thread scaling here)`,
  );
  say("");
  const results: { label: string; r: ChildResult }[] = [];
  for (const arch of archs)
    for (const type of arch === "embedded" ? ["Q8_0"] : types) {
      const path = modelPath(arch, type, nLayer);
      if (!existsSync(path)) {
        console.error(`generating ${path}`);
        child(["--generate", path, arch, type, String(nLayer)]);
      }
      const out = child(["--measure", path, String(threads), String(reps)]);
      const line = out.split("\n").find((l) => l.startsWith("RESULT "));
      if (!line) throw new Error(`no result for ${path}:\n${out}`);
      results.push({ label: arch === "embedded" ? "embedded tiny-moe-32x8 (all its layers) Q8_0" : `${REAL_SHAPES[arch]!.label} ${type}`, r: JSON.parse(line.slice(7)) as ChildResult });
      console.error(`${path}: ${line}`);
    }
  const f = (v: number): string => v.toFixed(2);
  say(`${threads} threads, wall clock (tokens/s; ratio = tsmoe / llama.cpp):`);
  say("");
  say(`| model (generated ones: ${nLayer} layers) | file MB | tsmoe peak RSS MB (before load) | pp64 tsmoe | pp64 llama.cpp | pp ratio | tg32 tsmoe | tg32 llama.cpp | tg ratio | load avg |`);
  say("|---|---|---|---|---|---|---|---|---|---|");
  for (const { label, r } of results)
    say(
      `| ${label} | ${r.fileMB.toFixed(0)} | ${r.tsmoeRssMB.toFixed(0)} (${r.baseRssMB.toFixed(0)}) | ${f(r.tsmoe.pp)} | ${f(r.llama.pp)} | ${f(r.tsmoe.pp / r.llama.pp)} | ${f(r.tsmoe.tg)} | ${f(r.llama.tg)} | ${f(r.tsmoe.tg / r.llama.tg)} | ${r.load.toFixed(1)} |`,
    );
  say("");
  say(`Long prompts: pp512 (one batch of ${LONG_TOKENS}) and a perplexity-shaped run (one chunk of ${LONG_TOKENS} with the logits of every position), tokens/s at ${threads} threads and tokens per CPU-second at 1 thread:`);
  say("");
  say(`| model | pp512 tsmoe | llama.cpp | ratio | ppl512 tsmoe | llama.cpp | ratio | pp512 tok/CPU-s tsmoe | llama.cpp | ratio | ppl512 tok/CPU-s tsmoe | llama.cpp | ratio |`);
  say("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
  for (const { label, r } of results) {
    const { tsmoe: t, llama: l, tsmoe1: t1, llama1: l1 } = r.long;
    const cols = [t.pp.pp, l.pp.pp, t.pp.pp / l.pp.pp, t.ppl.pp, l.ppl.pp, t.ppl.pp / l.ppl.pp, t1.pp.ppCpu, l1.pp.ppCpu, t1.pp.ppCpu / l1.pp.ppCpu, t1.ppl.ppCpu, l1.ppl.ppCpu, t1.ppl.ppCpu / l1.ppl.ppCpu];
    say(`| ${label} | ${cols.map(f).join(" | ")} |`);
  }
  say("");
  say(`Thread scaling (tg32 tokens/s) and single-thread efficiency (tokens per CPU-second, 1 thread; insensitive to other load):`);
  say("");
  say(`| model | tsmoe tg 1t | tsmoe ${threads}t/1t best (paired) | llama.cpp tg 1t | llama.cpp ${threads}t/1t best (paired) | pp tok/CPU-s tsmoe | llama.cpp | ratio | tg tok/CPU-s tsmoe | llama.cpp | ratio |`);
  say("|---|---|---|---|---|---|---|---|---|---|---|");
  for (const { label, r } of results)
    say(
      `| ${label} | ${f(r.tsmoe1.tg)} | ${f(r.tsmoe.tg / r.tsmoe1.tg)} (${f(r.tsmoeScaling)}) | ${f(r.llama1.tg)} | ${f(r.llama.tg / r.llama1.tg)} (${f(r.llamaScaling)}) | ${f(r.tsmoe1.ppCpu)} | ${f(r.llama1.ppCpu)} | ${f(r.tsmoe1.ppCpu / r.llama1.ppCpu)} | ${f(r.tsmoe1.tgCpu)} | ${f(r.llama1.tgCpu)} | ${f(r.tsmoe1.tgCpu / r.llama1.tgCpu)} |`,
    );
  say("");
  say(
    `Best of ${reps} runs each, after one untimed run of each; tsmoe ${threads}t, llama.cpp ${threads}t, tsmoe 1t and llama.cpp 1t alternate. Scaling "best" divides the best runs; "paired" is the median over the rounds of the ${threads}-thread run over the 1-thread run of the same round (less sensitive to the machine's speed drifting). load avg: 1-minute load average at the end of the model's measurement (other processes share the machine).`,
  );

  if (process.argv.includes("--write")) {
    const cpu = cpus()[0]?.model ?? "unknown CPU";
    const machine = `${cpu}, ${cpus().length} cores visible, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Node ${process.version}, ${new Date().toISOString().slice(0, 16)}Z`;
    const head = existsSync(join(HERE, "RESULTS.md")) ? readFileSync(join(HERE, "RESULTS.md"), "utf8").split("\n<!-- results -->")[0]! : "# Benchmark results\n";
    writeFileSync(
      join(HERE, "RESULTS.md"),
      `${head}\n<!-- results -->\n## tsmoe vs llama.cpp (bench/vs-llamacpp.ts, ${threads} threads, ${reps} alternating runs)\n\nMachine: ${machine}\n\n${lines.join("\n")}\n`,
    );
  }
}

await main();
