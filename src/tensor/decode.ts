/**
 * Unpacks quantized rows into integers and scales, the form both dequantization and the integer dot
 * products work from. Every supported block type belongs to one of three families:
 *
 * - "q8_0" (Q4_0, Q5_0, Q8_0, IQ4_NL, MXFP4): blocks of 32 signed integers q with one float scale d;
 *   value = d * q. (MXFP4: q are the doubled E2M1 values and d = 2^(e-128), as ggml does.)
 * - "q8_1" (Q4_1, Q5_1): blocks of 32 unsigned integers q with a scale d and an offset m; value = d * q + m.
 * - "k" (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS): super-blocks of 256 signed integers q, with one integer
 *   scale sc and one integer min mn per group of 16 values, and float d, dmin per super-block;
 *   value = (d * sc) * q - dmin * mn. (Groups of 32 in the format are stored as two equal groups of 16;
 *   Q3_K, Q6_K and IQ4_XS have no mins: mn = 0, dmin = 0.)
 */
import { GGMLType, typeName } from "./types.ts";
import { readF16 as f16 } from "./f16.ts";
import { TsmoeError } from "../errors.ts";

export type Family = "q8_0" | "q8_1" | "k";

/** A decoded row of n values. Arrays are sized for the longest row decoded so far (see `decodedRow`). */
export interface DecodedRow {
  /** integer value per element */
  q: Int8Array;
  /** per block (q8_0, q8_1 families) or super-block (k family): scale */
  d: Float64Array;
  /** per block: offset m (q8_1 family) or per super-block: dmin (k family) */
  m: Float64Array;
  /** k family: integer scale per group of 16 values */
  sc: Int32Array;
  /** k family: integer min per group of 16 values */
  mn: Int32Array;
}

/** Scratch space able to hold a decoded row of n values. */
export function decodedRow(n: number): DecodedRow {
  return {
    q: new Int8Array(n),
    d: new Float64Array(Math.ceil(n / 32)),
    m: new Float64Array(Math.ceil(n / 32)),
    sc: new Int32Array(Math.ceil(n / 16)),
    mn: new Int32Array(Math.ceil(n / 16)),
  };
}

/** E8M0 exponent byte -> 2^(e-128) (ggml_e8m0_to_fp32_half: half the block scale, since E2M1 values are doubled). */
export function e8m0Half(e: number): number {
  return E8M0_HALF[e]!;
}

const E8M0_HALF = new Float64Array(256).map((_, e) => 2 ** (e - 128));

/** IQ4_NL / IQ4_XS non-linear 4-bit values. */
export const KVALUES_IQ4NL = new Int8Array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]);
/** MXFP4 E2M1 values, doubled. */
export const KVALUES_MXFP4 = new Int8Array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12]);

type Decoder = (src: Uint8Array, o: number, nBlocks: number, r: DecodedRow) => void;

interface BlockCodec {
  family: Family;
  blockSize: number;
  typeSize: number;
  decode: Decoder;
}

function u32(src: Uint8Array, o: number): number {
  return (src[o]! | (src[o + 1]! << 8) | (src[o + 2]! << 16) | (src[o + 3]! << 24)) >>> 0;
}

/** 16 bytes at s holding 32 4-bit indices (low nibbles first, then high) -> table values at q[qo..qo+31] */
function nibblesThrough(table: Int8Array, src: Uint8Array, s: number, q: Int8Array, qo: number): void {
  for (let j = 0; j < 16; j++) {
    const x = src[s + j]!;
    q[qo + j] = table[x & 15]!;
    q[qo + j + 16] = table[x >> 4]!;
  }
}

// ---- q8_0 family -------------------------------------------------------------------------------

const decodeQ4_0: Decoder = (src, o, nb, r) => {
  const q = r.q;
  for (let b = 0; b < nb; b++, o += 18) {
    r.d[b] = f16(src, o);
    const qo = b * 32;
    for (let j = 0; j < 16; j++) {
      const x = src[o + 2 + j]!;
      q[qo + j] = (x & 15) - 8;
      q[qo + j + 16] = (x >> 4) - 8;
    }
  }
};

const decodeQ5_0: Decoder = (src, o, nb, r) => {
  const q = r.q;
  for (let b = 0; b < nb; b++, o += 22) {
    r.d[b] = f16(src, o);
    const qh = u32(src, o + 2);
    const qo = b * 32;
    for (let j = 0; j < 16; j++) {
      const x = src[o + 6 + j]!;
      q[qo + j] = ((x & 15) | (((qh >>> j) & 1) << 4)) - 16;
      q[qo + j + 16] = ((x >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16;
    }
  }
};

const decodeQ8_0: Decoder = (src, o, nb, r) => {
  const q = r.q;
  for (let b = 0; b < nb; b++, o += 34) {
    r.d[b] = f16(src, o);
    const qo = b * 32;
    for (let j = 0; j < 32; j++) q[qo + j] = src[o + 2 + j]!; // Int8Array store wraps to signed
  }
};

const decodeIQ4_NL: Decoder = (src, o, nb, r) => {
  const q = r.q;
  for (let b = 0; b < nb; b++, o += 18) {
    r.d[b] = f16(src, o);
    nibblesThrough(KVALUES_IQ4NL, src, o + 2, q, b * 32);
  }
};

const decodeMXFP4: Decoder = (src, o, nb, r) => {
  const q = r.q;
  for (let b = 0; b < nb; b++, o += 17) {
    r.d[b] = e8m0Half(src[o]!);
    nibblesThrough(KVALUES_MXFP4, src, o + 1, q, b * 32);
  }
};

// ---- q8_1 family -------------------------------------------------------------------------------

const decodeQ4_1: Decoder = (src, o, nb, r) => {
  const q = r.q;
  for (let b = 0; b < nb; b++, o += 20) {
    r.d[b] = f16(src, o);
    r.m[b] = f16(src, o + 2);
    const qo = b * 32;
    for (let j = 0; j < 16; j++) {
      const x = src[o + 4 + j]!;
      q[qo + j] = x & 15;
      q[qo + j + 16] = x >> 4;
    }
  }
};

const decodeQ5_1: Decoder = (src, o, nb, r) => {
  const q = r.q;
  for (let b = 0; b < nb; b++, o += 24) {
    r.d[b] = f16(src, o);
    r.m[b] = f16(src, o + 2);
    const qh = u32(src, o + 4);
    const qo = b * 32;
    for (let j = 0; j < 16; j++) {
      const x = src[o + 8 + j]!;
      q[qo + j] = (x & 15) | (((qh >>> j) & 1) << 4);
      q[qo + j + 16] = (x >> 4) | (((qh >>> (j + 16)) & 1) << 4);
    }
  }
};

// ---- k family ----------------------------------------------------------------------------------

const decodeQ2_K: Decoder = (src, o, nb, r) => {
  const { q, sc, mn } = r;
  for (let b = 0; b < nb; b++, o += 84) {
    r.d[b] = f16(src, o + 80);
    r.m[b] = f16(src, o + 82);
    for (let g = 0; g < 16; g++) {
      const s = src[o + g]!;
      sc[b * 16 + g] = s & 15;
      mn[b * 16 + g] = s >> 4;
    }
    // 2 halves of 128 values; in each, 4 shifts over 32 bytes
    for (let h = 0; h < 2; h++) {
      const qs = o + 16 + h * 32;
      for (let s = 0; s < 4; s++) {
        const qo = b * 256 + h * 128 + s * 32;
        const shift = 2 * s;
        for (let l = 0; l < 32; l++) q[qo + l] = (src[qs + l]! >> shift) & 3;
      }
    }
  }
};

/** Scale of group g (0..15) of a Q3_K super-block whose 12 scale bytes start at so: 6 bits, minus 32. */
export function q3kScale(src: Uint8Array, so: number, g: number): number {
  const lo = g < 8 ? src[so + g]! & 15 : src[so + g - 8]! >> 4;
  const hi = (src[so + 8 + (g & 3)]! >> (2 * (g >> 2))) & 3;
  return (lo | (hi << 4)) - 32;
}

const decodeQ3_K: Decoder = (src, o, nb, r) => {
  const { q, sc, mn } = r;
  for (let b = 0; b < nb; b++, o += 110) {
    r.d[b] = f16(src, o + 108);
    r.m[b] = 0;
    for (let g = 0; g < 16; g++) {
      sc[b * 16 + g] = q3kScale(src, o + 96, g);
      mn[b * 16 + g] = 0;
    }
    for (let h = 0; h < 2; h++) {
      const qs = o + 32 + h * 32;
      for (let s = 0; s < 4; s++) {
        const qo = b * 256 + h * 128 + s * 32;
        const shift = 2 * s;
        const bit = 4 * h + s; // hmask bit: set = no offset, clear = -4
        for (let l = 0; l < 32; l++) {
          q[qo + l] = ((src[qs + l]! >> shift) & 3) - ((((src[o + l]! >> bit) & 1) ^ 1) << 2);
        }
      }
    }
  }
};

/** The 8 six-bit scales and mins of a Q4_K / Q5_K super-block, each stored for its two groups of 16. */
export function kScalesMins(src: Uint8Array, so: number, sc: Int32Array, mn: Int32Array, go: number): void {
  for (let j = 0; j < 8; j++) {
    let s: number, m: number;
    if (j < 4) {
      s = src[so + j]! & 63;
      m = src[so + j + 4]! & 63;
    } else {
      s = (src[so + j + 4]! & 15) | ((src[so + j - 4]! >> 6) << 4);
      m = (src[so + j + 4]! >> 4) | ((src[so + j]! >> 6) << 4);
    }
    sc[go + 2 * j] = sc[go + 2 * j + 1] = s;
    mn[go + 2 * j] = mn[go + 2 * j + 1] = m;
  }
}

const decodeQ4_K: Decoder = (src, o, nb, r) => {
  const q = r.q;
  for (let b = 0; b < nb; b++, o += 144) {
    r.d[b] = f16(src, o);
    r.m[b] = f16(src, o + 2);
    kScalesMins(src, o + 4, r.sc, r.mn, b * 16);
    for (let j = 0; j < 4; j++) {
      const qs = o + 16 + j * 32;
      const qo = b * 256 + j * 64;
      for (let l = 0; l < 32; l++) {
        const x = src[qs + l]!;
        q[qo + l] = x & 15;
        q[qo + l + 32] = x >> 4;
      }
    }
  }
};

const decodeQ5_K: Decoder = (src, o, nb, r) => {
  const q = r.q;
  for (let b = 0; b < nb; b++, o += 176) {
    r.d[b] = f16(src, o);
    r.m[b] = f16(src, o + 2);
    kScalesMins(src, o + 4, r.sc, r.mn, b * 16);
    const qh = o + 16;
    for (let j = 0; j < 4; j++) {
      const qs = o + 48 + j * 32;
      const qo = b * 256 + j * 64;
      const b1 = 2 * j;
      const b2 = 2 * j + 1;
      for (let l = 0; l < 32; l++) {
        const x = src[qs + l]!;
        const h = src[qh + l]!;
        q[qo + l] = (x & 15) | (((h >> b1) & 1) << 4);
        q[qo + l + 32] = (x >> 4) | (((h >> b2) & 1) << 4);
      }
    }
  }
};

const decodeQ6_K: Decoder = (src, o, nb, r) => {
  const { q, sc, mn } = r;
  for (let b = 0; b < nb; b++, o += 210) {
    r.d[b] = f16(src, o + 208);
    r.m[b] = 0;
    for (let g = 0; g < 16; g++) {
      sc[b * 16 + g] = (src[o + 192 + g]! << 24) >> 24;
      mn[b * 16 + g] = 0;
    }
    for (let h = 0; h < 2; h++) {
      const ql = o + h * 64;
      const qh = o + 128 + h * 32;
      const qo = b * 256 + h * 128;
      for (let l = 0; l < 32; l++) {
        const a = src[ql + l]!;
        const c = src[ql + l + 32]!;
        const hb = src[qh + l]!;
        q[qo + l] = ((a & 15) | ((hb & 3) << 4)) - 32;
        q[qo + l + 32] = ((c & 15) | (((hb >> 2) & 3) << 4)) - 32;
        q[qo + l + 64] = ((a >> 4) | (((hb >> 4) & 3) << 4)) - 32;
        q[qo + l + 96] = ((c >> 4) | (((hb >> 6) & 3) << 4)) - 32;
      }
    }
  }
};

const decodeIQ4_XS: Decoder = (src, o, nb, r) => {
  const { q, sc, mn } = r;
  for (let b = 0; b < nb; b++, o += 136) {
    r.d[b] = f16(src, o);
    r.m[b] = 0;
    const sh = src[o + 2]! | (src[o + 3]! << 8);
    for (let ib = 0; ib < 8; ib++) {
      const ls = ((src[o + 4 + (ib >> 1)]! >> (4 * (ib & 1))) & 15) | (((sh >> (2 * ib)) & 3) << 4);
      const g = b * 16 + 2 * ib;
      sc[g] = sc[g + 1] = ls - 32;
      mn[g] = mn[g + 1] = 0;
      nibblesThrough(KVALUES_IQ4NL, src, o + 8 + ib * 16, q, b * 256 + ib * 32);
    }
  }
};

const CODECS: Partial<Record<GGMLType, BlockCodec>> = {
  [GGMLType.Q4_0]: { family: "q8_0", blockSize: 32, typeSize: 18, decode: decodeQ4_0 },
  [GGMLType.Q5_0]: { family: "q8_0", blockSize: 32, typeSize: 22, decode: decodeQ5_0 },
  [GGMLType.Q8_0]: { family: "q8_0", blockSize: 32, typeSize: 34, decode: decodeQ8_0 },
  [GGMLType.IQ4_NL]: { family: "q8_0", blockSize: 32, typeSize: 18, decode: decodeIQ4_NL },
  [GGMLType.MXFP4]: { family: "q8_0", blockSize: 32, typeSize: 17, decode: decodeMXFP4 },
  [GGMLType.Q4_1]: { family: "q8_1", blockSize: 32, typeSize: 20, decode: decodeQ4_1 },
  [GGMLType.Q5_1]: { family: "q8_1", blockSize: 32, typeSize: 24, decode: decodeQ5_1 },
  [GGMLType.Q2_K]: { family: "k", blockSize: 256, typeSize: 84, decode: decodeQ2_K },
  [GGMLType.Q3_K]: { family: "k", blockSize: 256, typeSize: 110, decode: decodeQ3_K },
  [GGMLType.Q4_K]: { family: "k", blockSize: 256, typeSize: 144, decode: decodeQ4_K },
  [GGMLType.Q5_K]: { family: "k", blockSize: 256, typeSize: 176, decode: decodeQ5_K },
  [GGMLType.Q6_K]: { family: "k", blockSize: 256, typeSize: 210, decode: decodeQ6_K },
  [GGMLType.IQ4_XS]: { family: "k", blockSize: 256, typeSize: 136, decode: decodeIQ4_XS },
};

/** The codec of a block-quantized type, or undefined for float and unsupported types. */
export function blockCodec(type: GGMLType): BlockCodec | undefined {
  return CODECS[type];
}

/** Decodes n values (a multiple of the block size) of a block-quantized type starting at byte o. */
export function decodeRow(type: GGMLType, src: Uint8Array, o: number, n: number, r: DecodedRow): Family {
  const c = CODECS[type];
  if (!c) throw new TsmoeError(`type ${typeName(type)} is not a supported block-quantized type`);
  if (n % c.blockSize !== 0) throw new TsmoeError(`row of ${n} values is not a multiple of ${typeName(type)}'s block size ${c.blockSize}`);
  c.decode(src, o, n / c.blockSize, r);
  return c.family;
}
