/**
 * Decode speed of one model in one process, wall clock and CPU: after a short prompt, rounds of -n
 * single-token evaluations, best and median ms/token over --reps rounds. With --ab VAR, rounds alternate
 * between process.env[VAR] unset and "1" (an A/B switch a change under test reads at run time), so both
 * sides see the same machine state; the two sides' logits are compared bit for bit.
 * --prof FILE writes a CPU profile of the main thread over the measured rounds (not the first one).
 *   npx tsx bench/decode-ab.ts -m FILE [-t 2] [-n 32] [--reps 6] [--ab VAR] [--prof FILE]
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { loadModel } from "../src/model/load.ts";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const path = arg("-m", new URL("../models/tiny-moe-32x8-q8_0.gguf", import.meta.url).pathname);
const threads = Number(arg("-t", "2"));
const nGen = Number(arg("-n", "32"));
const reps = Number(arg("--reps", "6"));
const abVar = arg("--ab", "");
const profFile = arg("--prof", "");
const inspector = profFile ? new Session() : undefined;
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e3;
};
const model = await loadModel(path, { threads });
const nVocab = model.hparams.nVocab;
const prompt = Array.from({ length: 8 }, (_, i) => 16 + ((i * 7919) % (nVocab - 16)));
const sides = abVar ? ["A", "B"] : ["A"];
const wall = new Map<string, number[]>(sides.map((s) => [s, []]));
const cpuMs = new Map<string, number[]>(sides.map((s) => [s, []]));
const lastLogits = new Map<string, Float32Array[]>();
for (let r = 0; r <= reps; r++) {
  if (r === 1 && inspector) {
    inspector.connect();
    await inspector.post("Profiler.enable");
    await inspector.post("Profiler.start");
  }
  for (const side of r % 2 ? [...sides].reverse() : sides) {
    if (abVar) {
      if (side === "B") process.env[abVar] = "1";
      else delete process.env[abVar];
    }
    const s = model.createSession({ nCtx: 256 });
    await s.eval(prompt);
    const logits: Float32Array[] = [];
    let tok = 5;
    const c0 = cpu(), t0 = performance.now();
    for (let i = 0; i < nGen; i++) {
      const l = await s.eval([tok]);
      logits.push(l.slice());
      tok = 16 + ((tok * 31 + i) % (nVocab - 16));
    }
    const t1 = performance.now(), c1 = cpu();
    if (r > 0) {
      wall.get(side)!.push((t1 - t0) / nGen);
      cpuMs.get(side)!.push((c1 - c0) / nGen);
    }
    lastLogits.set(side, logits);
  }
}
if (inspector) {
  const { profile } = await inspector.post("Profiler.stop");
  writeFileSync(profFile, JSON.stringify(profile));
}
const med = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1]!;
for (const side of sides) {
  const w = wall.get(side)!, c = cpuMs.get(side)!;
  console.log(`${side}${abVar && side === "B" ? ` (${abVar}=1)` : ""}: wall ms/token best ${Math.min(...w).toFixed(2)} median ${med(w).toFixed(2)}; CPU ms/token median ${med(c).toFixed(2)}; rounds ${w.map((x) => x.toFixed(1)).join(" ")}`);
}
if (abVar) {
  const a = lastLogits.get("A")!, b = lastLogits.get("B")!;
  const same = a.every((l, i) => l.length === b[i]!.length && l.every((v, j) => Object.is(v, b[i]![j])));
  console.log(`logits A vs B: ${same ? "bit-identical" : "DIFFERENT"}`);
}
await model.dispose();
