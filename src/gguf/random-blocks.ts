/**
 * Random quantized tensor data written block by block, for speed benchmarks at real model sizes: every byte
 * of a block is random except its scale fields, which are set to finite, modest F16 (or E8M0) values chosen so
 * the weights' standard deviation is about `std` (0.75x..1.25x from block to block). Nothing is quantized
 * from float values, so an 18 GB file takes about as long as the disk takes to write it.
 *
 * Block layouts (ggml): Q8_0 d | qs[32]; Q4_K d dmin scales[12] qs[128]; Q5_K d dmin scales[12] qh[32] qs[128];
 * Q6_K ql[128] qh[64] scales[16] d; MXFP4 e qs[16].
 */
import { randomFillSync } from "node:crypto";
import { f32ToF16Bits } from "../tensor/f16.ts";
import { GGMLType, typeTraits } from "../tensor/types.ts";

interface BlockLayout {
  /** byte offsets of the F16 scale fields: [d] or [d, dmin] */
  f16At: number[];
  /** typical |quant x sub-scale| of a weight when d = 1; the second factor: dmin relative to d */
  spread: number;
  dminOverD?: number;
}

const LAYOUTS: Partial<Record<GGMLType, BlockLayout>> = {
  // int8 quants: rms 74
  [GGMLType.Q8_0]: { f16At: [0], spread: 74 },
  // d x 6-bit scale x 4/5-bit quant minus dmin x 6-bit min (dmin centres them): rms about 260 / 525 d
  [GGMLType.Q4_K]: { f16At: [0, 2], spread: 260, dminOverD: 7.5 },
  [GGMLType.Q5_K]: { f16At: [0, 2], spread: 525, dminOverD: 15.5 },
  // int8 scales (rms 74) x (6-bit quant - 32) (sd 18.5)
  [GGMLType.Q6_K]: { f16At: [208], spread: 1370 },
};

/** kvalues of MXFP4 have rms 5.85; the E8M0 byte e scales them by 2^(e - 128) */
const MXFP4_RMS = 5.85;

/** Types whose blocks `randomBlocks` writes directly. */
export function hasRandomBlocks(type: GGMLType): boolean {
  return type === GGMLType.MXFP4 || LAYOUTS[type] !== undefined;
}

/** 16 F16 bit patterns spread over 0.75x..1.25x of `v` */
function f16Table(v: number): Uint16Array {
  const t = new Uint16Array(16);
  for (let i = 0; i < 16; i++) t[i] = f32ToF16Bits(v * (0.75 + i / 30));
  return t;
}

/** Sets the scale fields of every block in `buf` (whole blocks of `type`), their random bits picking the value. */
function fixScales(type: GGMLType, buf: Uint8Array, std: number): void {
  const size = typeTraits(type)!.typeSize;
  if (type === GGMLType.MXFP4) {
    const e0 = 128 + Math.round(Math.log2(std / MXFP4_RMS));
    const lo = Math.max(1, Math.min(253, e0 - 1));
    for (let o = 0; o < buf.length; o += size) buf[o] = lo + (buf[o]! & 1);
    return;
  }
  const layout = LAYOUTS[type]!;
  const d = f16Table(std / layout.spread);
  const dmin = f16Table((std / layout.spread) * (layout.dminOverD ?? 0));
  const [at, atMin] = layout.f16At;
  for (let o = 0; o < buf.length; o += size) {
    const hd = d[buf[o + at!]! & 15]!;
    buf[o + at!] = hd & 0xff;
    buf[o + at! + 1] = hd >>> 8;
    if (atMin !== undefined) {
      const hm = dmin[buf[o + atMin]! & 15]!;
      buf[o + atMin] = hm & 0xff;
      buf[o + atMin + 1] = hm >>> 8;
    }
  }
}

/**
 * `nBytes` (whole blocks) of random `type` blocks with weights of standard deviation about `std`, as chunks
 * of up to `chunkBytes` that share one buffer: each chunk must be consumed before the next is asked for.
 */
export function* randomBlocks(type: GGMLType, nBytes: number, std: number, chunkBytes = 64 << 20): Generator<Uint8Array> {
  const size = typeTraits(type)!.typeSize;
  if (!hasRandomBlocks(type)) throw new RangeError(`randomBlocks: no direct block writer for type ${type}`);
  if (nBytes % size !== 0) throw new RangeError(`randomBlocks: ${nBytes} bytes is not a whole number of blocks`);
  const buf = new Uint8Array(Math.max(size, Math.floor(Math.min(chunkBytes, nBytes) / size) * size));
  for (let done = 0; done < nBytes; ) {
    const chunk = buf.subarray(0, Math.min(buf.length, nBytes - done));
    randomFillSync(chunk);
    fixScales(type, chunk, std);
    done += chunk.length;
    yield chunk;
  }
}
