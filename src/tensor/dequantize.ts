/**
 * Dequantization of GGUF tensor data to float32, value for value what ggml's dequantize_row_* (and
 * gguf-py) compute: the float32 operations are reproduced in the same order (Math.fround after each).
 */
import { GGMLType, typeName } from "./types.ts";
import { F16_TO_F32, bf16BitsToF32 } from "./f16.ts";
import { blockCodec, decodeRow, decodedRow, type DecodedRow } from "./decode.ts";
import { TsmoeError } from "../errors.ts";

const fr = Math.fround;

const FLOAT_TYPES = new Set<GGMLType>([GGMLType.F32, GGMLType.F16, GGMLType.BF16]);

/** True when tsmoe can dequantize and multiply tensors of this type. */
export function isSupportedType(type: number): boolean {
  return FLOAT_TYPES.has(type) || blockCodec(type) !== undefined;
}

/** Throws "tensor NAME has type T, not supported" unless the type is supported. */
export function assertSupported(tensorName: string, type: number): void {
  if (!isSupportedType(type)) throw new TsmoeError(`tensor ${tensorName} has type ${typeName(type)}, not supported`);
}

let scratch: DecodedRow = decodedRow(256);
function scratchFor(n: number): DecodedRow {
  if (scratch.q.length < n) scratch = decodedRow(n);
  return scratch;
}

/** Dequantizes n values of `type` read from src at byte srcByteOffset into dst[dstOffset..]. */
export function dequantizeRow(
  type: GGMLType,
  src: Uint8Array,
  srcByteOffset: number,
  dst: Float32Array,
  dstOffset: number,
  n: number,
): void {
  switch (type) {
    case GGMLType.F32: {
      const abs = src.byteOffset + srcByteOffset;
      if (abs % 4 === 0) {
        dst.set(new Float32Array(src.buffer, abs, n), dstOffset);
      } else {
        const dv = new DataView(src.buffer, abs, n * 4);
        for (let i = 0; i < n; i++) dst[dstOffset + i] = dv.getFloat32(i * 4, true);
      }
      return;
    }
    case GGMLType.F16:
      for (let i = 0, o = srcByteOffset; i < n; i++, o += 2) dst[dstOffset + i] = F16_TO_F32[src[o]! | (src[o + 1]! << 8)]!;
      return;
    case GGMLType.BF16:
      for (let i = 0, o = srcByteOffset; i < n; i++, o += 2) dst[dstOffset + i] = bf16BitsToF32(src[o]! | (src[o + 1]! << 8));
      return;
  }
  if (!blockCodec(type)) throw new TsmoeError(`type ${typeName(type)} is not supported`);
  const r = scratchFor(n);
  const family = decodeRow(type, src, srcByteOffset, n, r);
  const { q, d, m, sc, mn } = r;
  if (family === "q8_0") {
    for (let i = 0; i < n; i++) dst[dstOffset + i] = d[i >> 5]! * q[i]!;
  } else if (family === "q8_1") {
    for (let i = 0; i < n; i++) dst[dstOffset + i] = fr(d[i >> 5]! * q[i]!) + m[i >> 5]!;
  } else {
    for (let g = 0; g < n / 16; g++) {
      const b = g >> 4;
      const dl = fr(d[b]! * sc[g]!);
      const ml = fr(m[b]! * mn[g]!);
      for (let i = g * 16; i < g * 16 + 16; i++) dst[dstOffset + i] = fr(dl * q[i]!) - ml;
    }
  }
}

/** Dequantizes the first n values of a tensor (rows contiguous, n a multiple of the block size). */
export function dequantize(type: GGMLType, src: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  dequantizeRow(type, src, 0, out, 0, n);
  return out;
}
