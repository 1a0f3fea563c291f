/**
 * Products of F32, F16 and BF16 weights with float activations (F16/BF16 activations arrive already
 * rounded to the weight's type, as llama.cpp does). Each weight row is converted to float32 once and then
 * dotted with every token row.
 */
import { GGMLType } from "../tensor/types.ts";
import { F16_TO_F32, bf16ToF32Table } from "../tensor/f16.ts";
import type { Activations, Weight } from "./tensors.ts";

let rowF32 = new Float32Array(0);
let rowU32 = new Uint32Array(0);

function rowScratch(n: number): void {
  if (rowF32.length < n) {
    rowF32 = new Float32Array(n);
    rowU32 = new Uint32Array(rowF32.buffer);
  }
}

/** sum_i a[ao + i] * b[bo + i] with four accumulators (in double precision). */
export function dotF32(a: Float32Array, ao: number, b: Float32Array, bo: number, n: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    s0 += a[ao + i]! * b[bo + i]!;
    s1 += a[ao + i + 1]! * b[bo + i + 1]!;
    s2 += a[ao + i + 2]! * b[bo + i + 2]!;
    s3 += a[ao + i + 3]! * b[bo + i + 3]!;
  }
  for (; i < n; i++) s0 += a[ao + i]! * b[bo + i]!;
  return s0 + s1 + (s2 + s3);
}

/** A function writing weight row r as float32 into `row` (for F16, BF16 and unaligned F32 data). */
function rowDecoder(w: Weight, row: Float32Array, rowU: Uint32Array): (r: number) => void {
  const K = w.ne0;
  const bytes = w.data;
  const { buffer, byteOffset } = bytes;
  if (w.type === GGMLType.F32) {
    const dv = new DataView(buffer, byteOffset, bytes.byteLength);
    return (r) => {
      for (let i = 0; i < K; i++) row[i] = dv.getFloat32((r * K + i) * 4, true);
    };
  }
  const u16 = byteOffset % 2 === 0 ? new Uint16Array(buffer, byteOffset, K * w.ne1) : undefined;
  if (w.type === GGMLType.F16) {
    return (r) => {
      const o = r * K;
      for (let i = 0; i < K; i++) {
        const h = u16 ? u16[o + i]! : bytes[2 * (o + i)]! | (bytes[2 * (o + i) + 1]! << 8);
        const e = h & 0x7c00;
        // normal numbers by re-biasing the exponent (a 256 KiB table lookup per value is slower)
        if (e !== 0 && e !== 0x7c00) rowU[i] = ((h & 0x8000) << 16) | (((h & 0x7fff) << 13) + 0x38000000);
        else row[i] = F16_TO_F32[h]!;
      }
    };
  }
  // BF16: the float32 bits are the bf16 bits shifted up
  return (r) => {
    const o = r * K;
    if (u16) for (let i = 0; i < K; i++) rowU[i] = u16[o + i]! << 16;
    else for (let i = 0; i < K; i++) rowU[i] = (bytes[2 * (o + i)]! | (bytes[2 * (o + i) + 1]! << 8)) << 16;
  };
}

/** Row wo.. of W dotted with every token row of x: four tokens per pass share each weight load. */
function dotTokens(W: Float32Array, wo: number, x: Float32Array, K: number, T: number, out: Float32Array, outStride: number, r: number): void {
  let t = 0;
  for (; t + 4 <= T; t += 4) {
    const a0 = t * K;
    const a1 = a0 + K;
    const a2 = a1 + K;
    const a3 = a2 + K;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let i = 0; i < K; i++) {
      const wi = W[wo + i]!;
      s0 += wi * x[a0 + i]!;
      s1 += wi * x[a1 + i]!;
      s2 += wi * x[a2 + i]!;
      s3 += wi * x[a3 + i]!;
    }
    out[t * outStride + r] = s0;
    out[(t + 1) * outStride + r] = s1;
    out[(t + 2) * outStride + r] = s2;
    out[(t + 3) * outStride + r] = s3;
  }
  for (; t < T; t++) out[t * outStride + r] = dotF32(W, wo, x, t * K, K);
}

/** out[t * outStride + r] = dot(weight row r, activation row t) for r in [rowStart, rowEnd). */
export function matmulFloatRange(
  w: Weight,
  act: Activations,
  out: Float32Array,
  outStride: number,
  rowStart: number,
  rowEnd: number,
): void {
  const K = w.ne0;
  const T = act.nTokens;
  const x = act.f;
  if (w.type === GGMLType.F32 && w.data.byteOffset % 4 === 0) {
    const W = new Float32Array(w.data.buffer, w.data.byteOffset, K * w.ne1);
    for (let r = rowStart; r < rowEnd; r++) dotTokens(W, r * K, x, K, T, out, outStride, r);
    return;
  }
  if (T < 4 && w.type !== GGMLType.F32 && w.data.byteOffset % 2 === 0) {
    // few tokens: convert through a table inside the dot product instead of decoding the row first
    const u16 = new Uint16Array(w.data.buffer, w.data.byteOffset, K * w.ne1);
    const table = w.type === GGMLType.F16 ? F16_TO_F32 : bf16ToF32Table();
    for (let r = rowStart; r < rowEnd; r++) {
      const o = r * K;
      for (let t = 0; t < T; t++) {
        const xo = t * K;
        let s0 = 0, s1 = 0;
        let i = 0;
        for (; i + 1 < K; i += 2) {
          s0 += table[u16[o + i]!]! * x[xo + i]!;
          s1 += table[u16[o + i + 1]!]! * x[xo + i + 1]!;
        }
        if (i < K) s0 += table[u16[o + i]!]! * x[xo + i]!;
        out[t * outStride + r] = s0 + s1;
      }
    }
    return;
  }
  rowScratch(K);
  const row = rowF32;
  const decode = rowDecoder(w, row, rowU32);
  for (let r = rowStart; r < rowEnd; r++) {
    decode(r);
    dotTokens(row, 0, x, K, T, out, outStride, r);
  }
}
