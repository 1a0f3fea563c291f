/**
 * TypeScript vs WebAssembly SIMD matmul kernels, per weight type: a 2048 x 2048 matrix times one token
 * (decode, matvec) and times a batch of tokens (prompt processing), single thread, same weights (allocated
 * in the WASM memory) and activations. It times two WASM kernels, alternating: the row kernels
 * (src/kernels/wasm/kernels.ts) and, for a batch, the batch (tile) kernels (tile-kernels.ts), for one
 * token of Q4_K/Q5_K/Q6_K the single-token kernels (decode-kernels.ts), for a batch of at most
 * MAX_DECODE_TOKENS of them the multi-token decode kernels as well (last column), best of
 * --rounds rounds (other processes on the machine slow a measurement down, never speed it up; --stat median:
 * the median instead), the TypeScript kernel timed in the same rounds. Prints
 * GFLOP/s (2 * rows * cols * tokens / CPU time) and checks that all kernels give bit-identical results.
 *
 *   npx tsx bench/wasm-kernels.ts [--types Q8_0,Q4_K] [--size 2048] [--batch 64] [--seconds 1] [--rounds 3] [--stat median]
 */
import { type GGMLType, typeName } from "../src/tensor/types.ts";
import { arg, kernelBenchOptions, timeIt } from "./kernel-bench-args.ts";
import { QUANTIZE_TYPES, quantize } from "../src/tensor/quantize.ts";
import { randn, randomBlocks } from "../src/tensor/random.ts";
import { matmulTsRange, quantizeActivations, type Weight } from "../src/kernels/matmul.ts";
import { allocTensorBytes } from "../src/kernels/wasm/memory.ts";
import { type KernelChoice, decodeKernelName, kernelName, tileKernelName, wasmMatmulRange, wasmRuntime } from "../src/kernels/wasm/runtime.ts";

const DEFAULT_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q5_0", "IQ4_NL", "MXFP4", "Q4_K", "Q5_K", "Q6_K"];

const { n, batch, budget, types } = kernelBenchOptions(DEFAULT_TYPES);
const rounds = Number(arg("rounds", "3"));
const stat = arg("stat", "best");
if (stat !== "best" && stat !== "median") throw new Error(`--stat: best or median, not ${stat}`);
/** The best (smallest) or the median of a kernel's times over the rounds. */
const summary = (ts: number[]): number => {
  const s = [...ts].sort((a, b) => a - b);
  return stat === "best" ? s[0]! : s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

if (!wasmRuntime()) throw new Error("WebAssembly SIMD is not available (or TSMOE_WASM=0)");
console.log(`matmul ${n} x ${n}, single thread, node ${process.version}, GFLOP/s (CPU time, ${stat} of ${rounds} rounds)`);
console.log(`type | tokens | TS GFLOP/s | WASM rows | WASM tile/decode | new / rows | identical | WASM decode`);
const fmt = (flop: number, t: number) => (Number.isFinite(t) ? (flop / t / 1e9).toFixed(2) : "-").padStart(9);
for (const type of types) {
  // types without a quantizer (MXFP4, IQ4_XS, ...): random blocks, as fast to multiply
  const q = QUANTIZE_TYPES.includes(type) ? quantize(type, randn(n * n, 1, 1 / Math.sqrt(n)), n, n) : randomBlocks(type, n, n, 1);
  const data = allocTensorBytes(q.length);
  data.set(q);
  const w: Weight = { type, ne0: n, ne1: n, data };
  for (const T of [1, batch]) {
    if (!kernelName(type, T)) continue;
    const act = quantizeActivations(type, randn(n * T, 2), T, n);
    const flop = 2 * n * n * T;
    const ref = new Float32Array(T * n);
    matmulTsRange(w, act, ref, n, 0, n);
    const other = T > 1 && tileKernelName(type, Math.max(T, 64)) ? "tile" : decodeKernelName(type, T) ? "decode" : undefined;
    const choices: KernelChoice[] = other ? ["rows", other] : ["rows"];
    if (T > 1 && decodeKernelName(type, T, true)) choices.push("decode");
    const times: number[][] = [[], ...choices.map(() => [])];
    const outs = choices.map(() => new Float32Array(T * n));
    const tsOut = new Float32Array(T * n);
    // rounds interleave the TypeScript kernel and the WASM ones, so a busy spell slows all of them alike
    for (let r = 0; r < rounds; r++) {
      times[0]!.push(timeIt(() => matmulTsRange(w, act, tsOut, n, 0, n), budget / rounds / 2));
      choices.forEach((choice, i) => {
        times[i + 1]!.push(timeIt(() => {
          if (!wasmMatmulRange(w, act, outs[i]!, n, 0, n, choice)) throw new Error("WASM path did not apply");
        }, budget / rounds));
      });
    }
    const [ts, ...best] = times.map(summary) as [number, ...number[]];
    const same = outs.every((o) => o.every((v, i) => Object.is(v, ref[i])));
    const tile = best[1] ?? Infinity;
    const ratio = Number.isFinite(tile) ? `${(best[0]! / tile).toFixed(2)}x` : "-";
    console.log(`${typeName(type).padEnd(4)} | ${String(T).padStart(6)} | ${fmt(flop, ts).padStart(10)} | ${fmt(flop, best[0]!)} | ${fmt(flop, tile).padStart(16)} | ${ratio.padStart(10)} | ${(same ? "yes" : "NO").padEnd(9)} | ${choices[2] ? fmt(flop, best[2]!) : ""}`);
  }
}
