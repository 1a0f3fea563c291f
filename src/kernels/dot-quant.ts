/**
 * Products of block-quantized weights with quantized activations, with llama.cpp's vec_dot formulas:
 * integer sums per block (exact), float scales applied per block.
 *
 * - q8_0 family x Q8_0: sum_b dw_b * da_b * sum_i qw_i * qa_i
 * - q8_1 family x Q8_1: sum_b dw_b * da_b * sum_i qw_i * qa_i + mw_b * sa_b
 * - k family x Q8_K:    sum_B da_B * (dw_B * sum_g sc_g * sum_i qw_i * qa_i - dmin_B * sum_g mn_g * bsum_g)
 *
 * Each weight row is decoded to integers once (Q8_0 weights are read in place) and then dotted with every
 * token row, so a batch pays the decoding once. Sums of the integer parts are exact; the float parts are
 * computed in double precision (llama.cpp uses float32 with SIMD partial sums: the results agree to
 * float32 rounding).
 */
import { GGMLType, rowBytes } from "../tensor/types.ts";
import { F16_TO_F32 } from "../tensor/f16.ts";
import { blockCodec, decodedRow, type DecodedRow } from "../tensor/decode.ts";
import type { Activations } from "./activations.ts";
import type { Weight } from "./matmul.ts";

let scratch: DecodedRow = decodedRow(256);

function scratchFor(n: number): DecodedRow {
  if (scratch.q.length < n) scratch = decodedRow(n);
  return scratch;
}

/**
 * Q8_0 family: out[t*outStride + r] for rows [r0, r1). wq/blockOffset locate block b of the current row:
 * its 32 quants are wq[base(b) .. base(b)+32).
 */
function dotRowsQ8_0(
  wq: Int8Array,
  rowBase: number,
  blockStride: number,
  wd: Float64Array,
  act: Activations,
  nb: number,
  out: Float32Array,
  outStride: number,
  r: number,
): void {
  const aq = act.qs;
  const ad = act.d;
  const K = act.ne0;
  for (let t = 0; t < act.nTokens; t++) {
    let acc = 0;
    let ao = t * K;
    const dOff = t * nb;
    for (let b = 0; b < nb; b++, ao += 32) {
      const wo = rowBase + b * blockStride;
      let s0 = 0, s1 = 0;
      for (let i = 0; i < 32; i += 4) {
        s0 += wq[wo + i]! * aq[ao + i]! + wq[wo + i + 1]! * aq[ao + i + 1]!;
        s1 += wq[wo + i + 2]! * aq[ao + i + 2]! + wq[wo + i + 3]! * aq[ao + i + 3]!;
      }
      acc += wd[b]! * ad[dOff + b]! * (s0 + s1);
    }
    out[t * outStride + r] = acc;
  }
}

function dotRowsQ8_1(dr: DecodedRow, act: Activations, nb: number, out: Float32Array, outStride: number, r: number): void {
  const { q: wq, d: wd, m: wm } = dr;
  const { qs: aq, d: ad, s: as } = act;
  const K = act.ne0;
  for (let t = 0; t < act.nTokens; t++) {
    let acc = 0;
    let ao = t * K;
    const dOff = t * nb;
    for (let b = 0; b < nb; b++, ao += 32) {
      const wo = b * 32;
      let s0 = 0, s1 = 0;
      for (let i = 0; i < 32; i += 4) {
        s0 += wq[wo + i]! * aq[ao + i]! + wq[wo + i + 1]! * aq[ao + i + 1]!;
        s1 += wq[wo + i + 2]! * aq[ao + i + 2]! + wq[wo + i + 3]! * aq[ao + i + 3]!;
      }
      acc += wd[b]! * ad[dOff + b]! * (s0 + s1) + wm[b]! * as[dOff + b]!;
    }
    out[t * outStride + r] = acc;
  }
}

function dotRowsK(dr: DecodedRow, hasMins: boolean, act: Activations, nsb: number, out: Float32Array, outStride: number, r: number): void {
  const { q: wq, d: wd, m: wdmin, sc, mn } = dr;
  const { qs: aq, d: ad, bsums } = act;
  const K = act.ne0;
  for (let t = 0; t < act.nTokens; t++) {
    let acc = 0;
    const ao = t * K;
    const gOff = t * (K >> 4);
    for (let B = 0; B < nsb; B++) {
      let isum = 0;
      const g0 = B * 16;
      for (let g = 0; g < 16; g++) {
        const wo = (g0 + g) * 16;
        const a = ao + wo;
        let s0 = 0, s1 = 0;
        for (let i = 0; i < 16; i += 4) {
          s0 += wq[wo + i]! * aq[a + i]! + wq[wo + i + 1]! * aq[a + i + 1]!;
          s1 += wq[wo + i + 2]! * aq[a + i + 2]! + wq[wo + i + 3]! * aq[a + i + 3]!;
        }
        isum += sc[g0 + g]! * (s0 + s1);
      }
      let v = wd[B]! * isum;
      if (hasMins) {
        let msum = 0;
        const bo = gOff + g0;
        for (let g = 0; g < 16; g++) msum += mn[g0 + g]! * bsums[bo + g]!;
        v -= wdmin[B]! * msum;
      }
      acc += ad[t * nsb + B]! * v;
    }
    out[t * outStride + r] = acc;
  }
}

const HAS_MINS = new Set<GGMLType>([GGMLType.Q2_K, GGMLType.Q4_K, GGMLType.Q5_K]);

/** out[t * outStride + r] = dot(weight row r, activation row t) for r in [rowStart, rowEnd). */
export function matmulQuantRange(
  w: Weight,
  act: Activations,
  out: Float32Array,
  outStride: number,
  rowStart: number,
  rowEnd: number,
): void {
  const K = w.ne0;
  const codec = blockCodec(w.type)!;
  const rb = rowBytes(w.type, K);
  const nb = K / codec.blockSize;
  const src = w.data;
  const dr = scratchFor(K);

  if (w.type === GGMLType.Q8_0) {
    // quants read in place: block b of row r starts at byte r*rb + 34*b + 2
    const wq = new Int8Array(src.buffer, src.byteOffset, src.byteLength);
    for (let r = rowStart; r < rowEnd; r++) {
      const o = r * rb;
      for (let b = 0; b < nb; b++) dr.d[b] = F16_TO_F32[src[o + 34 * b]! | (src[o + 34 * b + 1]! << 8)]!;
      dotRowsQ8_0(wq, o + 2, 34, dr.d, act, nb, out, outStride, r);
    }
    return;
  }
  const decode = codec.decode;
  const hasMins = HAS_MINS.has(w.type);
  for (let r = rowStart; r < rowEnd; r++) {
    decode(src, r * rb, nb, dr);
    if (codec.family === "q8_0") dotRowsQ8_0(dr.q, 0, 32, dr.d, act, nb, out, outStride, r);
    else if (codec.family === "q8_1") dotRowsQ8_1(dr, act, nb, out, outStride, r);
    else dotRowsK(dr, hasMins, act, nb, out, outStride, r);
  }
}
