/**
 * tsmoe's prompt speed alone, one thread, CPU time: pp64, pp512 and a perplexity-shaped run (512 tokens,
 * logits of every position), and decode (tgN: N tokens one at a time after an 8-token prompt), best of
 * --reps alternating runs. For profiling (node --cpu-prof) and A/B. --ab-relaxed: every test twice per
 * round, SIMD128 then relaxed-SIMD kernels (src/kernels/wasm/relaxed.ts; Node 20: TSMOE_WASM_RELAXED=1),
 * printed side by side with their ratio.
 *   npx tsx bench/prompt-profile.ts [-m file.gguf] [--reps 3] [--tests pp64,pp512,ppl512,tg32] [--threads 1] [--ab-relaxed]
 */
import { loadavg } from "node:os";
import { loadModel } from "../src/model/load.ts";
import { relaxedSimd, setRelaxedSimd } from "../src/kernels/wasm/relaxed.ts";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const path = arg("-m", new URL("../models/tiny-moe-32x8-q8_0.gguf", import.meta.url).pathname);
const reps = Number(arg("--reps", "3"));
const threads = Number(arg("--threads", "1"));
const tests = arg("--tests", "pp64,pp512,ppl512").split(",");
const ab = process.argv.includes("--ab-relaxed");
if (ab && !relaxedSimd().available) throw new Error(`--ab-relaxed: ${relaxedSimd().describe}`);
if (ab && threads !== 1) throw new Error("--ab-relaxed: one thread (the switch is per thread)");
const variants = ab ? ["SIMD128", "relaxed"] : [""];
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const model = await loadModel(path, { threads });
const nVocab = model.hparams.nVocab;
const prompt = (n: number) => Array.from({ length: n }, (_, i) => 16 + ((i * 7919) % (nVocab - 16)));
const best = new Map<string, number[]>();
console.log(`node ${process.version}, ${threads} thread(s), kernels: ${relaxedSimd().describe}, load ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
for (let r = 0; r <= reps; r++)
  for (const t of tests) {
    for (const variant of variants) {
      if (ab) setRelaxedSimd(variant === "relaxed");
      const n = Number(t.replace(/^\D+/, ""));
      const decode = t.startsWith("tg");
      const s = model.createSession({ nCtx: Math.max(n + 8, 256) });
      if (decode) await s.eval(prompt(8));
      const c0 = cpu(), t0 = performance.now();
      if (decode) for (const tok of prompt(n)) await s.eval([tok]);
      else await s.eval(prompt(n), { allLogits: t.startsWith("ppl") });
      const c1 = cpu(), t1 = performance.now();
      if (r > 0) {
        const key = ab ? `${t} ${variant}` : t;
        const v = best.get(key) ?? [];
        v.push(n / (c1 - c0), (n * 1000) / (t1 - t0));
        best.set(key, v);
      }
    }
  }
const bestPerCpu = (v: number[]) => Math.max(...v.filter((_, i) => i % 2 === 0));
for (const [t, v] of best) {
  const perCpu = v.filter((_, i) => i % 2 === 0).sort((a, b) => a - b);
  const wall = v.filter((_, i) => i % 2 === 1).sort((a, b) => a - b);
  const base = ab && t.endsWith(" relaxed") ? best.get(t.replace(/ relaxed$/, " SIMD128")) : undefined;
  const ratio = base ? `; relaxed / SIMD128 ${(bestPerCpu(v) / bestPerCpu(base)).toFixed(2)}x (best), ${(perCpu[perCpu.length >> 1]! / base.filter((_, i) => i % 2 === 0).sort((a, b) => a - b)[perCpu.length >> 1]!).toFixed(2)}x (median)` : "";
  console.log(`${t}: tok/CPU-s best ${perCpu.at(-1)!.toFixed(1)} median ${perCpu[perCpu.length >> 1]!.toFixed(1)}; wall tok/s best ${wall.at(-1)!.toFixed(1)}${ratio}`);
}
console.log(`load at the end ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
await model.dispose();
