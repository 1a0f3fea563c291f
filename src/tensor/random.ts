/**
 * Seeded pseudo-random numbers (xorshift32 + Box-Muller) and random quantized blocks for tests and
 * benchmarks: the same seed gives the same values on every machine.
 */
import { GGMLType, rowBytes, typeName } from "./types.ts";
import { blockCodec } from "./decode.ts";
import { f32ToF16Bits } from "./f16.ts";
import { TsmoeError } from "../errors.ts";

/** A uniform generator on (0, 1). */
export function uniformRng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s + 0.5) / 4294967296;
  };
}

/** n normal draws with standard deviation `scale`. */
export function randn(n: number, seed: number, scale = 1): Float32Array {
  const u = uniformRng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return out;
}

/** Byte offsets of the f16 scale fields within one block, per block-quantized type. */
const SCALE_FIELDS: Partial<Record<GGMLType, number[]>> = {
  [GGMLType.Q4_0]: [0], [GGMLType.Q5_0]: [0], [GGMLType.Q8_0]: [0], [GGMLType.IQ4_NL]: [0], [GGMLType.Q4_1]: [0, 2],
  [GGMLType.Q5_1]: [0, 2], [GGMLType.Q2_K]: [80, 82], [GGMLType.Q3_K]: [108], [GGMLType.Q4_K]: [0, 2], [GGMLType.Q5_K]: [0, 2],
  [GGMLType.Q6_K]: [208], [GGMLType.IQ4_XS]: [0], [GGMLType.MXFP4]: [],
};

/**
 * ne1 rows of ne0 values of a block-quantized type as random bytes (every bit pattern of quants and
 * sub-block scales occurs) with finite, moderate block scales: f16 scales of magnitude 0.002..0.052 and
 * random sign, MXFP4 exponents 2^-10..2^-3. For types without a quantizer, or to test every bit pattern.
 */
export function randomBlocks(type: GGMLType, ne0: number, ne1: number, seed: number): Uint8Array {
  const codec = blockCodec(type);
  const fields = SCALE_FIELDS[type];
  if (!codec || !fields) throw new TsmoeError(`randomBlocks: ${typeName(type)} is not a block-quantized type`);
  const u = uniformRng(seed);
  const out = new Uint8Array(rowBytes(type, ne0) * ne1);
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(u() * 256);
  const nBlocks = out.length / codec.typeSize;
  for (let b = 0; b < nBlocks; b++) {
    const o = b * codec.typeSize;
    if (type === GGMLType.MXFP4) out[o] = 118 + Math.floor(u() * 8);
    for (const f of fields) {
      const h = f32ToF16Bits((u() < 0.5 ? -1 : 1) * (0.002 + 0.05 * u()));
      out[o + f] = h & 0xff;
      out[o + f + 1] = h >> 8;
    }
  }
  return out;
}
