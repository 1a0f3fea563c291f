/** Quantizers and conversions: F16/BF16 edge cases, reference quantizers, activation formats, error bounds. */
import { describe, expect, it } from "vitest";
import { GGMLType, rowBytes, typeName } from "../src/tensor/types.ts";
import {
  F16_TO_F32,
  bf16BitsToF32,
  f32Bits,
  f32FromBits,
  f32ToBf16Bits,
  f32ToF16Bits,
} from "../src/tensor/f16.ts";
import { quantize } from "../src/tensor/quantize.ts";
import { quantizeQ8Blocks, quantizeQ8KBlocks, roundHalfEven } from "../src/tensor/quantize-act.ts";
import { assertSupported, dequantize, dequantizeRow, isSupportedType } from "../src/tensor/dequantize.ts";
import { TsmoeError } from "../src/errors.ts";
import { randn } from "../src/tensor/random.ts";

describe("F16 conversion", () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff],
    [65519.99, 0x7bff],
    [65520, 0x7c00], // halfway to the next (inf): ties to even -> inf
    [1e6, 0x7c00],
    [-Infinity, 0xfc00],
    [Infinity, 0x7c00],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // half of it: tie -> even (0)
    [2 ** -25 * 1.0000002, 0x0001],
    [3 * 2 ** -25, 0x0002], // 1.5 subnormal units: tie -> even (2)
    [5 * 2 ** -25, 0x0002], // 2.5 units -> 2
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [1 + 2 ** -11, 0x3c00], // tie -> even
    [1 + 3 * 2 ** -11, 0x3c02], // tie -> even (up)
    [1 + 2 ** -11 + 2 ** -20, 0x3c01],
    [1e-8, 0x0000],
    [-1e-8, 0x8000],
  ];
  for (const [x, h] of cases) {
    it(`${x} -> 0x${h.toString(16)}`, () => expect(f32ToF16Bits(x)).toBe(h));
  }
  it("NaN -> 0x7E00 (sign kept)", () => {
    expect(f32ToF16Bits(NaN)).toBe(0x7e00);
    expect(f32ToF16Bits(f32FromBits(0xffc00001))).toBe(0xfe00);
  });
  it("round-trips every non-NaN f16 pattern", () => {
    for (let h = 0; h < 65536; h++) {
      if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0) {
        expect(Number.isNaN(F16_TO_F32[h]!)).toBe(true);
        continue;
      }
      if (f32ToF16Bits(F16_TO_F32[h]!) !== h) expect(h).toBe(-1);
    }
  });
  it("decodes every pattern to sign x mantissa x 2^exponent; NaNs keep sign and payload, made quiet", () => {
    const bits = new Uint32Array(F16_TO_F32.buffer, F16_TO_F32.byteOffset, 65536);
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1;
      const exp = (h >>> 10) & 0x1f;
      const mant = h & 0x3ff;
      if (exp === 31 && mant !== 0) {
        if (bits[h] !== (((h & 0x8000) << 16) | 0x7fc00000 | (mant << 13)) >>> 0) expect(h).toBe(-1);
        continue;
      }
      const value = exp === 0 ? sign * mant * 2 ** -24 : exp === 31 ? sign * Infinity : sign * (1024 + mant) * 2 ** (exp - 25);
      if (!Object.is(F16_TO_F32[h], value)) expect(h).toBe(-1);
    }
  });
  it("decodes subnormals, infinities", () => {
    expect(F16_TO_F32[0x0001]).toBe(2 ** -24);
    expect(F16_TO_F32[0x83ff]).toBe(-1023 * 2 ** -24);
    expect(F16_TO_F32[0x7c00]).toBe(Infinity);
    expect(F16_TO_F32[0xfc00]).toBe(-Infinity);
    expect(F16_TO_F32[0x3555]).toBeCloseTo(0.333251953125, 12);
  });
  it("picks the nearest f16 for random floats (ties aside)", () => {
    const xs = randn(20000, 7, 3000);
    for (const x0 of xs) {
      const x = Math.fround(x0 * x0 * x0 * 1e-9); // spread over many binades
      const h = f32ToF16Bits(x);
      const v = F16_TO_F32[h]!;
      const up = F16_TO_F32[(h & 0x7fff) === 0x7bff ? h : h + 1]!;
      const down = (h & 0x7fff) === 0 ? v : F16_TO_F32[h - 1]!;
      if (Math.abs(x - v) > Math.abs(x - up) || Math.abs(x - v) > Math.abs(x - down)) expect([x, v]).toBe(null);
    }
  });
});

describe("BF16 conversion", () => {
  const bits: [number, number][] = [
    [0x3f800000, 0x3f80],
    [0x3f808000, 0x3f80], // tie -> even
    [0x3f818000, 0x3f82], // tie -> even (up)
    [0x3f808001, 0x3f81],
    [0x7f7fffff, 0x7f80], // max float rounds to inf
    [0x7f800000, 0x7f80],
    [0xff800000, 0xff80],
    [0x7f800001, 0x7fc0], // signalling NaN made quiet
    [0xffc00000, 0xffc0],
    [0x00008000, 0x0000], // subnormal tie -> even
    [0x00018000, 0x0002],
    [0x80000000, 0x8000],
  ];
  for (const [f, h] of bits) {
    it(`0x${f.toString(16)} -> 0x${h.toString(16)}`, () => expect(f32ToBf16Bits(f32FromBits(f))).toBe(h));
  }
  it("decodes by shifting", () => {
    expect(bf16BitsToF32(0x3f80)).toBe(1);
    expect(bf16BitsToF32(0xc040)).toBe(-3);
    expect(f32Bits(bf16BitsToF32(0x0001))).toBe(0x00010000);
  });
});

describe("reference quantizers", () => {
  it("Q4_0 / Q5_0 / Q8_0 reproduce values already on their grid exactly", () => {
    const x = new Float32Array(32);
    for (let j = 0; j < 32; j++) x[j] = (j % 16) - 8; // max |x| = 8 at x = -8: d = 1
    expect(Array.from(dequantize(GGMLType.Q4_0, quantize(GGMLType.Q4_0, x, 1, 32), 32))).toEqual(Array.from(x));
    const y = new Float32Array(32);
    for (let j = 0; j < 32; j++) y[j] = j - 16;
    expect(Array.from(dequantize(GGMLType.Q5_0, quantize(GGMLType.Q5_0, y, 1, 32), 32))).toEqual(Array.from(y));
    const z = new Float32Array(32);
    for (let j = 0; j < 32; j++) z[j] = (j * 8 - 127) / 4;
    z[0] = -127 / 4;
    expect(Array.from(dequantize(GGMLType.Q8_0, quantize(GGMLType.Q8_0, z, 1, 32), 32))).toEqual(Array.from(z));
  });
  it("Q4_0 byte layout: f16 d = max/-8, nibbles x*id + 8.5 truncated", () => {
    const x = new Float32Array(32);
    x[0] = 4; // the largest magnitude: d = -0.5
    x[1] = -1;
    x[16] = 1.3;
    const b = quantize(GGMLType.Q4_0, x, 1, 32);
    expect(b.length).toBe(18);
    expect(b[0]! | (b[1]! << 8)).toBe(0xb800); // -0.5
    expect(b[2]).toBe(0 | (5 << 4)); // x0 = 4 -> -8+8.5 = 0.5 -> 0 ; x16 = 1.3*-2+8.5 = 5.9 -> 5
    expect(b[3]! & 15).toBe(10); // -1 * -2 + 8.5 = 10.5 -> 10
    expect(b[4]).toBe(8 | (8 << 4));
  });
  it("Q4_1 / Q5_1 keep the block minimum as m", () => {
    const x = randn(64, 3);
    for (const t of [GGMLType.Q4_1, GGMLType.Q5_1]) {
      const b = quantize(t, x, 2, 32);
      const m0 = F16_TO_F32[b[2]! | (b[3]! << 8)]!;
      expect(m0).toBeCloseTo(Math.min(...x.subarray(0, 32)), 2);
    }
  });
  it("rejects rows that are not whole blocks and unknown types", () => {
    expect(() => quantize(GGMLType.Q4_K, new Float32Array(128), 1, 128)).toThrow(TsmoeError);
    expect(() => quantize(GGMLType.IQ2_XXS, new Float32Array(256), 1, 256)).toThrow(/IQ2_XXS/);
  });

  // max |error| / (max |x| of the row) and rms error / rms(x) over random normal rows
  const bounds: [GGMLType, number, number][] = [
    [GGMLType.F32, 0, 0],
    [GGMLType.F16, 1e-3, 5e-4],
    [GGMLType.BF16, 4e-3, 4e-3],
    [GGMLType.Q8_0, 5e-3, 8e-3],
    [GGMLType.Q5_0, 0.04, 0.06],
    [GGMLType.Q5_1, 0.03, 0.04],
    [GGMLType.Q4_0, 0.08, 0.12],
    [GGMLType.Q4_1, 0.06, 0.08],
    [GGMLType.Q6_K, 0.03, 0.03],
    [GGMLType.Q5_K, 0.05, 0.05],
    [GGMLType.Q4_K, 0.1, 0.1],
  ];
  for (const [t, maxBound, rmsBound] of bounds) {
    it(`${typeName(t)}: quantize -> dequantize error bounds`, () => {
      const rows = 6;
      const n = 512;
      const x = randn(rows * n, 11 + t);
      const bytes = quantize(t, x, rows, n);
      expect(bytes.length).toBe(rows * rowBytes(t, n));
      const y = new Float32Array(rows * n);
      for (let r = 0; r < rows; r++) dequantizeRow(t, bytes, r * rowBytes(t, n), y, r * n, n);
      let amax = 0, maxErr = 0, se = 0, sx = 0;
      for (let i = 0; i < x.length; i++) {
        amax = Math.max(amax, Math.abs(x[i]!));
        maxErr = Math.max(maxErr, Math.abs(x[i]! - y[i]!));
        se += (x[i]! - y[i]!) ** 2;
        sx += x[i]! ** 2;
      }
      expect(maxErr / amax).toBeLessThanOrEqual(maxBound);
      expect(Math.sqrt(se / sx)).toBeLessThanOrEqual(rmsBound);
      if (t !== GGMLType.F32) expect(maxErr).toBeGreaterThan(0);
    });
  }
});

describe("activation quantizers", () => {
  it("Q8_0: d = f16(amax/127), q = round-half-even(x * 127/amax)", () => {
    const x = new Float32Array(32);
    x[0] = 127;
    x[1] = 0.5; // tie -> 0 (roundf would give 1)
    x[2] = 1.5; // tie -> 2
    x[3] = -2.5; // tie -> -2
    x[4] = -127;
    const qs = new Int8Array(32);
    const d = new Float32Array(1);
    quantizeQ8Blocks(x, 0, 32, qs, 0, d, 0);
    expect(d[0]).toBe(1);
    expect(Array.from(qs.subarray(0, 6))).toEqual([127, 0, 2, -2, -127, 0]);
  });
  it("Q8_0 activations agree with the reference quantizer bytes on random data", () => {
    const x = randn(32 * 64, 5);
    const ref = quantize(GGMLType.Q8_0, x, 1, x.length);
    const qs = new Int8Array(x.length);
    const d = new Float32Array(64);
    quantizeQ8Blocks(x, 0, x.length, qs, 0, d, 0);
    let diff = 0;
    for (let b = 0; b < 64; b++) {
      expect(d[b]).toBe(F16_TO_F32[ref[b * 34]! | (ref[b * 34 + 1]! << 8)]);
      for (let j = 0; j < 32; j++) if (qs[b * 32 + j] !== ((ref[b * 34 + 2 + j]! << 24) >> 24)) diff++;
    }
    expect(diff).toBeLessThanOrEqual(2);
  });
  it("Q8_1: s = f16(d * sum(q))", () => {
    const x = randn(64, 9);
    const qs = new Int8Array(64);
    const d = new Float32Array(2);
    const s = new Float32Array(2);
    quantizeQ8Blocks(x, 0, 64, qs, 0, d, 0, s);
    for (let b = 0; b < 2; b++) {
      let sum = 0, amax = 0;
      for (let j = 0; j < 32; j++) sum += qs[b * 32 + j]!, amax = Math.max(amax, Math.abs(x[b * 32 + j]!));
      expect(s[b]).toBe(F16_TO_F32[f32ToF16Bits(Math.fround(Math.fround(amax / 127) * sum))]);
    }
    const bytes = quantize(GGMLType.Q8_1, x, 1, 64);
    expect(bytes.length).toBe(72);
    expect(F16_TO_F32[bytes[38]! | (bytes[39]! << 8)]).toBe(s[1]);
  });
  it("Q8_K: iscale = -127/max, d = 1/iscale, bsums are the 16-value sums", () => {
    const x = randn(512, 13);
    x[300] = 9; // positive max in block 1: its quant is -127, d < 0
    const qs = new Int8Array(512);
    const d = new Float32Array(2);
    const bsums = new Int16Array(32);
    quantizeQ8KBlocks(x, 0, 512, qs, 0, d, 0, bsums);
    expect(qs[300]).toBe(-127);
    expect(d[1]).toBe(Math.fround(1 / Math.fround(-127 / 9)));
    for (let g = 0; g < 32; g++) {
      let sum = 0;
      for (let j = 0; j < 16; j++) sum += qs[g * 16 + j]!;
      expect(bsums[g]).toBe(sum);
    }
    for (let i = 0; i < 512; i++) expect(Math.abs(qs[i]! * d[i >> 8]! - x[i]!)).toBeLessThanOrEqual(Math.abs(d[i >> 8]!) * 0.5001);
    // byte layout: float32 d, int8 qs[256], int16 bsums[16]
    const bytes = quantize(GGMLType.Q8_K, x, 1, 512);
    expect(bytes.length).toBe(584);
    const dv = new DataView(bytes.buffer);
    expect(dv.getFloat32(292, true)).toBe(d[1]);
    expect(dv.getInt8(292 + 4 + 44)).toBe(qs[300]);
    expect(dv.getInt16(292 + 260 + 2 * 5, true)).toBe(bsums[21]);
  });
  it("Q8_K: an all-zero block gives d = 0 and zero sums", () => {
    const qs = new Int8Array(256).fill(3);
    const d = new Float32Array(1).fill(1);
    const bsums = new Int16Array(16).fill(7);
    quantizeQ8KBlocks(new Float32Array(256), 0, 256, qs, 0, d, 0, bsums);
    expect(d[0]).toBe(0);
    expect(qs.every((v) => v === 0)).toBe(true);
    expect(bsums.every((v) => v === 0)).toBe(true);
  });
  it("roundHalfEven", () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 126.5, -126.5].map((v) => roundHalfEven(v) + 0)).toEqual([0, 2, 2, 0, -2, -2, 2, 126, -126]);
  });
});

describe("supported types", () => {
  it("lists every computable type and names unsupported ones", () => {
    for (const t of ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS", "MXFP4"]) {
      expect(isSupportedType(GGMLType[t as keyof typeof GGMLType]), t).toBe(true);
    }
    expect(isSupportedType(GGMLType.IQ2_XXS)).toBe(false);
    expect(isSupportedType(999)).toBe(false);
    expect(() => assertSupported("blk.0.ffn_up_exps.weight", GGMLType.IQ2_XXS)).toThrow(
      new TsmoeError("tensor blk.0.ffn_up_exps.weight has type IQ2_XXS, not supported"),
    );
    expect(() => assertSupported("x", GGMLType.Q4_K)).not.toThrow();
    expect(() => dequantize(GGMLType.TQ1_0, new Uint8Array(54), 256)).toThrow(/TQ1_0/);
  });
});
