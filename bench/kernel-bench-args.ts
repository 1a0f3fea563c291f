/**
 * What the kernel benchmarks (kernels.ts, wasm-kernels.ts) share: their command-line options and a CPU-time
 * timer (unlike wall time, CPU time is not inflated by other processes on a busy machine).
 */
import { typeByName, type GGMLType } from "../src/tensor/types.ts";

export function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}

/** CPU seconds used by this process so far. */
export function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** CPU seconds per call of f, measured over at least `budget` seconds (after one warm-up call). */
export function timeIt(f: () => void, budget: number): number {
  f();
  let calls = 0;
  const t0 = cpuSeconds();
  let t = t0;
  while (t - t0 < budget || calls < 2) {
    f();
    calls++;
    t = cpuSeconds();
  }
  return (t - t0) / calls;
}

/** --size (matrix side), --batch (tokens), --seconds (time budget per measurement), --types (comma list). */
export function kernelBenchOptions(defaultTypes: string[]): { n: number; batch: number; budget: number; types: GGMLType[] } {
  const types = arg("types", defaultTypes.join(",")).split(",").map((s) => {
    const t = typeByName(s.trim());
    if (t === undefined) throw new Error(`unknown type ${s}`);
    return t;
  });
  return { n: Number(arg("size", "2048")), batch: Number(arg("batch", "64")), budget: Number(arg("seconds", "1")), types };
}
