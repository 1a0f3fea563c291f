/**
 * Activation quantization speed: microseconds per K-value row (K = 2048 by default) for Q8_0 and Q8_K,
 * TypeScript reference vs the WASM SIMD kernels (through quantizeActivations, one token, as a decode step
 * does). CPU time of this process (process.cpuUsage), best of several interleaved runs: the machine may be
 * shared.
 *
 *   npx tsx bench/quantize-act.ts [K]
 */
import { quantizeQ8Blocks, quantizeQ8KBlocks } from "../src/tensor/quantize-act.ts";
import { quantizeActivations, type Activations } from "../src/kernels/activations.ts";
import { quantizeWasmRuns } from "../src/kernels/wasm/quantize-kernels.ts";
import { GGMLType } from "../src/tensor/types.ts";

const K = Number(process.argv[2] ?? 2048);
const ROWS = 64;
const REPS = 2000;
const TRIALS = 9;
const x = new Float32Array(new SharedArrayBuffer(ROWS * K * 4));
for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37) * (1 + (i % 97));

const best: Record<string, number> = {};
/** CPU µs per row of `run(row)` over REPS rows; keeps the best per name */
function time(name: string, run: (row: Float32Array) => void): void {
  const t0 = process.cpuUsage();
  for (let r = 0; r < REPS; r++) run(x.subarray((r % ROWS) * K, (r % ROWS + 1) * K));
  const t = process.cpuUsage(t0);
  best[name] = Math.min(best[name] ?? Infinity, (t.user + t.system) / REPS);
}

const qs = new Int8Array(K), d = new Float32Array(K / 32), bsums = new Int32Array(K / 16);
let prev0: Activations | undefined, prevK: Activations | undefined;
const before = quantizeWasmRuns();
// the four timings interleaved, so that a change in the machine's load hits all of them alike
for (let trial = 0; trial < TRIALS; trial++) {
  time("ts0", (row) => quantizeQ8Blocks(row, 0, K, qs, 0, d, 0));
  time("wasm0", (row) => void (prev0 = quantizeActivations(GGMLType.Q4_0, row, 1, K, prev0)));
  time("tsK", (row) => quantizeQ8KBlocks(row, 0, K, qs, 0, d, 0, bsums));
  time("wasmK", (row) => void (prevK = quantizeActivations(GGMLType.Q4_K, row, 1, K, prevK)));
}
const wasmUsed = quantizeWasmRuns() > before;
const { ts0, wasm0, tsK, wasmK } = best as Record<"ts0" | "wasm0" | "tsK" | "wasmK", number>;

console.log(`K = ${K}, µs per row (CPU time, best of ${TRIALS} x ${REPS} rows)${wasmUsed ? "" : "  [WASM path NOT taken]"}`);
console.log(`Q8_0  TypeScript ${ts0.toFixed(2)}  WASM ${wasm0.toFixed(2)}  speedup ${(ts0 / wasm0).toFixed(1)}x`);
console.log(`Q8_K  TypeScript ${tsK.toFixed(2)}  WASM ${wasmK.toFixed(2)}  speedup ${(tsK / wasmK).toFixed(1)}x`);
