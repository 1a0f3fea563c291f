/**
 * TypeScript vs WebAssembly SIMD matmul kernels, per weight type: a 2048 x 2048 matrix times one token
 * (decode, matvec) and times a 64-token batch (prompt processing), single thread, same weights (allocated
 * in the WASM memory) and activations. Prints GFLOP/s (2 * rows * cols * tokens / CPU time) and the speed-up;
 * checks that both give bit-identical results.
 *
 *   npx tsx bench/wasm-kernels.ts [--types Q8_0,Q4_K] [--size 2048] [--batch 64] [--seconds 1]
 */
import { type GGMLType, typeName } from "../src/tensor/types.ts";
import { kernelBenchOptions, timeIt } from "./kernel-bench-args.ts";
import { quantize } from "../src/tensor/quantize.ts";
import { randn } from "../src/tensor/random.ts";
import { matmulTsRange, quantizeActivations, type Weight } from "../src/kernels/matmul.ts";
import { allocTensorBytes } from "../src/kernels/wasm/memory.ts";
import { kernelName, wasmMatmulRange, wasmRuntime } from "../src/kernels/wasm/runtime.ts";

const DEFAULT_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q5_0", "Q4_K", "Q5_K", "Q6_K"];

const { n, batch, budget, types } = kernelBenchOptions(DEFAULT_TYPES);

if (!wasmRuntime()) throw new Error("WebAssembly SIMD is not available (or TSMOE_WASM=0)");
console.log(`matmul ${n} x ${n}, single thread, node ${process.version}, GFLOP/s (CPU time)`);
console.log(`type | tokens | TS GFLOP/s | WASM GFLOP/s | speed-up | identical`);
for (const type of types) {
  const q = quantize(type, randn(n * n, 1, 1 / Math.sqrt(n)), n, n);
  const data = allocTensorBytes(q.length);
  data.set(q);
  const w: Weight = { type, ne0: n, ne1: n, data };
  for (const T of [1, batch]) {
    if (!kernelName(type, T)) continue;
    const act = quantizeActivations(type, randn(n * T, 2), T, n);
    const a = new Float32Array(T * n);
    const b = new Float32Array(T * n);
    const flop = 2 * n * n * T;
    const ts = timeIt(() => matmulTsRange(w, act, a, n, 0, n), budget);
    const wa = timeIt(() => {
      if (!wasmMatmulRange(w, act, b, n, 0, n)) throw new Error("WASM path did not apply");
    }, budget);
    const same = a.every((v, i) => Object.is(v, b[i]));
    console.log(`${typeName(type).padEnd(4)} | ${String(T).padStart(6)} | ${(flop / ts / 1e9).toFixed(2).padStart(10)} | ${(flop / wa / 1e9).toFixed(2).padStart(12)} | ${(ts / wa).toFixed(1).padStart(7)}x | ${same ? "yes" : "NO"}`);
  }
}
