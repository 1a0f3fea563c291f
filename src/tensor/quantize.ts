/**
 * Quantization of float32 rows into GGUF tensor bytes.
 *
 * - F32, F16, BF16: conversions bit-exact with ggml (round to nearest even; BF16 NaNs made quiet).
 * - Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: llama.cpp's reference quantizers (quantize_row_*_ref, what
 *   llama-quantize writes without an importance matrix), float32 arithmetic reproduced.
 * - Q4_K, Q5_K, Q6_K: a simple min/max quantizer (not llama.cpp's iterative search): valid blocks that
 *   every reader decodes the same way, used to generate test models.
 * - Q8_1, Q8_K: the activation formats, as llama.cpp's CPU backend produces them (see quantize-act.ts).
 */
import { GGMLType, rowBytes, typeName } from "./types.ts";
import { f32ToBf16Bits, f32ToF16Bits, F16_TO_F32, writeF16 } from "./f16.ts";
import { quantizeQ8Blocks, quantizeQ8KBlocks } from "./quantize-act.ts";
import { TsmoeError } from "../errors.ts";

const fr = Math.fround;

type BlockQuantizer = (x: Float32Array, xo: number, dst: Uint8Array, o: number) => void;

/** C's roundf: halves away from zero. */
function roundAway(v: number): number {
  return v < 0 ? -Math.round(-v) : Math.round(v);
}

/** The value of largest magnitude (the first one on ties), as the *_ref quantizers pick it. */
function signedAbsMax(x: Float32Array, xo: number, n: number): number {
  let amax = 0;
  let max = 0;
  for (let j = 0; j < n; j++) {
    const v = x[xo + j]!;
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  return max;
}

function minMax(x: Float32Array, xo: number, n: number): [number, number] {
  let min = Infinity;
  let max = -Infinity;
  for (let j = 0; j < n; j++) {
    const v = x[xo + j]!;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return [min, max];
}

/** C's (int8_t) cast of a float in range: truncation toward zero. */
const trunc = Math.trunc;

const quantQ8_0: BlockQuantizer = (x, xo, dst, o) => {
  let amax = 0;
  for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[xo + j]!));
  const d = fr(amax / 127);
  const id = d ? fr(1 / d) : 0;
  writeF16(dst, o, d);
  for (let j = 0; j < 32; j++) dst[o + 2 + j] = roundAway(fr(x[xo + j]! * id)) & 0xff;
};

const quantQ4_0: BlockQuantizer = (x, xo, dst, o) => {
  const d = fr(signedAbsMax(x, xo, 32) / -8);
  const id = d ? fr(1 / d) : 0;
  writeF16(dst, o, d);
  for (let j = 0; j < 16; j++) {
    const a = Math.min(15, trunc(fr(fr(x[xo + j]! * id) + 8.5)));
    const b = Math.min(15, trunc(fr(fr(x[xo + 16 + j]! * id) + 8.5)));
    dst[o + 2 + j] = a | (b << 4);
  }
};

const quantQ4_1: BlockQuantizer = (x, xo, dst, o) => {
  const [min, max] = minMax(x, xo, 32);
  const d = fr(fr(max - min) / 15);
  const id = d ? fr(1 / d) : 0;
  writeF16(dst, o, d);
  writeF16(dst, o + 2, min);
  for (let j = 0; j < 16; j++) {
    const a = Math.min(15, trunc(fr(fr(fr(x[xo + j]! - min) * id) + 0.5)));
    const b = Math.min(15, trunc(fr(fr(fr(x[xo + 16 + j]! - min) * id) + 0.5)));
    dst[o + 4 + j] = a | (b << 4);
  }
};

function packQ5(q: Int32Array, dst: Uint8Array, qho: number, qso: number): void {
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    dst[qso + j] = (q[j]! & 15) | ((q[j + 16]! & 15) << 4);
    qh |= ((q[j]! >> 4) & 1) << j;
    qh |= ((q[j + 16]! >> 4) & 1) << (j + 16);
  }
  dst[qho] = qh & 0xff;
  dst[qho + 1] = (qh >>> 8) & 0xff;
  dst[qho + 2] = (qh >>> 16) & 0xff;
  dst[qho + 3] = (qh >>> 24) & 0xff;
}

const q5tmp = new Int32Array(32);

const quantQ5_0: BlockQuantizer = (x, xo, dst, o) => {
  const d = fr(signedAbsMax(x, xo, 32) / -16);
  const id = d ? fr(1 / d) : 0;
  writeF16(dst, o, d);
  for (let j = 0; j < 32; j++) q5tmp[j] = Math.min(31, trunc(fr(fr(x[xo + j]! * id) + 16.5)));
  packQ5(q5tmp, dst, o + 2, o + 6);
};

const quantQ5_1: BlockQuantizer = (x, xo, dst, o) => {
  const [min, max] = minMax(x, xo, 32);
  const d = fr(fr(max - min) / 31);
  const id = d ? fr(1 / d) : 0;
  writeF16(dst, o, d);
  writeF16(dst, o + 2, min);
  for (let j = 0; j < 32; j++) q5tmp[j] = trunc(fr(fr(fr(x[xo + j]! - min) * id) + 0.5)) & 0xff;
  packQ5(q5tmp, dst, o + 4, o + 8);
};

// ---- simple k-quant quantizers --------------------------------------------------------------------

const kq = new Int32Array(256);
const subScale = new Float64Array(16);
const subMin = new Float64Array(16);

/** f16 value of x (what a stored f16 decodes to). */
function asF16(x: number): number {
  return F16_TO_F32[f32ToF16Bits(x)]!;
}

/**
 * Q4_K / Q5_K: 8 sub-blocks of 32 with value = (d*sc)*q - dmin*m, q in [0, qmax], sc, m 6-bit.
 * Writes d, dmin and the 12 packed scale bytes of the block at o, and leaves the quants in kq.
 */
function quantKMin(x: Float32Array, xo: number, qmax: number, dst: Uint8Array, o: number): void {
  let maxScale = 0;
  let maxMin = 0;
  for (let j = 0; j < 8; j++) {
    let [min, max] = minMax(x, xo + 32 * j, 32);
    if (min > 0) min = 0;
    subScale[j] = (max - min) / qmax;
    subMin[j] = -min;
    maxScale = Math.max(maxScale, subScale[j]!);
    maxMin = Math.max(maxMin, subMin[j]!);
  }
  const d = asF16(maxScale / 63);
  const dmin = asF16(maxMin / 63);
  writeF16(dst, o, d);
  writeF16(dst, o + 2, dmin);
  const so = o + 4;
  dst.fill(0, so, so + 12);
  for (let j = 0; j < 8; j++) {
    const sc = d > 0 ? Math.min(63, Math.round(subScale[j]! / d)) : 0;
    const m = dmin > 0 ? Math.min(63, Math.round(subMin[j]! / dmin)) : 0;
    if (j < 4) {
      dst[so + j] = sc;
      dst[so + j + 4] = m;
    } else {
      dst[so + j + 4] = (sc & 15) | ((m & 15) << 4);
      dst[so + j - 4]! |= (sc >> 4) << 6;
      dst[so + j]! |= (m >> 4) << 6;
    }
    const scale = fr(d * sc);
    const offset = fr(dmin * m);
    for (let l = 0; l < 32; l++) {
      const v = scale > 0 ? Math.round((x[xo + 32 * j + l]! + offset) / scale) : 0;
      kq[32 * j + l] = Math.max(0, Math.min(qmax, v));
    }
  }
}

const quantQ4_K: BlockQuantizer = (x, xo, dst, o) => {
  quantKMin(x, xo, 15, dst, o);
  for (let j = 0; j < 4; j++) {
    for (let l = 0; l < 32; l++) dst[o + 16 + 32 * j + l] = kq[64 * j + l]! | (kq[64 * j + 32 + l]! << 4);
  }
};

const quantQ5_K: BlockQuantizer = (x, xo, dst, o) => {
  quantKMin(x, xo, 31, dst, o);
  dst.fill(0, o + 16, o + 48);
  for (let j = 0; j < 4; j++) {
    for (let l = 0; l < 32; l++) {
      const a = kq[64 * j + l]!;
      const b = kq[64 * j + 32 + l]!;
      dst[o + 48 + 32 * j + l] = (a & 15) | ((b & 15) << 4);
      dst[o + 16 + l]! |= ((a >> 4) << (2 * j)) | ((b >> 4) << (2 * j + 1));
    }
  }
};

/** Q6_K: 16 groups of 16 with value = (d*sc)*q, q in [-32, 31], sc int8. */
const quantQ6_K: BlockQuantizer = (x, xo, dst, o) => {
  let maxScale = 0;
  let absMaxScale = 0;
  for (let g = 0; g < 16; g++) {
    subScale[g] = signedAbsMax(x, xo + 16 * g, 16) / -32;
    if (Math.abs(subScale[g]!) > absMaxScale) {
      absMaxScale = Math.abs(subScale[g]!);
      maxScale = subScale[g]!;
    }
  }
  const d = maxScale !== 0 ? asF16(maxScale / -128) : 0;
  writeF16(dst, o + 208, d);
  for (let g = 0; g < 16; g++) {
    const sc = d !== 0 ? Math.max(-128, Math.min(127, Math.round(subScale[g]! / d))) : 0;
    dst[o + 192 + g] = sc & 0xff;
    const scale = fr(d * sc);
    for (let l = 0; l < 16; l++) {
      const v = scale !== 0 ? Math.round(x[xo + 16 * g + l]! / scale) : 0;
      kq[16 * g + l] = Math.max(-32, Math.min(31, v)) + 32;
    }
  }
  for (let h = 0; h < 2; h++) {
    for (let l = 0; l < 32; l++) {
      const q1 = kq[128 * h + l]!;
      const q2 = kq[128 * h + l + 32]!;
      const q3 = kq[128 * h + l + 64]!;
      const q4 = kq[128 * h + l + 96]!;
      dst[o + 64 * h + l] = (q1 & 15) | ((q3 & 15) << 4);
      dst[o + 64 * h + l + 32] = (q2 & 15) | ((q4 & 15) << 4);
      dst[o + 128 + 32 * h + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
    }
  }
};

// ---- activation formats as bytes ---------------------------------------------------------------------

const actQs = new Int8Array(256);
const actD = new Float32Array(1);
const actS = new Float32Array(1);
const actBsums = new Int16Array(16);

const quantQ8_1: BlockQuantizer = (x, xo, dst, o) => {
  quantizeQ8Blocks(x, xo, 32, actQs, 0, actD, 0, actS);
  writeF16(dst, o, actD[0]!);
  writeF16(dst, o + 2, actS[0]!);
  for (let j = 0; j < 32; j++) dst[o + 4 + j] = actQs[j]! & 0xff;
};

const quantQ8_K: BlockQuantizer = (x, xo, dst, o) => {
  quantizeQ8KBlocks(x, xo, 256, actQs, 0, actD, 0, actBsums);
  const dv = new DataView(dst.buffer, dst.byteOffset + o, 292);
  dv.setFloat32(0, actD[0]!, true);
  for (let j = 0; j < 256; j++) dst[o + 4 + j] = actQs[j]! & 0xff;
  for (let g = 0; g < 16; g++) dv.setInt16(260 + 2 * g, actBsums[g]!, true);
};

const BLOCK_QUANTIZERS: Partial<Record<GGMLType, { blockSize: number; typeSize: number; q: BlockQuantizer }>> = {
  [GGMLType.Q8_0]: { blockSize: 32, typeSize: 34, q: quantQ8_0 },
  [GGMLType.Q4_0]: { blockSize: 32, typeSize: 18, q: quantQ4_0 },
  [GGMLType.Q4_1]: { blockSize: 32, typeSize: 20, q: quantQ4_1 },
  [GGMLType.Q5_0]: { blockSize: 32, typeSize: 22, q: quantQ5_0 },
  [GGMLType.Q5_1]: { blockSize: 32, typeSize: 24, q: quantQ5_1 },
  [GGMLType.Q4_K]: { blockSize: 256, typeSize: 144, q: quantQ4_K },
  [GGMLType.Q5_K]: { blockSize: 256, typeSize: 176, q: quantQ5_K },
  [GGMLType.Q6_K]: { blockSize: 256, typeSize: 210, q: quantQ6_K },
  [GGMLType.Q8_1]: { blockSize: 32, typeSize: 36, q: quantQ8_1 },
  [GGMLType.Q8_K]: { blockSize: 256, typeSize: 292, q: quantQ8_K },
};

/** Types `quantize` can write. */
export const QUANTIZE_TYPES: readonly GGMLType[] = [GGMLType.F32, GGMLType.F16, GGMLType.BF16, ...Object.keys(BLOCK_QUANTIZERS).map(Number)];

/** Quantizes nRows rows of rowLen floats (src, row-major) to `type`; returns the tensor bytes. */
export function quantize(type: GGMLType, src: Float32Array, nRows: number, rowLen: number): Uint8Array {
  const n = nRows * rowLen;
  if (src.length < n) throw new TsmoeError(`quantize: ${src.length} values given for ${nRows} rows of ${rowLen}`);
  switch (type) {
    case GGMLType.F32:
      return new Uint8Array(Float32Array.from(src.subarray(0, n)).buffer);
    case GGMLType.F16:
    case GGMLType.BF16: {
      const out = new Uint16Array(n);
      const conv = type === GGMLType.F16 ? f32ToF16Bits : f32ToBf16Bits;
      for (let i = 0; i < n; i++) out[i] = conv(src[i]!);
      return new Uint8Array(out.buffer);
    }
  }
  const bq = BLOCK_QUANTIZERS[type];
  if (!bq) throw new TsmoeError(`quantize: type ${typeName(type)} is not supported`);
  if (rowLen % bq.blockSize !== 0) {
    throw new TsmoeError(`quantize: row length ${rowLen} is not a multiple of ${typeName(type)}'s block size ${bq.blockSize}`);
  }
  const out = new Uint8Array(nRows * rowBytes(type, rowLen));
  const nBlocks = n / bq.blockSize;
  for (let b = 0; b < nBlocks; b++) bq.q(src, b * bq.blockSize, out, b * bq.typeSize);
  return out;
}

