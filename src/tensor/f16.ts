/**
 * Half-precision conversions, bit-exact with ggml:
 * - IEEE binary16 (F16): float32 -> f16 rounds to nearest even (what F16C and ggml's portable code do),
 *   overflow -> inf, NaN -> sign | 0x7E00; f16 -> float32 is exact (a 65536-entry table).
 * - bfloat16 (BF16): float32 -> bf16 rounds to nearest even, NaN is made quiet (ggml_compute_fp32_to_bf16);
 *   bf16 -> float32 is a 16-bit shift.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Bits of a float32 value (the number is first rounded to float32). */
export function f32Bits(x: number): number {
  f32[0] = x;
  return u32[0]!;
}

/** The float32 value with these bits. */
export function f32FromBits(bits: number): number {
  u32[0] = bits >>> 0;
  return f32[0]!;
}

/** f16 bits -> float value; every one of the 65536 patterns, computed once. */
export const F16_TO_F32: Float32Array = buildF16Table();

/**
 * The table, from bits: a normal f16 widens its exponent (rebias 15 -> 127) and mantissa (10 -> 23 bits);
 * a subnormal is exact as mant * 2^-24 (then float32 normal); inf/NaN keep sign and payload with the quiet
 * bit set, as the hardware conversion does. Built at start-up, so it avoids the slow float arithmetic.
 */
function buildF16Table(): Float32Array {
  const t = new Float32Array(65536);
  const tu = new Uint32Array(t.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 31) tu[h] = sign | (mant === 0 ? 0x7f800000 : 0x7fc00000 | (mant << 13));
    else if (exp !== 0) tu[h] = sign | ((exp + 112) << 23) | (mant << 13);
    else t[h] = (sign ? -mant : mant) * 2 ** -24;
  }
  return t;
}

/** float -> f16 bits, round to nearest even. */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return mant !== 0 ? sign | 0x7e00 : sign | 0x7c00;
  const e = exp - 112; // f16 biased exponent
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // f16 subnormal (or zero): value = q * 2^-24
    const shift = 126 - exp;
    if (shift > 24) return sign;
    const m = mant | 0x800000;
    let q = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && q & 1)) q++;
    return sign | q;
  }
  let q = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && q & 1)) q++; // a carry into the exponent is the right result (up to inf)
  return sign | q;
}

/** float -> nearest f16 value, as a number. */
export function roundToF16(x: number): number {
  return F16_TO_F32[f32ToF16Bits(x)]!;
}

/** float -> bf16 bits (ggml_compute_fp32_to_bf16). */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 64) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) / 65536) >>> 0;
}

/** bf16 bits -> float value. */
export function bf16BitsToF32(h: number): number {
  u32[0] = (h << 16) >>> 0;
  return f32[0]!;
}

let bf16Table: Float32Array | undefined;

/** bf16 bits -> float value for all 65536 patterns (built on first use). */
export function bf16ToF32Table(): Float32Array {
  if (!bf16Table) {
    bf16Table = new Float32Array(65536);
    const u = new Uint32Array(bf16Table.buffer);
    for (let h = 0; h < 65536; h++) u[h] = (h << 16) >>> 0;
  }
  return bf16Table;
}

/** float -> nearest bf16 value, as a number. */
export function roundToBf16(x: number): number {
  return bf16BitsToF32(f32ToBf16Bits(x));
}

/** Reads the little-endian f16 at byte offset o. */
export function readF16(src: Uint8Array, o: number): number {
  return F16_TO_F32[src[o]! | (src[o + 1]! << 8)]!;
}

/** Writes x as a little-endian f16 at byte offset o. */
export function writeF16(dst: Uint8Array, o: number, x: number): void {
  const h = f32ToF16Bits(x);
  dst[o] = h & 0xff;
  dst[o + 1] = h >>> 8;
}
