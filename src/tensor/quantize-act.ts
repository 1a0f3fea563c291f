/**
 * Activation quantizers: how llama.cpp's CPU backend (x86, AVX2 build: the machine that made the
 * fixtures) quantizes an activation row before an integer dot product.
 *
 * - Q8_0 / Q8_1 (quantize_row_q8_0 / _q8_1, AVX2 path): blocks of 32, amax = max |x|, d = amax/127 stored
 *   as f16, multiplier id = 127/amax (0 when amax = 0), q = round-half-even(x * id). Q8_1 adds
 *   s = f16(d * sum(q)) with the float32 d. (The portable *_ref code uses id = 1/d and roundf; the two
 *   agree except in rare last-bit / exact-half cases.)
 * - Q8_K (quantize_row_q8_K_ref, used on x86 too): blocks of 256, max = the first value of largest
 *   magnitude, iscale = -127/max, q = min(127, round-half-even(iscale * x)), d = 1/iscale (float32),
 *   bsums = sums of q over groups of 16.
 *
 * Scales are returned as float values (the f16-rounded value for Q8_0/Q8_1), quants as Int8Array.
 * All arithmetic is float32 (Math.fround after each operation), as in C.
 */

import { F16_TO_F32, f32ToF16Bits } from "./f16.ts";

const fr = Math.fround;
const RNE_MAGIC = 6755399441055744; // 1.5 * 2^52: (v + M) - M rounds v to the nearest integer, ties to even

/** Round half to even (what _mm256_round_ps(_MM_ROUND_NEAREST) and ggml's nearest_int do). */
export function roundHalfEven(v: number): number {
  return v + RNE_MAGIC - RNE_MAGIC;
}

/**
 * Quantizes n values (a multiple of 32) of x from xo to Q8_0 (s === undefined) or Q8_1 (s given):
 * qs[qo..qo+n), d[bo..bo+n/32) (and s[bo..]).
 */
export function quantizeQ8Blocks(
  x: Float32Array,
  xo: number,
  n: number,
  qs: Int8Array,
  qo: number,
  d: Float32Array,
  bo: number,
  s?: Float32Array,
): void {
  for (let b = 0; b < n / 32; b++) {
    const base = xo + b * 32;
    let amax = 0;
    for (let j = 0; j < 32; j++) {
      const a = Math.abs(x[base + j]!);
      if (a > amax) amax = a;
    }
    const dd = fr(amax / 127);
    d[bo + b] = F16_TO_F32[f32ToF16Bits(dd)]!;
    const id = amax !== 0 ? fr(127 / amax) : 0;
    let sum = 0;
    const o = qo + b * 32;
    for (let j = 0; j < 32; j++) {
      const q = roundHalfEven(fr(x[base + j]! * id));
      qs[o + j] = q;
      sum += q;
    }
    if (s) s[bo + b] = F16_TO_F32[f32ToF16Bits(fr(dd * sum))]!;
  }
}

/**
 * Quantizes n values (a multiple of 256) of x from xo to Q8_K: qs[qo..qo+n), d[bo..bo+n/256),
 * bsums[bo*16..bo*16+n/16).
 */
export function quantizeQ8KBlocks(
  x: Float32Array,
  xo: number,
  n: number,
  qs: Int8Array,
  qo: number,
  d: Float32Array,
  bo: number,
  bsums: Int16Array | Int32Array,
): void {
  for (let b = 0; b < n / 256; b++) {
    const base = xo + b * 256;
    const o = qo + b * 256;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 256; j++) {
      const v = x[base + j]!;
      const a = Math.abs(v);
      if (a > amax) {
        amax = a;
        max = v;
      }
    }
    if (amax === 0) {
      d[bo + b] = 0;
      qs.fill(0, o, o + 256);
      bsums.fill(0, (bo + b) * 16, (bo + b) * 16 + 16);
      continue;
    }
    const iscale = fr(-127 / max);
    for (let j = 0; j < 256; j++) {
      const v = roundHalfEven(fr(iscale * x[base + j]!));
      qs[o + j] = v > 127 ? 127 : v;
    }
    for (let g = 0; g < 16; g++) {
      let sum = 0;
      for (let j = 0; j < 16; j++) sum += qs[o + g * 16 + j]!;
      bsums[(bo + b) * 16 + g] = sum;
    }
    d[bo + b] = fr(1 / iscale);
  }
}
