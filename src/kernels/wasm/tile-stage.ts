/**
 * How the batch kernels (./tile-kernels.ts) find the activations: once per product, the quantized
 * activations are copied into the thread's scratch memory and staged there by an emitted function, in
 * groups of tokens (the last group smaller), block by block, so that a kernel reads each block of a group
 * at constant offsets from one pointer.
 *
 * - Q8_K (for Q4_K, Q5_K, Q6_K; `stage`), groups of K_GROUP tokens, per (group, block) of 256 values:
 *   the g tokens' int8 quants (256 bytes each), their 16 block sums narrowed to int16 (32 bytes each),
 *   their scales as f64 (padded with a zero to an even count).
 * - Q8_0 (for Q8_0, Q4_0, Q5_0; `stage_t`), groups of 4 * Q8_QUADS tokens in quads of 4 (the last quad
 *   padded with zero tokens), per (group, block) of 32 values: for each value pair j < 16 and each quad,
 *   the pair's two values of the quad's 4 tokens as 8 int16 (token by token), then the quads' scales as f64.
 */
import { Code, F64, I32, Mem, Op, Simd, V128, type FuncDef } from "./emitter.ts";
import { f32AsF64 } from "./unpack.ts";

/** Tokens per staged group of Q8_K activations. */
export const K_GROUP = 4;
/** Quads of tokens per staged group of Q8_0 activations. */
export const Q8_QUADS = 2;

/** Tokens per staged group, by block size (32: Q8_0, 256: Q8_K). */
export function groupTokens(blockSize: number): number {
  return blockSize === 32 ? 4 * Q8_QUADS : K_GROUP;
}

/** Layout of a staged group of g tokens, per block: offsets of block sums and scales, bytes per block. */
export function stagedBlock(blockSize: number, g: number): { bsOff: number; daOff: number; stride: number } {
  if (blockSize === 32) {
    const quads = Math.ceil(g / 4);
    return { bsOff: 0, daOff: 256 * quads, stride: 288 * quads };
  }
  const bsOff = 256 * g;
  const daOff = bsOff + 32 * g;
  return { bsOff, daOff, stride: daOff + 8 * (g + (g & 1)) };
}

/** Bytes of staged activations for T tokens of nb blocks. */
export function stagedBytes(blockSize: number, T: number, nb: number): number {
  const G = groupTokens(blockSize);
  const tail = T % G;
  return nb * (Math.floor(T / G) * stagedBlock(blockSize, G).stride + (tail ? stagedBlock(blockSize, tail).stride : 0));
}

// i8x16.shuffle lane lists of i32 lanes: interleave low / high halves; i64 lanes low / high
export const i32Lanes = (l: number[]): number[] => l.flatMap((x) => [4 * x, 4 * x + 1, 4 * x + 2, 4 * x + 3]);
export const UNPACK_LO32 = i32Lanes([0, 4, 1, 5]);
export const UNPACK_HI32 = i32Lanes([2, 6, 3, 7]);
export const UNPACK_LO64 = i32Lanes([0, 1, 4, 5]);
export const UNPACK_HI64 = i32Lanes([2, 3, 6, 7]);

/** Pushes min(G, T - t0) (locals T, t0); `tmp`: an i32 local. */
function groupSize(c: Code, G: number, T: number, t0: number, tmp: number): void {
  c.i32(G).get(T).get(t0).op(Op.i32Sub).tee(tmp).i32(G).get(tmp).op(Op.i32LtS, Op.select);
}

/** `stage` parameters */
const S = { q: 0, d: 1, bsums: 2, T: 3, K: 4, nb: 5, dst: 6 } as const;

/**
 * `stage(q, d, bsums, T, K, nb, dst)`: stages T tokens of Q8_K activations (int8 quants, token t at
 * q + t K; f32 scales, token t at d + 4 t nb; int32 sums of 16 quants, token t at bsums + t K / 4) at dst.
 * `stage_r` (`interleave`, for the relaxed-SIMD kernels, ./relaxed-tile-types.ts): the same, but the
 * quants of every 32 values in the order of interleaveHalves.
 */
function emitStageK(interleave: boolean): FuncDef {
  const c = new Code(7);
  const t0 = c.local(I32), g = c.local(I32), b = c.local(I32), t = c.local(I32), i = c.local(I32), src = c.local(I32), o = c.local(I32), v = c.local(I32);
  c.get(S.dst).set(o);
  c.forLoop(t0, () => c.i32(0), () => c.get(S.T), K_GROUP, () => {
    groupSize(c, K_GROUP, S.T, t0, g);
    c.set(g);
    c.forLoop(b, () => c.i32(0), () => c.get(S.nb), 1, () => {
      c.forLoop(t, () => c.i32(0), () => c.get(g), 1, () => {
        c.get(S.q).get(t0).get(t).op(Op.i32Add).get(S.K).op(Op.i32Mul, Op.i32Add).get(b).i32(8).op(Op.i32Shl, Op.i32Add).set(src);
        if (interleave) {
          c.forLoop(i, () => c.i32(0), () => c.i32(256), 32, () => {
            c.get(src).get(i).op(Op.i32Add).set(v);
            for (const [half, lanes] of [[0, UNPACK_LO64], [16, UNPACK_HI64]] as const) {
              c.get(o).get(i).op(Op.i32Add).get(v).simdMem(Simd.v128Load).get(v).simdMem(Simd.v128Load, 16).shuffle(lanes).simdMem(Simd.v128Store, half);
            }
          });
        } else {
          c.forLoop(i, () => c.i32(0), () => c.i32(256), 16, () => {
            c.get(o).get(i).op(Op.i32Add).get(src).get(i).op(Op.i32Add).simdMem(Simd.v128Load).simdMem(Simd.v128Store);
          });
        }
        c.inc(o, 256);
      });
      c.forLoop(t, () => c.i32(0), () => c.get(g), 1, () => {
        // bsums + ((t0 + t) * K / 16 + 16 b) * 4
        c.get(S.bsums).get(t0).get(t).op(Op.i32Add).get(S.K).op(Op.i32Mul).i32(2).op(Op.i32ShrU).get(b).i32(6).op(Op.i32Shl, Op.i32Add, Op.i32Add).set(src);
        for (const h of [0, 1]) {
          c.get(o).get(src).simdMem(Simd.v128Load, 32 * h).get(src).simdMem(Simd.v128Load, 32 * h + 16).simd(Simd.i16x8NarrowI32x4S).simdMem(Simd.v128Store, 16 * h);
        }
        c.inc(o, 32);
      });
      // scales, padded to an even count
      c.forLoop(t, () => c.i32(0), () => c.get(g).i32(1).op(Op.i32Add).i32(-2).op(Op.i32And), 1, () => {
        c.get(o);
        c.get(t).get(g).op(Op.i32LtS).ifElse(() => {
          c.get(S.d).get(t0).get(t).op(Op.i32Add).get(S.nb).op(Op.i32Mul).get(b).op(Op.i32Add).i32(2).op(Op.i32Shl, Op.i32Add).set(src);
          f32AsF64(c, src);
        }, () => c.f64(0), F64);
        c.mem(Mem.f64Store);
        c.inc(o, 8);
      });
    });
  });
  return { name: interleave ? "stage_r" : "stage", params: new Array(7).fill(I32), results: [], code: c };
}

/** `stage_t` parameters */
const ST = { q: 0, d: 1, T: 2, K: 3, nb: 4, dst: 5 } as const;

/**
 * `stage_t(q, d, T, K, nb, dst)`: stages T tokens of Q8_0 activations (int8 quants, token t at q + t K;
 * f32 scales, token t at d + 4 t nb; both padded with zero tokens to a multiple of 4) at dst.
 */
function emitStageQ8(): FuncDef {
  const c = new Code(6);
  const G = 4 * Q8_QUADS;
  const t0 = c.local(I32), Q = c.local(I32), b = c.local(I32), q = c.local(I32), src = c.local(I32), o = c.local(I32), i = c.local(I32);
  const v = Array.from({ length: 4 }, () => c.local(V128));
  const lo = c.local(V128), hi = c.local(V128);
  /** stores the i64 lanes `half` of lo and hi, i.e. value pair j of the quad, at o + 16 (j Q + q) */
  const storePair = (j: number, half: number[]) => {
    c.get(o).get(q).get(Q).i32(j).op(Op.i32Mul, Op.i32Add).i32(4).op(Op.i32Shl, Op.i32Add);
    c.get(lo).get(hi).shuffle(half).simdMem(Simd.v128Store);
  };
  c.get(ST.dst).set(o);
  c.forLoop(t0, () => c.i32(0), () => c.get(ST.T), G, () => {
    // Q = ceil(min(G, T - t0) / 4)
    groupSize(c, G, ST.T, t0, Q);
    c.i32(3).op(Op.i32Add).i32(2).op(Op.i32ShrU).set(Q);
    c.forLoop(b, () => c.i32(0), () => c.get(ST.nb), 1, () => {
      c.forLoop(q, () => c.i32(0), () => c.get(Q), 1, () => {
        // src: token t0 + 4 q, value 32 b
        c.get(ST.q).get(t0).get(q).i32(2).op(Op.i32Shl, Op.i32Add).get(ST.K).op(Op.i32Mul, Op.i32Add).get(b).i32(5).op(Op.i32Shl, Op.i32Add).set(src);
        for (let m = 0; m < 4; m++) {
          // values 8 m .. 8 m + 7 (pairs 4 m .. 4 m + 3) of the quad's 4 tokens as int16, then a 4 x 4 transpose of i32 lanes
          v.forEach((vt, tq) => {
            c.get(src);
            if (tq > 0) c.get(ST.K).i32(tq).op(Op.i32Mul, Op.i32Add);
            c.simdMem(Simd.load8x8S, 8 * m).set(vt);
          });
          for (const [first, interleave] of [[0, UNPACK_LO32], [2, UNPACK_HI32]] as const) {
            c.get(v[0]!).get(v[1]!).shuffle(interleave).set(lo);
            c.get(v[2]!).get(v[3]!).shuffle(interleave).set(hi);
            storePair(4 * m + first, UNPACK_LO64);
            storePair(4 * m + first + 1, UNPACK_HI64);
          }
        }
      });
      // the quads' scales after their 16 Q vectors
      c.get(o).get(Q).i32(8).op(Op.i32Shl, Op.i32Add).set(o);
      c.forLoop(i, () => c.i32(0), () => c.get(Q).i32(2).op(Op.i32Shl), 1, () => {
        c.get(o);
        c.get(ST.d).get(t0).get(i).op(Op.i32Add).get(ST.nb).op(Op.i32Mul).get(b).op(Op.i32Add).i32(2).op(Op.i32Shl, Op.i32Add).set(src);
        f32AsF64(c, src);
        c.mem(Mem.f64Store).inc(o, 8);
      });
    });
  });
  return { name: "stage_t", params: new Array(6).fill(I32), results: [], code: c };
}

/**
 * The relaxed-SIMD kernels' order of every 32 values (`stage_r`, and their weights): 0..7, 16..23, then
 * 8..15, 24..31, so that each 16-byte vector holds 8 values of each half and the int16 pair sums of a
 * relaxed dot product of such a vector are 4 of the first half's, then 4 of the second half's. Pushes the
 * two vectors of that order from locals holding values 0..15 and 16..31 (second: `high`).
 */
export function interleaveHalves(c: Code, lo: number, hi: number, high: boolean): void {
  c.get(lo).get(hi).shuffle(high ? UNPACK_HI64 : UNPACK_LO64);
}

/** The staging functions (`stage_r` too with `relaxed`). */
export function emitStaging(relaxed = false): FuncDef[] {
  return relaxed ? [emitStageK(false), emitStageQ8(), emitStageK(true)] : [emitStageK(false), emitStageQ8()];
}
