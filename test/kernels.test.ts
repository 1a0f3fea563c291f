/**
 * Matmul kernels for every supported weight type: against a float64 reference built from the dequantized
 * weights and the dequantized (quantized) activations (tight), against a plain float dot product with the
 * original activations (bounded by the activation rounding), row ranges, odd shapes, several tokens.
 */
import { describe, expect, it } from "vitest";
import { GGMLType, rowBytes, typeName } from "../src/tensor/types.ts";
import { dequantizeRow } from "../src/tensor/dequantize.ts";
import { quantize } from "../src/tensor/quantize.ts";
import { F16_TO_F32 } from "../src/tensor/f16.ts";
import { randn, randomBlocks } from "../src/tensor/random.ts";
import { getRowsF32, matmul, matmulRange, quantizeActivations, vecDotType, type Activations, type Weight } from "../src/kernels/matmul.ts";
import { TsmoeError } from "../src/errors.ts";

const ALL_TYPES: GGMLType[] = [
  GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1,
  GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K, GGMLType.IQ4_NL, GGMLType.IQ4_XS, GGMLType.MXFP4,
];
const QUANTIZABLE = new Set<GGMLType>([
  GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1,
  GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K,
]);

/** [values, bytes] per block of the block-quantized types. */
const BLOCK: Partial<Record<GGMLType, [number, number]>> = {
  [GGMLType.Q4_0]: [32, 18], [GGMLType.Q5_0]: [32, 22], [GGMLType.Q8_0]: [32, 34], [GGMLType.IQ4_NL]: [32, 18], [GGMLType.MXFP4]: [32, 17],
  [GGMLType.Q4_1]: [32, 20], [GGMLType.Q5_1]: [32, 24], [GGMLType.Q2_K]: [256, 84], [GGMLType.Q3_K]: [256, 110],
  [GGMLType.Q4_K]: [256, 144], [GGMLType.Q5_K]: [256, 176], [GGMLType.Q6_K]: [256, 210], [GGMLType.IQ4_XS]: [256, 136],
};

function makeWeight(type: GGMLType, ne0: number, ne1: number, seed: number, fromFloat: boolean): Weight {
  const data = fromFloat ? quantize(type, randn(ne0 * ne1, seed, 1 / Math.sqrt(ne0)), ne1, ne0) : randomBlocks(type, ne0, ne1, seed);
  return { type, ne0, ne1, data };
}

/** The activations as the kernel sees them, back in float64. */
function dequantActivations(act: Activations): Float64Array {
  const n = act.nTokens * act.ne0;
  const out = new Float64Array(n);
  if (act.f.length) {
    for (let i = 0; i < n; i++) out[i] = act.f[i]!;
    return out;
  }
  const bs = act.dotType === GGMLType.Q8_K ? 256 : 32;
  for (let i = 0; i < n; i++) out[i] = act.qs[i]! * act.d[Math.floor(i / bs)]!;
  return out;
}

/** Upper bound of |x - x as quantized| per element. */
function activationErrorBound(act: Activations, x: Float32Array): Float64Array {
  const n = act.nTokens * act.ne0;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (act.dotType === GGMLType.F32) out[i] = 0;
    else if (act.dotType === GGMLType.F16) out[i] = Math.abs(x[i]!) * 2 ** -11 + 2 ** -25;
    else if (act.dotType === GGMLType.BF16) out[i] = Math.abs(x[i]!) * 2 ** -8;
    else {
      const bs = act.dotType === GGMLType.Q8_K ? 256 : 32;
      const b0 = Math.floor(i / bs) * bs;
      let amax = 0;
      for (let j = b0; j < b0 + bs; j++) amax = Math.max(amax, Math.abs(x[j]!));
      out[i] = (amax / 127) * 0.5 * 1.002 + amax * 2 ** -10; // half a step (+ f16 rounding of the scale)
    }
  }
  return out;
}

function checkType(type: GGMLType, ne0: number, ne1: number, nTokens: number, fromFloat: boolean, seed: number): void {
  const w = makeWeight(type, ne0, ne1, seed, fromFloat);
  const x = randn(nTokens * ne0, seed + 1);
  const out = new Float32Array(nTokens * ne1).fill(NaN);
  matmul(w, x, nTokens, out);

  const act = quantizeActivations(type, x, nTokens, ne0);
  expect(act.dotType).toBe(vecDotType(type));
  const xa = dequantActivations(act);
  const xErr = activationErrorBound(act, x);
  const wRow = new Float32Array(ne0);
  const rb = rowBytes(type, ne0);
  let worstTight = 0;
  let worstLoose = 0;
  for (let r = 0; r < ne1; r++) {
    dequantizeRow(type, w.data, r * rb, wRow, 0, ne0);
    // Q8_1 activations carry s = f16(d * sum(q)): the weights' offsets m multiply that rounded value
    const withOffsets = type === GGMLType.Q4_1 || type === GGMLType.Q5_1;
    const bb = withOffsets ? BLOCK[type]![1] : 0;
    for (let t = 0; t < nTokens; t++) {
      let ref = 0, mag = 0, plain = 0, bound = 0, slack = 0;
      for (let i = 0; i < ne0; i++) {
        const wi = wRow[i]!;
        ref += wi * xa[t * ne0 + i]!;
        mag += Math.abs(wi * xa[t * ne0 + i]!);
        plain += wi * x[t * ne0 + i]!;
        bound += Math.abs(wi) * xErr[t * ne0 + i]!;
      }
      if (withOffsets) {
        for (let b = 0; b < ne0 / 32; b++) {
          const o = r * rb + b * bb + 2;
          const m = F16_TO_F32[w.data[o]! | (w.data[o + 1]! << 8)]!;
          slack += Math.abs(m) * Math.abs(act.s[t * (ne0 / 32) + b]!) * 2 ** -11;
        }
      }
      const got = out[t * ne1 + r]!;
      expect(Number.isFinite(got)).toBe(true);
      worstTight = Math.max(worstTight, Math.abs(got - ref) / (2e-6 * mag + slack + 1e-30));
      worstLoose = Math.max(worstLoose, Math.abs(got - plain) / (bound + 2e-6 * mag + slack + 1e-30));
    }
  }
  expect(worstTight, `${typeName(type)}: error vs float64 reference over tolerance`).toBeLessThanOrEqual(1);
  expect(worstLoose, `${typeName(type)}: error vs plain float dot over the activation rounding bound`).toBeLessThanOrEqual(1);

  // any split of the rows gives the same values (this is how the worker pool uses matmulRange)
  const split = new Float32Array(nTokens * ne1).fill(NaN);
  const cut = Math.floor(ne1 / 3);
  matmulRange(w, act, split, ne1, cut, ne1);
  matmulRange(w, act, split, ne1, 0, cut);
  expect(Array.from(split)).toEqual(Array.from(out));
}

describe("matmul kernels, every weight type", () => {
  for (const type of ALL_TYPES) {
    const bs = BLOCK[type]?.[0] ?? 32;
    const isFloat = BLOCK[type] === undefined; // random bytes would be NaNs: float weights come from floats
    const what = isFloat ? "random values" : "random blocks";
    it(`${typeName(type)}: ${what}, 1 token, odd row count`, () => checkType(type, 2 * bs, 7, 1, isFloat, 100 + type));
    it(`${typeName(type)}: ${what}, 5 tokens, several blocks per row`, () => checkType(type, bs === 256 ? 512 : 96, 13, 5, isFloat, 200 + type));
    if (isFloat) it(`${typeName(type)}: odd row length, 1, 3 and 6 tokens`, () => [1, 3, 6].forEach((T) => checkType(type, 37, 5, T, true, 400 + T)));
    if (QUANTIZABLE.has(type)) {
      it(`${typeName(type)}: weights quantized from floats, 3 tokens`, () => checkType(type, 512, 9, 3, true, 300 + type));
    }
  }
  it("F32 weights at an unaligned byte offset and F16/BF16 at odd offsets give the same results", () => {
    for (const type of [GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q4_K]) {
      const w = makeWeight(type, 256, 5, 7, true);
      const shifted = new Uint8Array(w.data.length + 1);
      shifted.set(w.data, 1);
      const w2: Weight = { ...w, data: shifted.subarray(1) };
      const x = randn(2 * 256, 8);
      const a = new Float32Array(10);
      const b = new Float32Array(10);
      matmul(w, x, 2, a);
      matmul(w2, x, 2, b);
      expect(Array.from(b)).toEqual(Array.from(a));
    }
  });
});

describe("activation preparation", () => {
  it("maps weight types to llama.cpp's vec_dot_type", () => {
    const want: [GGMLType, GGMLType][] = [
      [GGMLType.F32, GGMLType.F32], [GGMLType.F16, GGMLType.F16], [GGMLType.BF16, GGMLType.BF16],
      [GGMLType.Q4_0, GGMLType.Q8_0], [GGMLType.Q5_0, GGMLType.Q8_0], [GGMLType.Q8_0, GGMLType.Q8_0], [GGMLType.IQ4_NL, GGMLType.Q8_0],
      [GGMLType.MXFP4, GGMLType.Q8_0], [GGMLType.Q4_1, GGMLType.Q8_1], [GGMLType.Q5_1, GGMLType.Q8_1], [GGMLType.Q2_K, GGMLType.Q8_K],
      [GGMLType.Q3_K, GGMLType.Q8_K], [GGMLType.Q4_K, GGMLType.Q8_K], [GGMLType.Q5_K, GGMLType.Q8_K], [GGMLType.Q6_K, GGMLType.Q8_K],
      [GGMLType.IQ4_XS, GGMLType.Q8_K],
    ];
    for (const [w, d] of want) expect(typeName(vecDotType(w)), typeName(w)).toBe(typeName(d));
    expect(() => vecDotType(GGMLType.IQ2_XXS)).toThrow(TsmoeError);
  });
  it("reuses the buffers of earlier activations of the same format and never the caller's input", () => {
    const x = randn(512, 3);
    const a1 = quantizeActivations(GGMLType.Q4_K, x, 2, 256);
    const a2 = quantizeActivations(GGMLType.Q6_K, x, 1, 256, a1);
    expect(a2.qs.buffer).toBe(a1.qs.buffer);
    expect(a2.qs.buffer).toBeInstanceOf(SharedArrayBuffer);
    const f = quantizeActivations(GGMLType.F32, x, 2, 256);
    expect(f.f.buffer).toBe(x.buffer);
    const h = quantizeActivations(GGMLType.F16, x, 2, 256, f);
    expect(h.f.buffer).not.toBe(x.buffer);
  });
  it("rejects mismatched activations and bad row ranges", () => {
    const w = makeWeight(GGMLType.Q8_0, 64, 4, 1, true);
    const act = quantizeActivations(GGMLType.Q4_0, randn(64, 2), 1, 64);
    expect(() => matmulRange(w, act, new Float32Array(4), 4, 0, 4)).toThrow(TsmoeError);
    const ok = quantizeActivations(GGMLType.Q8_0, randn(64, 2), 1, 64);
    expect(() => matmulRange(w, ok, new Float32Array(4), 4, 0, 5)).toThrow(TsmoeError);
    expect(() => quantizeActivations(GGMLType.Q4_K, randn(128, 2), 1, 128)).toThrow(/block size/);
  });
});

describe("getRowsF32", () => {
  it("dequantizes the selected rows", () => {
    for (const type of [GGMLType.F32, GGMLType.Q6_K, GGMLType.Q4_0]) {
      const w = makeWeight(type, 256, 6, 5, true);
      const out = new Float32Array(3 * 256);
      getRowsF32(w, [5, 0, 5], out);
      const want = new Float32Array(256);
      dequantizeRow(type, w.data, 5 * rowBytes(type, 256), want, 0, 256);
      expect(Array.from(out.subarray(0, 256))).toEqual(Array.from(want));
      expect(Array.from(out.subarray(512))).toEqual(Array.from(want));
      expect(() => getRowsF32(w, [6], out)).toThrow(TsmoeError);
    }
  });
});
