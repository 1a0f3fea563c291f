/**
 * Tile layouts of the relaxed-SIMD batch kernels (./relaxed.ts, `emitDotKRelaxed` in ./tile-kernels.ts):
 * the weight quants stay unsigned int8, the operand `i16x8.relaxed_dot_i8x16_i7x16_s` needs in 0..127,
 * and the scales are applied per group of values to the int16 pair sums (`i32x4.dot_i16x8_s`).
 *
 * - Q4_K, Q5_K (slot of 320 bytes): 256 quants (0..15, 0..31), 8 sub-block scales as int16 at 256, the 8
 *   mins as 16 int16 (each twice, as in ./tile-types.ts) at 272, d and dmin as f64 at 304, 312;
 * - Q6_K (slot of 328 bytes): 256 quants (0..63, the -32 left out), 16 scales as int16 at 256, 32 * scale as
 *   int16 at 288 (dotted with the activations' 16 block sums: the -32 of every quant), d as f64 at 320.
 * Integer sums are the ones of the SIMD128 kernels, exactly: sum(scale * q * a) over the block.
 */
import { Simd, V128, I32 } from "./emitter.ts";
import { type TileType, lazyLocals, q6Locals, storeF16AsF64, storeKMins } from "./tile-types.ts";
import { Q6K_SCALES, bytesAsI16, kQuants16, kScalesMins, q6kVectors } from "./unpack.ts";

const ZERO16 = new Array(16).fill(0);

/** Q4_K, or Q5_K (`five`). */
function q4KRelaxed(five: boolean): TileType {
  const L = lazyLocals((c) => ({ sm: c.local(V128), a: c.local(I32), b: c.local(I32), cw: c.local(I32) }));
  return {
    typeSize: five ? 176 : 144,
    blockSize: 256,
    slot: 320,
    dOff: 304,
    mins: { off: 272, dminOff: 312 },
    relaxed: { group: 32, scalesOff: 256 },
    decode(c, wb, dst) {
      const { sm, a, b, cw } = L(c);
      kScalesMins(c, wb, { a, b, cw }, sm);
      for (let j = 0; j < 4; j++) {
        for (const high of [false, true]) {
          for (let k = 0; k < 2; k++) {
            c.get(dst);
            kQuants16(c, wb, five, j, high, k);
            c.simdMem(Simd.v128Store, 32 * (2 * j + (high ? 1 : 0)) + 16 * k);
          }
        }
      }
      c.get(dst).get(sm).v128Const(ZERO16).shuffle(bytesAsI16([0, 1, 2, 3, 4, 5, 6, 7])).simdMem(Simd.v128Store, 256);
      storeKMins(c, wb, sm, dst, 272);
    },
  };
}

const q6KRelaxed: TileType = {
  typeSize: 210,
  blockSize: 256,
  slot: 328,
  dOff: 320,
  relaxed: { group: 16, scalesOff: 256, offsetOff: 288 },
  decode(c, wb, dst) {
    const L = q6Locals(c);
    q6kVectors(c, wb, L, (first) => c.get(dst).get(L.q).simdMem(Simd.v128Store, first), true);
    // the 16 int8 scales (scale j: values 16 j .. 16 j + 15) as int16, then times 32
    c.get(wb).simdMem(Simd.v128Load, Q6K_SCALES).set(L.q);
    [Simd.i16x8ExtendLowI8x16S, Simd.i16x8ExtendHighI8x16S].forEach((extend, h) => {
      c.get(dst).get(L.q).simd(extend).simdMem(Simd.v128Store, 256 + 16 * h);
      c.get(dst).get(L.q).simd(extend).i32(5).simd(Simd.i16x8Shl).simdMem(Simd.v128Store, 288 + 16 * h);
    });
    storeF16AsF64(c, wb, 208, dst, 320);
  },
};

/** The relaxed-SIMD tile layouts, by the SIMD128 kernel name they replace. */
export const RELAXED_TILE_TYPES: Record<string, TileType> = {
  q4_k: q4KRelaxed(false),
  q5_k: q4KRelaxed(true),
  q6_k: q6KRelaxed,
};
