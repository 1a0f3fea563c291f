/**
 * Emitter snippets that unpack quantized weight blocks into int8 / int16 SIMD vectors, shared by the
 * row kernels (./kernels.ts, unpacking in registers as they go) and the tile kernels (./tile-kernels.ts,
 * unpacking a tile of rows once for a whole batch of tokens).
 */
import { Code, Mem, Op, Simd } from "./emitter.ts";
import { F16_TABLE_ADDR } from "./layout.ts";

/** Pushes the f16 at address (local a) + off, converted to f64. */
export function f16AsF64(c: Code, a: number, off: number): void {
  c.get(a).mem(Mem.i32Load16U, off).i32(2).op(Op.i32Shl).mem(Mem.f32Load, F16_TABLE_ADDR).op(Op.f64PromoteF32);
}

/** Pushes the f32 at address (local a) + off, converted to f64. */
export function f32AsF64(c: Code, a: number, off = 0): void {
  c.get(a).mem(Mem.f32Load, off).op(Op.f64PromoteF32);
}

/** Pushes an i8x16 with every lane v. */
export function splat8(c: Code, v: number): void {
  c.v128Const(new Array(16).fill(v));
}

/** Shuffle lanes making i16x8 lanes of bytes k[0..7] of the first operand, zero-extended (second operand: zero). */
export function bytesAsI16(k: number[]): number[] {
  return k.flatMap((j) => [j, 16]);
}

/** Lane i of the result takes byte `bytes[i]` of the operand: the qh byte holding quant i's high bit. */
const Q5_SPREAD_LO = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
const Q5_SPREAD_HI = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
const BIT_OF_LANE = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];

/**
 * Q5_0 / Q4_0 (`four`) block: pushes its 16 low-nibble quants (`low`) or 16 high-nibble quants as int8,
 * bias removed. qs: local holding the 16 nibble bytes; qh: local holding the 32 high bits splatted (Q5_0).
 * `bias`: subtracted (default 16, Q4_0 8; Q5_1, Q4_1: 0).
 */
export function q5_0Quants16(c: Code, qs: number, qh: number, low: boolean, four: boolean, bias = four ? 8 : 16): void {
  // nibble | (high bit << 4), minus 16 (Q4_0: nibble minus 8)
  c.get(qs);
  if (low) {
    splat8(c, 15);
    c.simd(Simd.v128And);
  } else c.i32(4).simd(Simd.i8x16ShrU);
  if (!four) {
    c.get(qh).get(qh).shuffle(low ? Q5_SPREAD_LO : Q5_SPREAD_HI).v128Const(BIT_OF_LANE).simd(Simd.v128And).v128Const(BIT_OF_LANE).simd(Simd.i8x16Eq);
    splat8(c, 16);
    c.simd(Simd.v128And).simd(Simd.v128Or);
  }
  if (bias === 0) return;
  splat8(c, bias);
  c.simd(Simd.i8x16Sub);
}

/**
 * Q4_K / Q5_K super-block at local wb: sets local sm to its 12 bytes of 6-bit scales and mins unpacked
 * with 32-bit word arithmetic: bytes 0..7 the scales of the 8 sub-blocks of 32, bytes 8..15 their mins.
 * a, b, cw: i32 locals used as temporaries.
 */
export function kScalesMins(c: Code, wb: number, t: { a: number; b: number; cw: number }, sm: number): void {
  const { a, b, cw } = t;
  c.get(wb).mem(Mem.i32Load, 4).set(a).get(wb).mem(Mem.i32Load, 8).set(b).get(wb).mem(Mem.i32Load, 12).set(cw);
  c.get(a).i32(0x3f3f3f3f).op(Op.i32And).simd(Simd.i32x4Splat);
  c.get(cw).i32(0x0f0f0f0f).op(Op.i32And).get(a).i32(6).op(Op.i32ShrU).i32(0x03030303).op(Op.i32And).i32(4).op(Op.i32Shl, Op.i32Or);
  c.lane(Simd.i32x4ReplaceLane, 1);
  c.get(b).i32(0x3f3f3f3f).op(Op.i32And).lane(Simd.i32x4ReplaceLane, 2);
  c.get(cw).i32(4).op(Op.i32ShrU).i32(0x0f0f0f0f).op(Op.i32And).get(b).i32(6).op(Op.i32ShrU).i32(0x03030303).op(Op.i32And).i32(4).op(Op.i32Shl, Op.i32Or);
  c.lane(Simd.i32x4ReplaceLane, 3).set(sm);
}

/**
 * Q4_K / Q5_K (`five`) super-block at local wb: pushes the 16 quants (int8, 0..15 or 0..31) of values
 * 64 j + 32 high + 16 k .. + 15, i.e. half k of sub-block 2 j + high.
 */
export function kQuants16(c: Code, wb: number, five: boolean, j: number, high: boolean, k: number): void {
  c.get(wb).simdMem(Simd.v128Load, (five ? 48 : 16) + 32 * j + 16 * k);
  if (high) c.i32(4).simd(Simd.i8x16ShrU);
  else {
    splat8(c, 15);
    c.simd(Simd.v128And);
  }
  if (five) {
    // | bit (2j + high) of qh, moved to bit 4
    const bit = 2 * j + (high ? 1 : 0);
    c.get(wb).simdMem(Simd.v128Load, 16 + 16 * k);
    splat8(c, 1 << bit);
    c.simd(Simd.v128And);
    if (bit < 4) c.i32(4 - bit).simd(Simd.i8x16Shl);
    else if (bit > 4) c.i32(bit - 4).simd(Simd.i8x16ShrU);
    c.simd(Simd.v128Or);
  }
}

/**
 * Q6_K: with locals ql0, ql1, qh holding the 16 bytes at ql + half, ql + 32 + half and qh + half of half
 * h of a super-block, pushes the 16 quants (int8, -32..31; `unsigned`: 0..63, without the offset) of values
 * 128 h + 32 part + half .. + 15. Their scale is the int8 at byte Q6K_SCALES + 8 h + half / 16 + 2 part of
 * the block, i.e. scale j belongs to values 16 j .. 16 j + 15.
 */
function q6kQuants16(c: Code, ql0: number, ql1: number, qh: number, part: number, unsigned: boolean): void {
  // (nibble | two high bits << 4) - 32
  c.get(part % 2 === 0 ? ql0 : ql1);
  if (part < 2) {
    splat8(c, 15);
    c.simd(Simd.v128And);
  } else c.i32(4).simd(Simd.i8x16ShrU);
  c.get(qh);
  splat8(c, 3 << (2 * part));
  c.simd(Simd.v128And);
  const shift = 4 - 2 * part; // bits 2p..2p+1 go to 4..5
  if (shift > 0) c.i32(shift).simd(Simd.i8x16Shl);
  else if (shift < 0) c.i32(-shift).simd(Simd.i8x16ShrU);
  c.simd(Simd.v128Or);
  if (unsigned) return;
  splat8(c, 32);
  c.simd(Simd.i8x16Sub);
}

/** Byte offset of Q6_K's 16 int8 scales in its 210-byte block (the f16 d is at 208). */
export const Q6K_SCALES = 192;

/**
 * Q6_K block at local wb: for each of its 16 vectors of 16 quants, sets local q to them (int8) and local
 * sv to their scale (splatted to i16x8), then calls use(index of the vector's first value in the block).
 * `unsigned`: the quants are 0..63 (the -32 left to the caller) and sv is not set.
 */
export function q6kVectors(c: Code, wb: number, L: { ql0: number; ql1: number; qh: number; q: number; sv: number }, use: (first: number) => void, unsigned = false): void {
  const { ql0, ql1, qh, q, sv } = L;
  for (let h = 0; h < 2; h++) {
    for (let half = 0; half < 32; half += 16) {
      c.get(wb).simdMem(Simd.v128Load, 64 * h + half).set(ql0);
      c.get(wb).simdMem(Simd.v128Load, 64 * h + 32 + half).set(ql1);
      c.get(wb).simdMem(Simd.v128Load, 128 + 32 * h + half).set(qh);
      for (let part = 0; part < 4; part++) {
        q6kQuants16(c, ql0, ql1, qh, part, unsigned);
        c.set(q);
        if (!unsigned) c.get(wb).mem(Mem.i32Load8S, Q6K_SCALES + 8 * h + (half >> 4) + 2 * part).simd(Simd.i16x8Splat).set(sv);
        use(128 * h + 32 * part + half);
      }
    }
  }
}

/**
 * Pushes the float32 bits (i32) of an MXFP4 block's scale, half of 2^(e - 127) for the E8M0 byte e at
 * local wb: 2^(e - 128), as e8m0Half in ../../tensor/decode.ts (e < 2: a float32 subnormal). e: an i32 local.
 */
export function e8m0HalfBits(c: Code, wb: number, e: number): void {
  c.i32(0x200000).get(wb).mem(Mem.i32Load8U, 0).tee(e).op(Op.i32Shl);
  c.get(e).i32(1).op(Op.i32Sub).i32(23).op(Op.i32Shl);
  c.get(e).i32(2).op(Op.i32LtU, Op.select);
}

/** Pushes the float32 bits (i32) of the f16 at address (local wb) + off. */
export function f16Bits(c: Code, wb: number, off = 0): void {
  c.get(wb).mem(Mem.i32Load16U, off).i32(2).op(Op.i32Shl).mem(Mem.i32Load, F16_TABLE_ADDR);
}

/**
 * Pushes the 16 int8 values table[nibble] of the low (`low`) or high nibbles of the 16 bytes in local qs:
 * the 4-bit non-linear quants of IQ4_NL, IQ4_XS and MXFP4 (values 0..15 or 16..31 of a block of 32).
 * The table (16 int8) and the nibble mask (i8x16 of 15): constants, or locals holding them.
 */
export function tableQuants16(c: Code, qs: number, k: { table: ArrayLike<number> | number; mask?: number }, low: boolean): void {
  if (typeof k.table === "number") c.get(k.table);
  else c.v128Const(k.table);
  c.get(qs);
  if (low) {
    if (k.mask !== undefined) c.get(k.mask);
    else splat8(c, 15);
    c.simd(Simd.v128And);
  } else c.i32(4).simd(Simd.i8x16ShrU);
  c.simd(Simd.i8x16Swizzle);
}
