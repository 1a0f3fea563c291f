/**
 * Relaxed SIMD vs SIMD128 kernels of Q4_K, Q5_K, Q6_K (src/kernels/wasm/relaxed.ts): the same weights
 * (rows x cols, in the WASM memory) times --tokens tokens each (the kernel the dispatcher picks: 1 to 3 the
 * decode kernels, more the batch ones), single thread, the two paths alternating round by round (best of
 * --rounds, CPU time), and a check that their outputs are bit-identical.
 * On Node 20 run it with TSMOE_WASM_RELAXED=1 (sets V8's --experimental-wasm-relaxed-simd).
 *
 *   TSMOE_WASM_RELAXED=1 npx tsx bench/relaxed-simd.ts [--types Q4_K,Q6_K] [--shapes 2048x1024,1024x2048] [--tokens 1,64] [--seconds 1] [--rounds 3] [--copies 32]
 */
import { loadavg } from "node:os";
import { typeName } from "../src/tensor/types.ts";
import { randn, randomBlocks } from "../src/tensor/random.ts";
import { quantizeActivations, type Weight } from "../src/kernels/matmul.ts";
import { allocTensorBytes } from "../src/kernels/wasm/memory.ts";
import { relaxedSimd, setRelaxedSimd } from "../src/kernels/wasm/relaxed.ts";
import { wasmMatmulRange, wasmRuntime } from "../src/kernels/wasm/runtime.ts";
import { arg, kernelBenchOptions, timeIt } from "./kernel-bench-args.ts";

const { budget, types } = kernelBenchOptions(["Q4_K", "Q5_K", "Q6_K"]);
const tokens = arg("tokens", "1,64").split(",").map(Number);
const rounds = Number(arg("rounds", "3"));
const copies = Number(arg("copies", "32"));
const shapes = arg("shapes", "2048x1024,1024x2048").split(",").map((s) => s.split("x").map(Number) as [number, number]);

if (!wasmRuntime()) throw new Error("WebAssembly SIMD is not available (or TSMOE_WASM=0)");
if (!relaxedSimd().available) throw new Error(`no relaxed SIMD here: ${relaxedSimd().describe}`);
console.log(`single thread, node ${process.version}, GFLOP/s (CPU time, best of ${rounds} rounds), load ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
console.log("type | rows x cols | tokens | SIMD128 | relaxed | relaxed / SIMD128 | identical");
for (const type of types) {
  for (const [[rows, cols], batch] of shapes.flatMap((sh) => tokens.map((t) => [sh, t] as const))) {
    // --copies copies of the weights, used in turn: streamed from memory as a model's are, not from the cache
    const bytes = randomBlocks(type, cols, rows, 1);
    const ws: Weight[] = Array.from({ length: copies }, () => {
      const data = allocTensorBytes(bytes.length);
      data.set(bytes);
      return { type, ne0: cols, ne1: rows, data };
    });
    let next = 0;
    const act = quantizeActivations(type, randn(cols * batch, 2), batch, cols);
    const outs = [new Float32Array(batch * rows), new Float32Array(batch * rows)];
    const times: number[][] = [[], []];
    for (let r = 0; r < rounds; r++) {
      [false, true].forEach((relaxed, i) => {
        setRelaxedSimd(relaxed);
        times[i]!.push(timeIt(() => {
          if (!wasmMatmulRange(ws[next++ % copies]!, act, outs[i]!, rows, 0, rows)) throw new Error("WASM path did not apply");
        }, budget / rounds));
      });
    }
    const [a, b] = times.map((ts) => Math.min(...ts)) as [number, number];
    const gflops = (t: number) => ((2 * rows * cols * batch) / t / 1e9).toFixed(2).padStart(7);
    const same = outs[0]!.every((v, i) => Object.is(v, outs[1]![i]));
    console.log(`${typeName(type).padEnd(4)} | ${`${rows} x ${cols}`.padEnd(11)} | ${String(batch).padStart(6)} | ${gflops(a)} | ${gflops(b)} | ${(a / b).toFixed(2).padStart(17)}x | ${same ? "yes" : "NO"}`);
  }
}
