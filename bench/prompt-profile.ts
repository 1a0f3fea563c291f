/**
 * tsmoe's prompt speed alone, one thread, CPU time: pp64, pp512 and a perplexity-shaped run (512 tokens,
 * logits of every position), best of --reps alternating runs. For profiling (node --cpu-prof) and A/B.
 *   npx tsx bench/prompt-profile.ts [-m file.gguf] [--reps 3] [--tests pp64,pp512,ppl512] [--threads 1]
 */
import { loadModel } from "../src/model/load.ts";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const path = arg("-m", new URL("../models/tiny-moe-32x8-q8_0.gguf", import.meta.url).pathname);
const reps = Number(arg("--reps", "3"));
const threads = Number(arg("--threads", "1"));
const tests = arg("--tests", "pp64,pp512,ppl512").split(",");
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const model = await loadModel(path, { threads });
const nVocab = model.hparams.nVocab;
const prompt = (n: number) => Array.from({ length: n }, (_, i) => 16 + ((i * 7919) % (nVocab - 16)));
const best = new Map<string, number[]>();
for (let r = 0; r <= reps; r++)
  for (const t of tests) {
    const n = Number(t.replace(/^\D+/, ""));
    const s = model.createSession({ nCtx: Math.max(n, 256) });
    const c0 = cpu(), t0 = performance.now();
    await s.eval(prompt(n), { allLogits: t.startsWith("ppl") });
    const c1 = cpu(), t1 = performance.now();
    if (r > 0) {
      const v = best.get(t) ?? [];
      v.push(n / (c1 - c0), (n * 1000) / (t1 - t0));
      best.set(t, v);
    }
  }
for (const [t, v] of best) {
  const perCpu = v.filter((_, i) => i % 2 === 0).sort((a, b) => a - b);
  const wall = v.filter((_, i) => i % 2 === 1).sort((a, b) => a - b);
  console.log(`${t}: tok/CPU-s best ${perCpu.at(-1)!.toFixed(1)} median ${perCpu[perCpu.length >> 1]!.toFixed(1)}; wall tok/s best ${wall.at(-1)!.toFixed(1)}`);
}
await model.dispose();
