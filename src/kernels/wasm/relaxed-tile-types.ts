/**
 * Tile layouts of the relaxed-SIMD batch kernels (./relaxed.ts, `emitDotKRelaxed` in ./tile-kernels.ts):
 * the weight quants stay unsigned int8, the operand `i16x8.relaxed_dot_i8x16_i7x16_s` needs in 0..127,
 * each 32 of them in the order of the activations staged by `stage_r` (interleaveHalves in
 * ./tile-stage.ts: each vector holds 8 values of each half), so that one relaxed dot product per vector,
 * an add of the two, and one `i32x4.dot_i16x8_s` with a scale vector (4 lanes the first half's scale, 4
 * the second's) cover 32 values: three multiplications where SIMD128 takes four.
 *
 * - Q4_K, Q5_K (slot of 432 bytes): 256 quants (0..15, 0..31), 8 scale vectors (the sub-block's 6-bit
 *   scale in all 8 int16 lanes) at 256, the 8 mins as 16 int16 (each twice, as in ./tile-types.ts) at
 *   384, d and dmin as f64 at 416, 424;
 * - Q6_K (slot of 424 bytes): 256 quants (0..63, the -32 left out), 8 scale vectors (scales 2m, 2m + 1,
 *   4 lanes each) at 256, 32 * scale as 16 int16 at 384 (dotted with the activations' 16 block sums: the
 *   -32 of every quant), d as f64 at 416.
 * Integer sums are those of the SIMD128 kernels, exactly: sum(scale * q * a) over the block.
 */
import { Simd, V128, I32, type Code } from "./emitter.ts";
import { type TileType, lazyLocals, q6Locals, storeF16AsF64, storeKMins } from "./tile-types.ts";
import { interleaveHalves } from "./tile-stage.ts";
import { Q6K_SCALES, bytesAsI16, kQuants16, kScalesMins, q6kVectors } from "./unpack.ts";

const ZERO16 = new Array(16).fill(0);

/** Shuffle lanes: int16 lanes i, j of the first operand, 4 times each. */
const twoLanes = (i: number, j: number): number[] => [i, i, i, i, j, j, j, j].flatMap((l) => [2 * l, 2 * l + 1]);

/** Stores at dst + off the two vectors of 32 values in the relaxed order (locals lo, hi: values 0..15, 16..31). */
function storeInterleaved(c: Code, lo: number, hi: number, dst: number, off: number): void {
  for (const high of [false, true]) {
    c.get(dst);
    interleaveHalves(c, lo, hi, high);
    c.simdMem(Simd.v128Store, off + (high ? 16 : 0));
  }
}

/** Q4_K, or Q5_K (`five`). */
function q4KRelaxed(five: boolean): TileType {
  const L = lazyLocals((c) => ({ sm: c.local(V128), q0: c.local(V128), q1: c.local(V128), a: c.local(I32), b: c.local(I32), cw: c.local(I32) }));
  return {
    typeSize: five ? 176 : 144,
    blockSize: 256,
    slot: 432,
    dOff: 416,
    mins: { off: 384, dminOff: 424 },
    relaxed: { scalesOff: 256 },
    decode(c, wb, dst) {
      const { sm, q0, q1, a, b, cw } = L(c);
      kScalesMins(c, wb, { a, b, cw }, sm);
      for (let j = 0; j < 4; j++) {
        for (const high of [false, true]) {
          [q0, q1].forEach((q, k) => {
            kQuants16(c, wb, five, j, high, k);
            c.set(q);
          });
          storeInterleaved(c, q0, q1, dst, 32 * (2 * j + (high ? 1 : 0)));
        }
      }
      // scale vectors: the 8 scales as int16, lane s splatted
      c.get(sm).v128Const(ZERO16).shuffle(bytesAsI16([0, 1, 2, 3, 4, 5, 6, 7])).set(q0);
      for (let s = 0; s < 8; s++) c.get(dst).get(q0).get(q0).shuffle(twoLanes(s, s)).simdMem(Simd.v128Store, 256 + 16 * s);
      storeKMins(c, wb, sm, dst, 384);
    },
  };
}

const q6KRelaxed: TileType = {
  typeSize: 210,
  blockSize: 256,
  slot: 424,
  dOff: 416,
  relaxed: { scalesOff: 256, offsetOff: 384 },
  decode(c, wb, dst) {
    const L = q6Locals(c);
    q6kVectors(c, wb, L, (first) => c.get(dst).get(L.q).simdMem(Simd.v128Store, first), true);
    // into the relaxed order, 32 values at a time
    for (let m = 0; m < 8; m++) {
      c.get(dst).simdMem(Simd.v128Load, 32 * m).set(L.ql0);
      c.get(dst).simdMem(Simd.v128Load, 32 * m + 16).set(L.ql1);
      storeInterleaved(c, L.ql0, L.ql1, dst, 32 * m);
    }
    // the 16 int8 scales (scale j: values 16 j .. 16 j + 15) as int16: scale vectors of scales 2m, 2m + 1; 32 * scale
    c.get(wb).simdMem(Simd.v128Load, Q6K_SCALES).set(L.q);
    [Simd.i16x8ExtendLowI8x16S, Simd.i16x8ExtendHighI8x16S].forEach((extend, h) => {
      c.get(L.q).simd(extend).set(L.sv);
      for (let m = 0; m < 4; m++) c.get(dst).get(L.sv).get(L.sv).shuffle(twoLanes(2 * m, 2 * m + 1)).simdMem(Simd.v128Store, 256 + 64 * h + 16 * m);
      c.get(dst).get(L.sv).i32(5).simd(Simd.i16x8Shl).simdMem(Simd.v128Store, 384 + 16 * h);
    });
    storeF16AsF64(c, wb, 208, dst, 416);
  },
};

/** The relaxed-SIMD tile layouts, by the SIMD128 kernel name they replace. */
export const RELAXED_TILE_TYPES: Record<string, TileType> = {
  q4_k: q4KRelaxed(false),
  q5_k: q4KRelaxed(true),
  q6_k: q6KRelaxed,
};
