/**
 * Products of block-quantized weights with quantized activations, with llama.cpp's vec_dot formulas:
 * integer sums per block (exact), float scales applied per block.
 *
 * - q8_0 family x Q8_0: sum_b dw_b * da_b * sum_i qw_i * qa_i
 * - q8_1 family x Q8_1: sum_b dw_b * da_b * sum_i qw_i * qa_i + mw_b * sa_b
 * - k family x Q8_K:    sum_B da_B * (dw_B * sum_g sc_g * sum_i qw_i * qa_i - dmin_B * sum_g mn_g * bsum_g)
 *
 * Each weight row is decoded to integers once (Q8_0 weights are read in place) and then dotted with every
 * token row, so a batch pays the decoding once. Tokens go two at a time through activations packed as
 * qa[t] * 2^21 + qa[t+1] in a double: one multiply-add then serves both tokens, and the two integer sums
 * separate exactly (each group sum is below 2^20 in magnitude, the packed value below 2^41).
 * Sums of the integer parts are exact; the float parts are computed in double precision (llama.cpp uses
 * float32 with SIMD partial sums: the results agree to float32 rounding, see test/kernels-llamacpp.test.ts).
 * A single token goes through the in-place kernels of dot-fused.ts where the type has one.
 */
import { GGMLType, rowBytes } from "../tensor/types.ts";
import { F16_TO_F32 } from "../tensor/f16.ts";
import { blockCodec, decodedRow, type DecodedRow } from "../tensor/decode.ts";
import { packedPairs } from "./activations.ts";
import { fusedKernel } from "./dot-fused.ts";
import type { Activations, Weight } from "./tensors.ts";

let scratch: DecodedRow = decodedRow(256);

function scratchFor(n: number): DecodedRow {
  if (scratch.q.length < n) scratch = decodedRow(n);
  return scratch;
}

/** Pairs of tokens are packed as qa[t] * 2^21 + qa[t+1] (see activations.ts): one product serves two tokens. */
const PACK = 2097152;
const UNPACK = 1 / PACK;

/**
 * q8_0 and q8_1 families, tokens [tStart, tEnd) one at a time. Block b of the weight row has its 32 quants
 * at wq[rowBase + b * blockStride ..] (decoded rows: blockStride 32; Q8_0 read in place: 34), scale wd[b]
 * and, for the q8_1 family, offset wm[b] (which multiplies the activation block sums s).
 */
function dotQ8(wq: Int8Array, rowBase: number, blockStride: number, wd: Float64Array, wm: Float64Array | undefined, act: Activations, nb: number, out: Float32Array, outStride: number, r: number, tStart: number, tEnd: number): void {
  const { qs: aq, d: ad, s: as } = act;
  const K = act.ne0;
  for (let t = tStart; t < tEnd; t++) {
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
      if (wm) acc += wm[b]! * as[dOff + b]!;
    }
    out[t * outStride + r] = acc;
  }
}

/** q8_0 and q8_1 families, token pairs [0, nPairs) from the packed activations (arguments as dotQ8). */
function dotQ8Pairs(wq: Int8Array, rowBase: number, blockStride: number, wd: Float64Array, wm: Float64Array | undefined, act: Activations, nb: number, out: Float32Array, outStride: number, r: number, nPairs: number): void {
  const { pk, d: ad, s: as } = act;
  const K = act.ne0;
  for (let p = 0; p < nPairs; p++) {
    let acc0 = 0, acc1 = 0;
    let ao = p * K;
    const d0 = 2 * p * nb;
    for (let b = 0; b < nb; b++, ao += 32) {
      const wo = rowBase + b * blockStride;
      let x0 = 0, x1 = 0;
      for (let i = 0; i < 32; i += 2) {
        x0 += wq[wo + i]! * pk[ao + i]!;
        x1 += wq[wo + i + 1]! * pk[ao + i + 1]!;
      }
      const x = x0 + x1;
      const hi = Math.round(x * UNPACK);
      const dw = wd[b]!;
      acc0 += dw * ad[d0 + b]! * hi;
      acc1 += dw * ad[d0 + nb + b]! * (x - hi * PACK);
      if (wm) {
        acc0 += wm[b]! * as[d0 + b]!;
        acc1 += wm[b]! * as[d0 + nb + b]!;
      }
    }
    out[2 * p * outStride + r] = acc0;
    out[(2 * p + 1) * outStride + r] = acc1;
  }
}

/** k family, sum over the groups of 16 of super-block B of mn_g * bsum_g for token t. */
function minSum(mn: Int32Array, bsums: Int32Array, B: number, t: number, G: number): number {
  let msum = 0;
  const g0 = B * 16;
  const bo = t * G + g0;
  for (let g = 0; g < 16; g++) msum += mn[g0 + g]! * bsums[bo + g]!;
  return msum;
}

/** k family, tokens [tStart, tEnd). */
function dotK(dr: DecodedRow, hasMins: boolean, act: Activations, nsb: number, out: Float32Array, outStride: number, r: number, tStart: number, tEnd: number): void {
  const { q: wq, d: wd, m: wdmin, sc, mn } = dr;
  const { qs: aq, d: ad, bsums } = act;
  const K = act.ne0;
  for (let t = tStart; t < tEnd; t++) {
    let acc = 0;
    const ao = t * K;
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
      if (hasMins) v -= wdmin[B]! * minSum(mn, bsums, B, t, K >> 4);
      acc += ad[t * nsb + B]! * v;
    }
    out[t * outStride + r] = acc;
  }
}

/**
 * k family, token pairs [0, nPairs). `span`: groups of 16 that share one scale (2 for Q4_K, Q5_K and
 * IQ4_XS, whose scales are per 32 values: their packed sums are separated once per 32 products, which
 * stays within the bound since |q| <= 127 gives |sum| <= 32 * 127 * 127 < 2^20).
 */
function dotKPairs(dr: DecodedRow, hasMins: boolean, span: number, act: Activations, nsb: number, out: Float32Array, outStride: number, r: number, nPairs: number): void {
  const { q: wq, d: wd, m: wdmin, sc, mn } = dr;
  const { pk, d: ad, bsums } = act;
  const K = act.ne0;
  for (let p = 0; p < nPairs; p++) {
    let acc0 = 0, acc1 = 0;
    const ao = p * K;
    const t0 = 2 * p;
    for (let B = 0; B < nsb; B++) {
      let i0 = 0, i1 = 0;
      const g0 = B * 16;
      const len = 16 * span;
      for (let g = 0; g < 16; g += span) {
        const wo = (g0 + g) * 16;
        const a = ao + wo;
        let x0 = 0, x1 = 0;
        for (let i = 0; i < len; i += 2) {
          x0 += wq[wo + i]! * pk[a + i]!;
          x1 += wq[wo + i + 1]! * pk[a + i + 1]!;
        }
        const x = x0 + x1;
        const hi = Math.round(x * UNPACK);
        const c = sc[g0 + g]!;
        i0 += c * hi;
        i1 += c * (x - hi * PACK);
      }
      const dw = wd[B]!;
      let v0 = dw * i0, v1 = dw * i1;
      if (hasMins) {
        v0 -= wdmin[B]! * minSum(mn, bsums, B, t0, K >> 4);
        v1 -= wdmin[B]! * minSum(mn, bsums, B, t0 + 1, K >> 4);
      }
      acc0 += ad[t0 * nsb + B]! * v0;
      acc1 += ad[(t0 + 1) * nsb + B]! * v1;
    }
    out[t0 * outStride + r] = acc0;
    out[(t0 + 1) * outStride + r] = acc1;
  }
}

const HAS_MINS = new Set<GGMLType>([GGMLType.Q2_K, GGMLType.Q4_K, GGMLType.Q5_K]);
const SCALE_PER_32 = new Set<GGMLType>([GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.IQ4_XS]);

/** Activations with their packed token pairs: those made without (see quantizeActivations) get them here, once per object and thread. */
const withPairsCache = new WeakMap<Activations, Activations>();
function withPairs(act: Activations): Activations {
  if (act.nTokens < 2 || act.pk.length > 0) return act;
  let a = withPairsCache.get(act);
  if (!a) withPairsCache.set(act, (a = { ...act, pk: packedPairs(act.qs, act.nTokens, act.ne0) }));
  return a;
}

/** out[t * outStride + r] = dot(weight row r, activation row t) for r in [rowStart, rowEnd). */
export function matmulQuantRange(
  w: Weight,
  actIn: Activations,
  out: Float32Array,
  outStride: number,
  rowStart: number,
  rowEnd: number,
): void {
  const act = withPairs(actIn);
  const K = w.ne0;
  const T = act.nTokens;
  const codec = blockCodec(w.type)!;
  const rb = rowBytes(w.type, K);
  const nb = K / codec.blockSize;
  const src = w.data;
  const dr = scratchFor(K);
  const fused = T === 1 ? fusedKernel(w.type) : undefined;
  if (fused) {
    fused(w, act, out, rowStart, rowEnd);
    return;
  }
  // tokens [0, 2 * nPairs) go through the packed pairs, an odd last token alone
  const nPairs = act.pk.length > 0 ? T >> 1 : 0;
  const t1 = 2 * nPairs;
  if (w.type === GGMLType.Q8_0) {
    // quants read in place: block b of row r starts at byte r*rb + 34*b + 2
    const wq = new Int8Array(src.buffer, src.byteOffset, src.byteLength);
    for (let r = rowStart; r < rowEnd; r++) {
      const o = r * rb;
      for (let b = 0; b < nb; b++) dr.d[b] = F16_TO_F32[src[o + 34 * b]! | (src[o + 34 * b + 1]! << 8)]!;
      if (nPairs) dotQ8Pairs(wq, o + 2, 34, dr.d, undefined, act, nb, out, outStride, r, nPairs);
      dotQ8(wq, o + 2, 34, dr.d, undefined, act, nb, out, outStride, r, t1, T);
    }
    return;
  }
  const decode = codec.decode;
  const hasMins = HAS_MINS.has(w.type);
  const span = SCALE_PER_32.has(w.type) ? 2 : 1;
  for (let r = rowStart; r < rowEnd; r++) {
    decode(src, r * rb, nb, dr);
    if (codec.family !== "k") {
      const wm = codec.family === "q8_1" ? dr.m : undefined;
      if (nPairs) dotQ8Pairs(dr.q, 0, 32, dr.d, wm, act, nb, out, outStride, r, nPairs);
      dotQ8(dr.q, 0, 32, dr.d, wm, act, nb, out, outStride, r, t1, T);
    } else {
      if (nPairs) dotKPairs(dr, hasMins, span, act, nb, out, outStride, r, nPairs);
      dotK(dr, hasMins, act, nb, out, outStride, r, t1, T);
    }
  }
}
