/**
 * Single-token (matrix x vector) kernels, one per block type (Q8_0 is read in place by dot-quant.ts), that
 * read the weight bytes in place: for one token, decoding a
 * row to integers first and then dotting it costs two passes; these unpack and multiply in one. Same
 * integer sums and scale formulas as dot-quant.ts (so the same results, up to float summation order).
 */
import { GGMLType, rowBytes } from "../tensor/types.ts";
import { readF16 as f16 } from "../tensor/f16.ts";
import { KVALUES_IQ4NL, KVALUES_MXFP4, e8m0Half, kScalesMins, q3kScale } from "../tensor/decode.ts";
import type { Activations, Weight } from "./tensors.ts";

type FusedKernel = (w: Weight, act: Activations, out: Float32Array, rowStart: number, rowEnd: number) => void;

const sc16 = new Int32Array(16);
const mn16 = new Int32Array(16);

/**
 * Q4_K / Q5_K super-block at byte o: unpacks its scales into sc16 (two equal entries per 32 values) and
 * returns the min correction sum_g mn_g * bsum_g (to be scaled by dmin) for super-block B of the (single) token.
 */
function kScalesAndMinSum(src: Uint8Array, o: number, bsums: Int32Array, B: number): number {
  kScalesMins(src, o + 4, sc16, mn16, 0);
  let msum = 0;
  for (let g = 0; g < 16; g++) msum += mn16[g]! * bsums[B * 16 + g]!;
  return msum;
}

/** Q4_K x Q8_K, one token. */
const q4K: FusedKernel = (w, act, out, rowStart, rowEnd) => {
  const src = w.data;
  const rb = rowBytes(w.type, w.ne0);
  const nsb = w.ne0 / 256;
  const { qs: aq, d: ad, bsums } = act;
  for (let r = rowStart; r < rowEnd; r++) {
    let acc = 0;
    for (let B = 0; B < nsb; B++) {
      const o = r * rb + B * 144;
      const msum = kScalesAndMinSum(src, o, bsums, B);
      let isum = 0;
      for (let j = 0; j < 4; j++) {
        const qo = o + 16 + 32 * j;
        const a0 = B * 256 + 64 * j;
        let lo = 0, hi = 0;
        for (let l = 0; l < 32; l += 2) {
          const x0 = src[qo + l]!;
          const x1 = src[qo + l + 1]!;
          lo += (x0 & 15) * aq[a0 + l]! + (x1 & 15) * aq[a0 + l + 1]!;
          hi += (x0 >> 4) * aq[a0 + 32 + l]! + (x1 >> 4) * aq[a0 + 33 + l]!;
        }
        isum += sc16[4 * j]! * lo + sc16[4 * j + 2]! * hi;
      }
      acc += ad[B]! * (f16(src, o) * isum - f16(src, o + 2) * msum);
    }
    out[r] = acc;
  }
};

/** Q6_K x Q8_K, one token. */
const q6K: FusedKernel = (w, act, out, rowStart, rowEnd) => {
  const src = w.data;
  const rb = rowBytes(w.type, w.ne0);
  const nsb = w.ne0 / 256;
  const { qs: aq, d: ad } = act;
  for (let r = rowStart; r < rowEnd; r++) {
    let acc = 0;
    for (let B = 0; B < nsb; B++) {
      const o = r * rb + B * 210;
      let isum = 0;
      for (let h = 0; h < 2; h++) {
        const ql = o + 64 * h;
        const qh = o + 128 + 32 * h;
        const a0 = B * 256 + 128 * h;
        const so = o + 192 + 8 * h;
        for (let half = 0; half < 32; half += 16) {
          let s1 = 0, s2 = 0, s3 = 0, s4 = 0;
          for (let l = half; l < half + 16; l++) {
            const a = src[ql + l]!;
            const c = src[ql + l + 32]!;
            const hb = src[qh + l]!;
            s1 += (((a & 15) | ((hb & 3) << 4)) - 32) * aq[a0 + l]!;
            s2 += (((c & 15) | ((hb & 12) << 2)) - 32) * aq[a0 + 32 + l]!;
            s3 += (((a >> 4) | (hb & 48)) - 32) * aq[a0 + 64 + l]!;
            s4 += (((c >> 4) | ((hb & 192) >> 2)) - 32) * aq[a0 + 96 + l]!;
          }
          const k = half >> 4;
          isum +=
            ((src[so + k]! << 24) >> 24) * s1 +
            ((src[so + k + 2]! << 24) >> 24) * s2 +
            ((src[so + k + 4]! << 24) >> 24) * s3 +
            ((src[so + k + 6]! << 24) >> 24) * s4;
        }
      }
      acc += ad[B]! * f16(src, o + 208) * isum;
    }
    out[r] = acc;
  }
};

/** Q5_K x Q8_K, one token. */
const q5K: FusedKernel = (w, act, out, rowStart, rowEnd) => {
  const src = w.data;
  const rb = rowBytes(w.type, w.ne0);
  const nsb = w.ne0 / 256;
  const { qs: aq, d: ad, bsums } = act;
  for (let r = rowStart; r < rowEnd; r++) {
    let acc = 0;
    for (let B = 0; B < nsb; B++) {
      const o = r * rb + B * 176;
      const msum = kScalesAndMinSum(src, o, bsums, B);
      let isum = 0;
      const qh = o + 16;
      for (let j = 0; j < 4; j++) {
        const qo = o + 48 + 32 * j;
        const a0 = B * 256 + 64 * j;
        const b1 = 2 * j;
        let lo = 0, hi = 0;
        for (let l = 0; l < 32; l++) {
          const x = src[qo + l]!;
          const h = src[qh + l]! >> b1;
          lo += ((x & 15) | ((h & 1) << 4)) * aq[a0 + l]!;
          hi += ((x >> 4) | ((h & 2) << 3)) * aq[a0 + 32 + l]!;
        }
        isum += sc16[4 * j]! * lo + sc16[4 * j + 2]! * hi;
      }
      acc += ad[B]! * (f16(src, o) * isum - f16(src, o + 2) * msum);
    }
    out[r] = acc;
  }
};

/**
 * The 32-value block types whose quants are 16 bytes of nibbles (low nibbles: values 0..15, high: 16..31)
 * looked up in a 16-entry table: Q4_0 (q - 8), IQ4_NL (non-linear values), MXFP4 (E2M1 values), Q4_1 (q).
 * scale(src, o) gives the block scale; the nibbles start at o + qOffset; mOffset (Q4_1) locates the f16
 * offset m that multiplies the activation block sum s.
 */
function nibbleKernel(typeSize: number, qOffset: number, values: Int8Array, scale: (src: Uint8Array, o: number) => number, mOffset = -1): FusedKernel {
  return (w, act, out, rowStart, rowEnd) => {
    const src = w.data;
    const nb = w.ne0 / 32;
    const rb = nb * typeSize;
    const { qs: aq, d: ad, s: as } = act;
    for (let r = rowStart; r < rowEnd; r++) {
      let acc = 0;
      for (let b = 0; b < nb; b++) {
        const o = r * rb + b * typeSize;
        const qo = o + qOffset;
        const a0 = b * 32;
        let s0 = 0, s1 = 0;
        for (let l = 0; l < 16; l++) {
          const x = src[qo + l]!;
          s0 += values[x & 15]! * aq[a0 + l]!;
          s1 += values[x >> 4]! * aq[a0 + 16 + l]!;
        }
        acc += scale(src, o) * ad[b]! * (s0 + s1);
        if (mOffset >= 0) acc += f16(src, o + mOffset) * as[b]!;
      }
      out[r] = acc;
    }
  };
}

/**
 * Q5_0 (bias 16, no offset) and Q5_1 (bias 0, f16 offset m at byte 2): 32 five-bit quants as 16 bytes of
 * nibbles plus 32 high bits, for one token.
 */
function fiveBitKernel(typeSize: number, qhOffset: number, bias: number, mOffset: number): FusedKernel {
  return (w, act, out, rowStart, rowEnd) => {
    const src = w.data;
    const nb = w.ne0 / 32;
    const rb = nb * typeSize;
    const { qs: aq, d: ad, s: as } = act;
    const qsOffset = qhOffset + 4;
    for (let r = rowStart; r < rowEnd; r++) {
      let acc = 0;
      for (let b = 0; b < nb; b++) {
        const o = r * rb + b * typeSize;
        const h = o + qhOffset;
        const qh = (src[h]! | (src[h + 1]! << 8) | (src[h + 2]! << 16) | (src[h + 3]! << 24)) >>> 0;
        const a0 = b * 32;
        let s0 = 0, s1 = 0;
        for (let l = 0; l < 16; l++) {
          const x = src[o + qsOffset + l]!;
          s0 += (((x & 15) | (((qh >>> l) & 1) << 4)) - bias) * aq[a0 + l]!;
          s1 += (((x >> 4) | (((qh >>> (l + 16)) & 1) << 4)) - bias) * aq[a0 + 16 + l]!;
        }
        acc += f16(src, o) * ad[b]! * (s0 + s1);
        if (mOffset >= 0) acc += f16(src, o + mOffset) * as[b]!;
      }
      out[r] = acc;
    }
  };
}

const Q4_0_VALUES = new Int8Array(16).map((_, i) => i - 8);
const Q4_1_VALUES = new Int8Array(16).map((_, i) => i);

/** IQ4_XS x Q8_K, one token. */
const iq4XS: FusedKernel = (w, act, out, rowStart, rowEnd) => {
  const src = w.data;
  const rb = rowBytes(w.type, w.ne0);
  const nsb = w.ne0 / 256;
  const { qs: aq, d: ad } = act;
  for (let r = rowStart; r < rowEnd; r++) {
    let acc = 0;
    for (let B = 0; B < nsb; B++) {
      const o = r * rb + B * 136;
      const sh = src[o + 2]! | (src[o + 3]! << 8);
      let isum = 0;
      for (let ib = 0; ib < 8; ib++) {
        const ls = ((src[o + 4 + (ib >> 1)]! >> (4 * (ib & 1))) & 15) | (((sh >> (2 * ib)) & 3) << 4);
        const qo = o + 8 + 16 * ib;
        const a0 = B * 256 + 32 * ib;
        let s0 = 0, s1 = 0;
        for (let l = 0; l < 16; l++) {
          const x = src[qo + l]!;
          s0 += KVALUES_IQ4NL[x & 15]! * aq[a0 + l]!;
          s1 += KVALUES_IQ4NL[x >> 4]! * aq[a0 + 16 + l]!;
        }
        isum += (ls - 32) * (s0 + s1);
      }
      acc += ad[B]! * f16(src, o) * isum;
    }
    out[r] = acc;
  }
};

/**
 * Q2_K and Q3_K x Q8_K, one token: 2-bit quants in 2 halves x 4 shifts x 32 bytes (Q3_K adds a high bit
 * from hmask: q - 4 when it is clear), groups of 16 with 4-bit scale and min (Q2_K) or 6-bit scale (Q3_K).
 */
function lowBitKernel(isQ3: boolean): FusedKernel {
  return (w, act, out, rowStart, rowEnd) => {
    const src = w.data;
    const rb = rowBytes(w.type, w.ne0);
    const nsb = w.ne0 / 256;
    const typeSize = isQ3 ? 110 : 84;
    const qsOffset = isQ3 ? 32 : 16;
    const { qs: aq, d: ad, bsums } = act;
    for (let r = rowStart; r < rowEnd; r++) {
      let acc = 0;
      for (let B = 0; B < nsb; B++) {
        const o = r * rb + B * typeSize;
        let isum = 0;
        let msum = 0;
        for (let h = 0; h < 2; h++) {
          const qs = o + qsOffset + 32 * h;
          for (let s = 0; s < 4; s++) {
            const shift = 2 * s;
            const bit = 4 * h + s; // Q3_K: hmask bit of these quants (branch-free: the bits are random)
            const a0 = B * 256 + 128 * h + 32 * s;
            let s0 = 0, s1 = 0;
            if (isQ3) {
              for (let l = 0; l < 16; l++) {
                s0 += (((src[qs + l]! >> shift) & 3) - ((((src[o + l]! >> bit) & 1) ^ 1) << 2)) * aq[a0 + l]!;
                s1 += (((src[qs + 16 + l]! >> shift) & 3) - ((((src[o + 16 + l]! >> bit) & 1) ^ 1) << 2)) * aq[a0 + 16 + l]!;
              }
            } else {
              for (let l = 0; l < 16; l++) {
                s0 += ((src[qs + l]! >> shift) & 3) * aq[a0 + l]!;
                s1 += ((src[qs + 16 + l]! >> shift) & 3) * aq[a0 + 16 + l]!;
              }
            }
            const g = 8 * h + 2 * s;
            if (isQ3) {
              isum += q3kScale(src, o + 96, g) * s0 + q3kScale(src, o + 96, g + 1) * s1;
            } else {
              const c0 = src[o + g]!;
              const c1 = src[o + g + 1]!;
              isum += (c0 & 15) * s0 + (c1 & 15) * s1;
              msum += (c0 >> 4) * bsums[B * 16 + g]! + (c1 >> 4) * bsums[B * 16 + g + 1]!;
            }
          }
        }
        acc += isQ3 ? ad[B]! * f16(src, o + 108) * isum : ad[B]! * (f16(src, o + 80) * isum - f16(src, o + 82) * msum);
      }
      out[r] = acc;
    }
  };
}

const FUSED: Partial<Record<GGMLType, FusedKernel>> = {
  [GGMLType.Q4_K]: q4K,
  [GGMLType.Q5_K]: q5K,
  [GGMLType.Q6_K]: q6K,
  [GGMLType.Q5_0]: fiveBitKernel(22, 2, 16, -1),
  [GGMLType.Q5_1]: fiveBitKernel(24, 4, 0, 2),
  [GGMLType.Q4_1]: nibbleKernel(20, 4, Q4_1_VALUES, f16, 2),
  [GGMLType.IQ4_XS]: iq4XS,
  [GGMLType.Q2_K]: lowBitKernel(false),
  [GGMLType.Q3_K]: lowBitKernel(true),
  [GGMLType.Q4_0]: nibbleKernel(18, 2, Q4_0_VALUES, f16),
  [GGMLType.IQ4_NL]: nibbleKernel(18, 2, KVALUES_IQ4NL, f16),
  [GGMLType.MXFP4]: nibbleKernel(17, 1, KVALUES_MXFP4, (src, o) => e8m0Half(src[o]!)),
};

/** The in-place single-token kernel for this weight type, if there is one. out is written at out[r]. */
export function fusedKernel(type: GGMLType): FusedKernel | undefined {
  return FUSED[type];
}
