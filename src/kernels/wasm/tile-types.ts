/**
 * How the batch kernels (./tile-kernels.ts) unpack each weight type into a tile: the layout of one
 * (block, row) slot of the tile and the emitter code that fills it from a weight block.
 *
 * - Q8_0, Q4_0, Q5_0, IQ4_NL, MXFP4 (blocks of 32): 32 int16 quants, then the block scale dw as f64 (slot
 *   of 80 bytes);
 * - Q4_K, Q5_K (super-blocks of 256): 256 int16 quants with their sub-block scale multiplied in, the 8
 *   sub-block mins as 16 int16 (each twice: once per group of 16 values), then d and dmin as f64;
 * - Q6_K, Q3_K, IQ4_XS: 256 int16 quants with their scale multiplied in, then d as f64;
 * - Q2_K: as Q4_K, with 16 different mins.
 * Scaled quants stay exact in int16: |scale * q| <= 63 * 31 (Q5_K), 128 * 32 (Q6_K).
 */
import { Code, I32, Mem, Op, Simd, V128 } from "./emitter.ts";
import { KVALUES_IQ4NL, KVALUES_MXFP4 } from "../../tensor/decode.ts";
import { IQ4_XS, type KGroupType, lowBit } from "./kgroup-kernels.ts";
import { bytesAsI16, e8m0HalfBits, f16AsF64, kQuants16, kScalesMins, q5_0Quants16, q6kVectors, tableQuants16 } from "./unpack.ts";

export interface TileType {
  typeSize: number;
  blockSize: 32 | 256;
  /** tile bytes per (block, row) */
  slot: number;
  /** offset of the f64 block scale in the slot */
  dOff: number;
  /** Q4_K, Q5_K: offsets of the 16 int16 mins and of the f64 dmin in the slot */
  mins?: { off: number; dminOff: number };
  /**
   * The layouts of the relaxed-SIMD kernels (./relaxed-tile-types.ts): 256 unsigned int8 quants, then at
   * scalesOff 8 int16 scale vectors, one per 32 values; offsetOff (Q6_K): 16 int16 products 32 * scale,
   * dotted with the activations' block sums and subtracted from the integer sum (the quants' -32).
   */
  relaxed?: { scalesOff: number; offsetOff?: number };
  /** emits the unpacking of the weight block at local wb into the slot at local dst */
  decode(c: Code, wb: number, dst: number): void;
}

/** Declares the locals a decoder needs, once per function. */
export function lazyLocals<T>(make: (c: Code) => T): (c: Code) => T {
  const made = new Map<Code, T>();
  return (c) => {
    let v = made.get(c);
    if (!v) made.set(c, (v = make(c)));
    return v;
  };
}

const ZERO16 = new Array(16).fill(0);

/** Stores the f16 at wb + off as f64 at dst + at. */
export function storeF16AsF64(c: Code, wb: number, off: number, dst: number, at: number): void {
  c.get(dst);
  f16AsF64(c, wb, off);
  c.mem(Mem.f64Store, at);
}

/** Q8_0 family: the slot layout. */
const Q8_SLOT = { slot: 80, dOff: 64 } as const;

const q8Tmp = lazyLocals((c) => c.local(V128));

/** Stores the int8x16 on the stack as 16 int16 at dst + 2 off. */
function storeWidened(c: Code, dst: number, off: number): void {
  const tmp = q8Tmp(c);
  c.set(tmp);
  c.get(dst).get(tmp).simd(Simd.i16x8ExtendLowI8x16S).simdMem(Simd.v128Store, 2 * off);
  c.get(dst).get(tmp).simd(Simd.i16x8ExtendHighI8x16S).simdMem(Simd.v128Store, 2 * off + 16);
}

const q8_0: TileType = {
  ...Q8_SLOT,
  typeSize: 34,
  blockSize: 32,
  decode(c, wb, dst) {
    for (const k of [0, 16]) {
      c.get(wb).simdMem(Simd.v128Load, 2 + k);
      storeWidened(c, dst, k);
    }
    storeF16AsF64(c, wb, 0, dst, Q8_SLOT.dOff);
  },
};

/**
 * A Q8_0-family type whose 32 quants are nibbles in the 16 bytes at qsOff: `quants16` pushes the 16 quants
 * of the low (called first) or the high nibbles as int8, from local qs holding those bytes; `scaleBits`
 * pushes the float32 bits of the block scale (default: the f16 at the block's start).
 */
function nibbleType(typeSize: number, qsOff: number, quants16: (c: Code, qs: number, wb: number, low: boolean) => void, scaleBits?: (c: Code, wb: number) => void): TileType {
  const L = lazyLocals((c) => c.local(V128));
  return {
    ...Q8_SLOT,
    typeSize,
    blockSize: 32,
    decode(c, wb, dst) {
      const qs = L(c);
      c.get(wb).simdMem(Simd.v128Load, qsOff).set(qs);
      [true, false].forEach((low, k) => {
        quants16(c, qs, wb, low);
        storeWidened(c, dst, 16 * k);
      });
      if (!scaleBits) storeF16AsF64(c, wb, 0, dst, Q8_SLOT.dOff);
      else {
        c.get(dst);
        scaleBits(c, wb);
        c.op(Op.f32ReinterpretI32, Op.f64PromoteF32).mem(Mem.f64Store, Q8_SLOT.dOff);
      }
    },
  };
}

/** Q5_0, or Q4_0 (`four`). */
function q5_0(four: boolean): TileType {
  const qhLocal = lazyLocals((c) => c.local(V128));
  return nibbleType(four ? 18 : 22, four ? 2 : 6, (c, qs, wb, low) => {
    const qh = qhLocal(c);
    if (!four && low) c.get(wb).mem(Mem.i32Load, 2).simd(Simd.i32x4Splat).set(qh);
    q5_0Quants16(c, qs, qh, low, four);
  });
}

/** IQ4_NL (f16 scale, nibbles at 2) or MXFP4 (`mxfp4`: E8M0 scale byte, nibbles at 1): table lookups. */
function tableQuants(mxfp4: boolean): TileType {
  const table = mxfp4 ? KVALUES_MXFP4 : KVALUES_IQ4NL;
  const eLocal = lazyLocals((c) => c.local(I32));
  const scale = mxfp4 ? (c: Code, wb: number) => e8m0HalfBits(c, wb, eLocal(c)) : undefined;
  return nibbleType(mxfp4 ? 17 : 18, mxfp4 ? 1 : 2, (c, qs, _wb, low) => tableQuants16(c, qs, { table }, low), scale);
}

/** Stores the 16 int8 quants in local q times the i16x8 in local sv as 16 int16 at dst + off. */
function storeScaled(c: Code, q: number, sv: number, dst: number, off: number): void {
  c.get(dst).get(q).simd(Simd.i16x8ExtendLowI8x16S).get(sv).simd(Simd.i16x8Mul).simdMem(Simd.v128Store, off);
  c.get(dst).get(q).simd(Simd.i16x8ExtendHighI8x16S).get(sv).simd(Simd.i16x8Mul).simdMem(Simd.v128Store, off + 16);
}

/** Q4_K, or Q5_K (`five`). */
function q4K(five: boolean): TileType {
  const L = lazyLocals((c) => ({ q: c.local(V128), sv: c.local(V128), sm: c.local(V128), a: c.local(I32), b: c.local(I32), cw: c.local(I32) }));
  return {
    typeSize: five ? 176 : 144,
    blockSize: 256,
    slot: 560,
    dOff: 544,
    mins: { off: 512, dminOff: 552 },
    decode(c, wb, dst) {
      const { q, sv, sm, a, b, cw } = L(c);
      kScalesMins(c, wb, { a, b, cw }, sm);
      for (let j = 0; j < 4; j++) {
        for (const high of [false, true]) {
          const sub = 2 * j + (high ? 1 : 0);
          c.get(sm).v128Const(ZERO16).shuffle(bytesAsI16(new Array(8).fill(sub))).set(sv);
          for (let k = 0; k < 2; k++) {
            kQuants16(c, wb, five, j, high, k);
            c.set(q);
            storeScaled(c, q, sv, dst, 2 * (32 * sub + 16 * k));
          }
        }
      }
      storeKMins(c, wb, sm, dst, 512);
    },
  };
}

/**
 * Q4_K / Q5_K: stores the 8 mins (bytes 8..15 of local sm, see kScalesMins) as 16 int16 (each twice) at
 * dst + at, then d and dmin (the f16 at wb, wb + 2) as f64 at dst + at + 32, dst + at + 40.
 */
export function storeKMins(c: Code, wb: number, sm: number, dst: number, at: number): void {
  c.get(dst).get(sm).v128Const(ZERO16).shuffle(bytesAsI16([8, 8, 9, 9, 10, 10, 11, 11])).simdMem(Simd.v128Store, at);
  c.get(dst).get(sm).v128Const(ZERO16).shuffle(bytesAsI16([12, 12, 13, 13, 14, 14, 15, 15])).simdMem(Simd.v128Store, at + 16);
  storeF16AsF64(c, wb, 0, dst, at + 32);
  storeF16AsF64(c, wb, 2, dst, at + 40);
}

export const q6Locals = lazyLocals((c) => ({ ql0: c.local(V128), ql1: c.local(V128), qh: c.local(V128), q: c.local(V128), sv: c.local(V128) }));

const q6K: TileType = {
  typeSize: 210,
  blockSize: 256,
  slot: 528,
  dOff: 512,
  decode(c, wb, dst) {
    const L = q6Locals(c);
    q6kVectors(c, wb, L, (first) => storeScaled(c, L.q, L.sv, dst, 2 * first));
    storeF16AsF64(c, wb, 208, dst, 512);
  },
};

/**
 * IQ4_XS, Q3_K (no mins: Q6_K's layout) and Q2_K (Q4_K's layout, one min per group of 16), unpacked with
 * the emitters of their row kernels (./kgroup-kernels.ts).
 */
function kGroupTile(t: KGroupType): TileType {
  const L = lazyLocals((c) => ({ e: t.make(c), q: c.local(V128), sv: c.local(V128) }));
  const hasMins = t.dminOff !== undefined;
  return {
    typeSize: t.typeSize,
    blockSize: 256,
    slot: hasMins ? 560 : 528,
    dOff: hasMins ? 544 : 512,
    mins: hasMins ? { off: 512, dminOff: 552 } : undefined,
    decode(c, wb, dst) {
      const { e, q, sv } = L(c);
      e.init?.();
      t.runs.forEach((run, i) => {
        e.scale(wb, i);
        c.simd(Simd.i16x8Splat).set(sv);
        for (const v of run) {
          e.quants(wb, v);
          c.set(q);
          storeScaled(c, q, sv, dst, 2 * v);
        }
      });
      storeF16AsF64(c, wb, t.dOff, dst, hasMins ? 544 : 512);
      if (!hasMins) return;
      // the 16 mins (the high nibbles of the scale bytes at the block's start) as int16
      c.get(wb).simdMem(Simd.v128Load, 0).i32(4).simd(Simd.i8x16ShrU).set(q);
      c.get(dst).get(q).simd(Simd.i16x8ExtendLowI8x16U).simdMem(Simd.v128Store, 512);
      c.get(dst).get(q).simd(Simd.i16x8ExtendHighI8x16U).simdMem(Simd.v128Store, 528);
      storeF16AsF64(c, wb, t.dminOff!, dst, 552);
    },
  };
}

/** The tile layout of every type with a batch kernel, by kernel name. */
export const TILE_TYPES: Record<string, TileType> = {
  q8_0,
  q4_0: q5_0(true),
  q5_0: q5_0(false),
  iq4_nl: tableQuants(false),
  mxfp4: tableQuants(true),
  q4_k: q4K(false),
  q5_k: q4K(true),
  q6_k: q6K,
  iq4_xs: kGroupTile(IQ4_XS),
  q3_k: kGroupTile(lowBit(true)),
  q2_k: kGroupTile(lowBit(false)),
};
