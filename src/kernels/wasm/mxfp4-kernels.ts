/**
 * The one-token WebAssembly SIMD kernel for MXFP4 weights (gpt-oss's experts) times Q8_0 activations,
 * emitted with ./emitter.ts. Numerics: those of the TypeScript kernel (dot-fused.ts, nibbleKernel), bit
 * for bit: per block of 32, the integer sum isum of the doubled E2M1 values times the int8 activations,
 * then acc += 2^(e - 128) * da * isum in f64, the blocks of a row in order, rounded once to float32. That
 * product is exact in f64 in any order (isum < 2^16 times da's 24-bit significand times a power of two),
 * so it is computed as (f64(isum) * da) * dw, dw = 2^(e - 128) looked up in an f64 table (./layout.ts) and
 * da staged as an f64.
 *
 * Integer part: the 4-bit indices are looked up with `i8x16.swizzle` in the table of the doubled E2M1
 * values plus 12 (unsigned, 0..24), and isum = sum u * a - 12 * sum a, the second sum staged per block.
 * The looked-up bytes are read as i16x8 lanes v = u_even + 256 u_odd and multiplied with activations
 * staged as int16, each group of 16 values a_0..a_15 as the 8 even-indexed a_2i then the 8 values
 * a_2i+1 - 256 a_2i (wrapped to int16): v * a_2i + (v >> 8) * (a_2i+1 - 256 a_2i) = u_2i a_2i + u_2i+1 a_2i+1
 * modulo 2^16, as ./decode-kernels.ts does for the K-quants. Four such products per i16 lane are at most
 * 4 * 24 * 127 = 12192 in magnitude, so the lanes are exact; one `i32x4.dot_i16x8_s` with ones per block.
 *
 * Rows r and r + n / 2 of a call of n >= PAIR_MIN_ROWS rows go through the blocks together (two
 * sequential weight streams far apart, each staged activation vector loaded once for both, the two
 * rows' float parts in the two f64 lanes of a v128); the other rows go alone (the same code with both
 * lanes on one row). The table, nibble mask and ones are stored to the kernel scratch and loaded back
 * once per call (V8 would rebuild a literal v128 constant at every use inside the loop).
 *
 * Staged activations, STAGED_BLOCK bytes per block of 32: 32 int16 (two groups of 16 as above), the f64
 * scale da at 64, the int32 -12 * sum of the block's quants at 72.
 */
import { Code, F64, I32, Mem, Op, Simd, V128, type FuncDef } from "./emitter.ts";
import { KVALUES_MXFP4 } from "../../tensor/decode.ts";
import { WEIGHT_ROW_PARAMS } from "./kernels.ts";
import { E8M0_TABLE_ADDR } from "./layout.ts";

/** Kernel parameters (all i32 byte addresses in the shared memory, except the counts). */
const P = {
  ...WEIGHT_ROW_PARAMS,
  /** staged activations (see the header) */
  act: 5,
  /** output, float32, out[r - r0] */
  out: 6,
  /** MXFP4_SCRATCH bytes of scratch */
  tmp: 7,
} as const;
const N_PARAMS = 8;

/** Bytes of staged activations per block of 32 values. */
export const STAGED_BLOCK = 80;
/** Bytes of kernel scratch (param tmp): three v128 constants. */
export const MXFP4_SCRATCH = 48;
/** Fewest rows of a call computed two at a time. */
const PAIR_MIN_ROWS = 64;
/** The table's offset: doubled E2M1 values plus 12 are 0..24. */
const BIAS = 12;

export const MXFP4_DECODE_KERNEL = "mxfp4_1tok";

/** Byte shuffles of two i32x4 a, b: (a0, b0, a1, b1), (a2, b2, a3, b3); of one: its halves swapped. */
const i32Lanes = (k: number[]): number[] => k.flatMap((j) => [4 * j, 4 * j + 1, 4 * j + 2, 4 * j + 3]);
const PAIRS_EVEN = i32Lanes([0, 4, 1, 5]);
const PAIRS_ODD = i32Lanes([2, 6, 3, 7]);
const SWAP_HALVES = i32Lanes([2, 3, 0, 1]);

/** The kernel: out[r - r0] = dot(weight row r, the staged token) for rows [r0, r1). */
export function emitMxfp4DecodeKernel(): FuncDef {
  const c = new Code(N_PARAMS);
  const r = c.local(I32), h = c.local(I32), blk = c.local(I32), ab = c.local(I32);
  const wb = [c.local(I32), c.local(I32)];
  const acc = c.local(V128), dw = c.local(V128), zero = c.local(V128);
  const qs = c.local(V128), v = c.local(V128), part = c.local(V128);
  const ae = [c.local(V128), c.local(V128), c.local(V128), c.local(V128)];
  const dot = [c.local(V128), c.local(V128)];
  // constants: stored to the scratch and loaded back (see the header)
  const consts = [
    Array.from(KVALUES_MXFP4, (q) => q + BIAS),
    new Array(16).fill(15),
    new Array(8).fill(0).flatMap(() => [1, 0]),
  ].map((bytes, i) => {
    const l = c.local(V128);
    c.get(P.tmp).v128Const(bytes).simdMem(Simd.v128Store, 16 * i);
    c.get(P.tmp).simdMem(Simd.v128Load, 16 * i).set(l);
    return l;
  });
  const [tab, m15, ones] = consts as [number, number, number];
  c.v128Const(new Array(16).fill(0)).set(zero);

  /** pushes u_even * a_even + u_odd * a_odd per i16 lane for the 16 looked-up bytes on the stack */
  const mulPairs = (ae: number, ad: number) => {
    c.tee(v).get(ae).simd(Simd.i16x8Mul);
    c.get(v).i32(8).simd(Simd.i16x8ShrU).get(ad).simd(Simd.i16x8Mul);
    c.simd(Simd.i16x8Add);
  };
  /** the block loop of rows wb[0], wb[1] (possibly the same row); acc lanes 0, 1 */
  const blocks = () => {
    c.get(P.act).set(ab).get(zero).set(acc);
    c.forLoop(blk, () => c.i32(0), () => c.get(P.nb), 1, () => {
      ae.forEach((a, k) => c.get(ab).simdMem(Simd.v128Load, 16 * k).set(a));
      wb.forEach((w, i) => {
        c.get(w).simdMem(Simd.v128Load, 1).set(qs);
        c.get(tab).get(qs).get(m15).simd(Simd.v128And).simd(Simd.i8x16Swizzle);
        mulPairs(ae[0]!, ae[1]!);
        c.get(tab).get(qs).i32(4).simd(Simd.i16x8ShrU).get(m15).simd(Simd.v128And).simd(Simd.i8x16Swizzle);
        mulPairs(ae[2]!, ae[3]!);
        c.simd(Simd.i16x8Add).get(ones).simd(Simd.i32x4DotI16x8S).set(dot[i]!);
      });
      // dw: f64 lanes 2^(e - 128), from the table at E8M0_TABLE_ADDR (v128.load64_lane into lane 1)
      const [w0, w1] = wb as [number, number];
      c.get(w1).mem(Mem.i32Load8U, 0).i32(3).op(Op.i32Shl);
      c.get(w0).mem(Mem.i32Load8U, 0).i32(3).op(Op.i32Shl).simdMem(Simd.load64Splat, E8M0_TABLE_ADDR);
      c.simdMem(Simd.load64Lane, E8M0_TABLE_ADDR).op(1).set(dw);
      // isum lanes 0, 1: the sums of dot[0], dot[1], plus -12 * sum a
      const [d0, d1] = dot as [number, number];
      c.get(d0).get(d1).shuffle(PAIRS_EVEN).get(d0).get(d1).shuffle(PAIRS_ODD).simd(Simd.i32x4Add).tee(part);
      c.get(part).get(part).shuffle(SWAP_HALVES).simd(Simd.i32x4Add);
      c.get(ab).simdMem(Simd.load32Splat, 72).simd(Simd.i32x4Add).simd(Simd.f64x2ConvertLowI32x4S);
      // acc += (isum * da) * dw
      c.get(ab).simdMem(Simd.load64Splat, 64).simd(Simd.f64x2Mul).get(dw).simd(Simd.f64x2Mul);
      c.get(acc).simd(Simd.f64x2Add).set(acc);
      for (const w of wb) c.inc(w, 17);
      c.inc(ab, STAGED_BLOCK);
    });
  };
  const rowStart = (w: number, plusH: boolean) => {
    c.get(P.w).get(r);
    if (plusH) c.get(h).op(Op.i32Add);
    c.get(P.rb).op(Op.i32Mul, Op.i32Add).set(w);
  };
  /** out[r (+ h) - r0] = f32(acc lane) */
  const store = (lane: number, plusH: boolean) => {
    c.get(P.out).get(r).get(P.r0).op(Op.i32Sub);
    if (plusH) c.get(h).op(Op.i32Add);
    c.i32(2).op(Op.i32Shl, Op.i32Add).get(acc).lane(Simd.f64x2ExtractLane, lane).op(Op.f32DemoteF64).mem(Mem.f32Store);
  };
  // h = n / 2 for n >= PAIR_MIN_ROWS rows, else 0 (every row alone)
  c.get(P.r1).get(P.r0).op(Op.i32Sub).tee(h).i32(1).op(Op.i32ShrU).i32(0).get(h).i32(PAIR_MIN_ROWS).op(Op.i32GeS, Op.select).set(h);
  c.forLoop(r, () => c.get(P.r0), () => c.get(P.r0).get(h).op(Op.i32Add), 1, () => {
    rowStart(wb[0]!, false);
    rowStart(wb[1]!, true);
    blocks();
    store(0, false);
    store(1, true);
  });
  c.forLoop(r, () => c.get(P.r0).get(h).i32(1).op(Op.i32Shl, Op.i32Add), () => c.get(P.r1), 1, () => {
    rowStart(wb[0]!, false);
    c.get(wb[0]!).set(wb[1]!);
    blocks();
    store(0, false);
  });
  return { name: MXFP4_DECODE_KERNEL, params: new Array(N_PARAMS).fill(I32), results: [], code: c };
}

/** Bytes of staged activations for K values. */
export function mxfp4StagedBytes(K: number): number {
  return (K / 32) * STAGED_BLOCK;
}

/**
 * Stages one token's Q8_0 activations (qs, d) of K values for the kernel at byte `at` (8-aligned) of
 * `buf`, mxfp4StagedBytes(K) bytes: see the header.
 */
export function stageMxfp4Activations(qs: Int8Array, d: Float32Array, K: number, buf: ArrayBufferLike, at: number): void {
  const nb = K / 32, per = STAGED_BLOCK / 8;
  const i16 = new Int16Array(buf, at, nb * per * 4), f64 = new Float64Array(buf, at, nb * per), i32 = new Int32Array(buf, at, nb * per * 2);
  for (let b = 0; b < nb; b++) {
    const src = 32 * b, o = 4 * per * b;
    let sum = 0;
    for (let g = 0; g < 32; g += 16) {
      for (let i = 0; i < 8; i++) {
        const e = qs[src + g + 2 * i]!, odd = qs[src + g + 2 * i + 1]!;
        i16[o + g + i] = e;
        // wraps to int16
        i16[o + g + 8 + i] = odd - 256 * e;
        sum += e + odd;
      }
    }
    f64[per * b + 8] = d[b]!;
    i32[2 * per * b + 18] = -BIAS * sum;
  }
}
