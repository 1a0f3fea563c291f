/**
 * The relaxed-SIMD batch and decode kernels of Q4_K, Q5_K and Q6_K (src/kernels/wasm/relaxed.ts) against
 * the SIMD128 ones and the TypeScript reference kernels: bit-identical products for every token-group size
 * and row split (the decode kernels' one-row and two-row paths), with the largest quants against the
 * largest activations. On Node 20 the test sets V8's --experimental-wasm-relaxed-simd through
 * TSMOE_WASM_RELAXED=1 (as the CLI does) and clears both after.
 */
import v8 from "node:v8";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GGMLType, typeName } from "../src/tensor/types.ts";
import { randn, randomBlocks, uniformRng } from "../src/tensor/random.ts";
import { blockCodec } from "../src/tensor/decode.ts";
import { matmulRange, matmulTsRange, quantizeActivations, type Weight } from "../src/kernels/matmul.ts";
import { allocTensorBytes } from "../src/kernels/wasm/memory.ts";
import { relaxedSimd, setRelaxedSimd } from "../src/kernels/wasm/relaxed.ts";
import { type KernelChoice, wasmMatmulRange, wasmRuntime } from "../src/kernels/wasm/runtime.ts";

const TYPES = [GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K];
const had = process.env.TSMOE_WASM_RELAXED;

beforeAll(() => {
  process.env.TSMOE_WASM_RELAXED = "1";
});

afterAll(() => {
  if (had === undefined) delete process.env.TSMOE_WASM_RELAXED;
  else process.env.TSMOE_WASM_RELAXED = had;
  // later test files in this process: relaxed SIMD as the engine has it without the flag
  if (relaxedSimd().flagged) v8.setFlagsFromString("--no-experimental-wasm-relaxed-simd");
});

/** Blocks with every quant at its largest (0..15, 0..31, 0..63 before -32) and scales 63 (Q6_K: -128), random f16 d. */
function largestQuants(type: GGMLType, K: number, N: number): Uint8Array {
  const bytes = randomBlocks(type, K, N, 5);
  const bs = blockCodec(type)!.typeSize;
  for (let o = 0; o < bytes.length; o += bs) {
    if (type === GGMLType.Q6_K) {
      bytes.fill(0xff, o, o + 192);
      bytes.fill(0x80, o + 192, o + 208);
    } else bytes.fill(0xff, o + 4, o + bs);
  }
  return bytes;
}

/** The product through the relaxed or the SIMD128 kernels of kind `choice`, over row ranges cut at random points. */
function product(w: Weight, x: Float32Array, T: number, relaxed: boolean, u: () => number, choice: KernelChoice): Float32Array {
  setRelaxedSimd(relaxed);
  const act = quantizeActivations(w.type, x, T, w.ne0);
  const out = new Float32Array(T * w.ne1 + 3).fill(-1);
  for (let r = 0; r < w.ne1; ) {
    const end = Math.min(w.ne1, r + 1 + Math.floor(u() * w.ne1));
    expect(wasmMatmulRange(w, act, out, w.ne1, r, end, choice)).toBe(true);
    r = end;
  }
  return out;
}

function expectSameBits(a: Float32Array, b: Float32Array, what: string): void {
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) throw new Error(`${what}: element ${i}: ${a[i]} vs ${b[i]}`);
}

describe("relaxed-SIMD batch kernels", () => {
  it("are available with TSMOE_WASM_RELAXED=1 and on by default then", () => {
    expect(wasmRuntime()).toBeDefined();
    expect(relaxedSimd().available).toBe(true);
    expect(relaxedSimd().on).toBe(true);
    expect(relaxedSimd().describe).toMatch(/^relaxed SIMD/);
  });

  for (const type of TYPES) {
    it(`${typeName(type)}: batch and decode kernels bit-identical to the SIMD128 and TypeScript ones (all token groups, odd rows, largest quants)`, () => {
      const u = uniformRng(type + 11);
      for (const [K, N, extreme] of [[256, 37, false], [768, 5, true], [512, 70, true], [2048, 130, false]] as const) {
        const bytes = extreme ? largestQuants(type, K, N) : randomBlocks(type, K, N, K + N);
        const data = allocTensorBytes(bytes.length);
        data.set(bytes);
        const w: Weight = { type, ne0: K, ne1: N, data };
        const runs = [[1, "decode"], [2, "decode"], [3, "decode"], [4, "decode"], [2, "tile"], [3, "tile"], [4, "tile"], [5, "tile"], [7, "tile"], [9, "tile"]] as const;
        for (const [T, choice] of runs) {
          const x = randn(K * T, T + K);
          // the largest activation quants of both signs
          if (extreme) for (let i = 0; i < x.length; i++) x[i] = i % 3 === 0 ? -1 : 1;
          const what = `${typeName(type)} ${choice} K=${K} N=${N} T=${T}`;
          const relaxed = product(w, x, T, true, u, choice);
          const simd128 = product(w, x, T, false, u, choice);
          expectSameBits(simd128, relaxed, `${what} relaxed vs SIMD128`);
          const ref = new Float32Array(T * N + 3).fill(-1);
          matmulTsRange(w, quantizeActivations(type, x, T, K), ref, N, 0, N);
          expectSameBits(ref, relaxed, `${what} relaxed vs TypeScript`);
          setRelaxedSimd(true);
          const viaDispatch = new Float32Array(T * N + 3).fill(-1);
          matmulRange(w, quantizeActivations(type, x, T, K), viaDispatch, N, 0, N);
          expectSameBits(ref, viaDispatch, `${what} matmulRange`);
        }
      }
    });
  }
});
