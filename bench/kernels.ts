/**
 * Matmul kernel speed per weight type: a 2048 x 2048 matrix times one token (decode, matvec) and times a
 * 64-token batch (prompt processing), single thread. Prints GFLOP/s (2 * rows * cols * tokens / time)
 * and weight bandwidth for the matvec. Times are CPU time of this process, so a busy machine disturbs them less.
 *
 *   npx tsx bench/kernels.ts [--types Q4_K,Q8_0] [--size 2048] [--batch 64] [--seconds 1]
 */
import { type GGMLType, typeName } from "../src/tensor/types.ts";
import { kernelBenchOptions, timeIt } from "./kernel-bench-args.ts";
import { quantize } from "../src/tensor/quantize.ts";
import { randn, randomBlocks } from "../src/tensor/random.ts";
import { matmulRange, quantizeActivations, type Weight } from "../src/kernels/matmul.ts";

const DEFAULT_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS", "MXFP4"];

function makeWeight(type: GGMLType, n: number): Weight {
  let data: Uint8Array;
  try {
    data = quantize(type, randn(n * n, 1, 1 / Math.sqrt(n)), n, n);
  } catch {
    data = randomBlocks(type, n, n, 42); // no quantizer for this type
  }
  return { type, ne0: n, ne1: n, data };
}

const { n, batch, budget, types } = kernelBenchOptions(DEFAULT_TYPES);

console.log(`matmul ${n} x ${n}, single thread, node ${process.version} (CPU time)`);
console.log(`type    | matvec ms | matvec GFLOP/s | weights GB/s | batch ${batch}: ms | GFLOP/s | act. quant ms`);
console.log(`--------|-----------|----------------|--------------|-------------|---------|--------------`);
for (const type of types) {
  const w = makeWeight(type, n);
  const x1 = randn(n, 2);
  const xb = randn(n * batch, 3);
  const out = new Float32Array(n * batch);
  const act1 = quantizeActivations(type, x1, 1, n);
  const actB = quantizeActivations(type, xb, batch, n);
  const tVec = timeIt(() => matmulRange(w, act1, out, n, 0, n), budget);
  const tBatch = timeIt(() => matmulRange(w, actB, out, n, 0, n), budget);
  const tQuant = timeIt(() => quantizeActivations(type, xb, batch, n, actB), budget / 4);
  const flops = 2 * n * n;
  console.log(
    [
      typeName(type).padEnd(7),
      (tVec * 1e3).toFixed(2).padStart(9),
      (flops / tVec / 1e9).toFixed(2).padStart(14),
      (w.data.length / tVec / 1e9).toFixed(2).padStart(12),
      (tBatch * 1e3).toFixed(1).padStart(11),
      ((flops * batch) / tBatch / 1e9).toFixed(2).padStart(7),
      (tQuant * 1e3).toFixed(2).padStart(12),
    ].join(" | "),
  );
}
