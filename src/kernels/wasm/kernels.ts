/**
 * The WebAssembly SIMD row kernels, emitted with ./emitter.ts: used for single tokens (decode) and the
 * smallest batches (larger batches of block-quantized types go through ./tile-kernels.ts). Each kernel
 * computes, for weight rows [r0, r1) and tokens [0, T), out[t * (r1 - r0) + r - r0] (float32) =
 * dot(weight row r, activation row t), everything addressed in the shared linear memory (see ./memory.ts).
 *
 * Numerics are those of the TypeScript kernels (dot-quant.ts, dot-fused.ts), bit for bit (F32/F16/BF16
 * weights: ./float-kernels.ts): the integer sum
 * of every block is computed exactly with i16x8 products (`i32x4.dot_i16x8_s` on sign-extended int8 quants),
 * and the float part is the same f64 expression, in the same order, as the TypeScript code:
 *
 * - Q8_0, Q5_0, Q4_0, IQ4_NL, MXFP4 (x Q8_0): acc += (dw * da) * isum (MXFP4: dw = 2^(e - 128), exact)
 * - Q4_K, Q5_K (x Q8_K):       acc += da * (dw * isum - dmin * msum)
 * - Q6_K (x Q8_K):             acc += (da * dw) * isum for one token (dot-fused.ts), da * (dw * isum) for a batch
 * - Q4_1, Q5_1 (x Q8_1):       acc += (dw * da) * isum, then acc += m * s (s: the activation block sum)
 * (IQ4_XS, Q3_K, Q2_K: ./kgroup-kernels.ts, with the loops of this file)
 *
 * with acc a double summed over the blocks of the row in order, rounded once to float32.
 *
 * IQ4_NL and MXFP4 quants are 4-bit indices into a table of 16 int8 values: one `i8x16.swizzle` per 16.
 *
 * One token of Q8_0, Q5_0, Q4_0, IQ4_NL, MXFP4 weights, calls of PAIR_MIN_ROWS rows or more: rows r and r + n / 2 go
 * through the blocks together (two sequential weight streams far apart, as in ./decode-kernels.ts), each
 * activation block loaded once for both, the float part of both rows in the two f64 lanes of a v128.
 * Against one row at a time: 1.1x to 1.45x the speed with weights streamed from memory (K x N = 2048 x 768,
 * 768 x 2048, 2048 x 2048), 1.4x to 1.65x on cache-resident weights of the embedded model's shapes
 * (128 x 64, 64 x 128, 128 x 128, 128 x 4096); single thread, paired medians of CPU time.
 */
import { Code, F64, I32, Mem, Op, Simd, V128, type FuncDef } from "./emitter.ts";
import { KVALUES_IQ4NL, KVALUES_MXFP4 } from "../../tensor/decode.ts";
import { bytesAsI16, e8m0HalfBits, f16AsF64, f16Bits, f32AsF64, kQuants16, kScalesMins, q5_0Quants16, q6kVectors, splat8, tableQuants16 } from "./unpack.ts";

/** The first parameters of every row kernel here and in ./decode-kernels.ts: the weights and the rows [r0, r1). */
export const WEIGHT_ROW_PARAMS = {
  /** weight row 0 */
  w: 0,
  /** bytes per weight row */
  rb: 1,
  /** blocks per row */
  nb: 2,
  r0: 3,
  r1: 4,
} as const;

/** Kernel parameters (all i32; addresses are byte offsets in the shared memory). */
const P = {
  ...WEIGHT_ROW_PARAMS,
  /** activation quants, int8, token t at aq + t * K */
  aq: 5,
  /** activation block scales, float32, token t at ad + t * nb * 4 */
  ad: 6,
  /** Q8_K block sums, int32, token t at abs + t * K / 4 (bytes) */
  abs: 7,
  T: 8,
  K: 9,
  /** output, float32 */
  out: 10,
  /** per-row scratch (used by the float kernels only: the row as float32) */
  tmp: 11,
} as const;
const N_PARAMS = 12;

/** Per-token locals of a block body (tokens t .. t + nTok - 1 go through the block together). */
interface TokenCtx {
  /** current activation block (int8 quants) */
  aqb: number;
  /** current activation block scale (float32) */
  adb: number;
  /** current activation block sums (Q8_K: 16 int32; Q8_1: the float32 s) */
  absb: number;
  /** the f64 accumulator */
  acc: number;
  /** i32x4 integer accumulator of the block */
  vacc: number;
  /** the block's integer sum */
  isum: number;
}

/** Locals a block body may use. */
export interface Ctx {
  c: Code;
  /** current weight block */
  wb: number;
  toks: TokenCtx[];
}

/** Locals of the one-token, two-row block loop (see emitKernel). */
interface PairCtx {
  c: Code;
  /** the two rows' current weight blocks */
  wb: [number, number];
  /** the token's current activation block (int8 quants) */
  aqb: number;
  /** its block scale (float32) */
  adb: number;
  /** its block sum (Q8_1: float32) */
  absb: number;
  /** the two rows' f64 accumulators, as the f64x2 lanes 0 and 1 */
  acc: number;
}

export interface KernelSpec {
  typeSize: number;
  blockSize: number;
  /** adds the block's contribution to every token's acc */
  block: (x: Ctx) => void;
  /** one token: adds the blocks' contributions of two rows to their accumulators (types that have it) */
  pair?: (x: PairCtx) => void;
  /** emitted once at the kernel's start, before the loops (constants into locals) */
  init?: (c: Code) => void;
  /**
   * bytes per block of the `abs` area: Q8_K's 16 int32 block sums per 256 values (the default,
   * blockSize / 4), Q8_1's float32 sum s per block (4)
   */
  sumsStride?: number;
}

/** 16 quants widened to two i16x8 (locals lo, hi), as they are dotted with the activations. */
export type Wide = { lo: number; hi: number };

/** Sets w.lo, w.hi to the int8 quants in local q8 sign-extended to i16 [times the i16x8 in local `scale`]. */
export function widen(c: Code, q8: number, w: Wide, scale?: number): void {
  c.get(q8).simd(Simd.i16x8ExtendLowI8x16S);
  if (scale !== undefined) c.get(scale).simd(Simd.i16x8Mul);
  c.set(w.lo);
  c.get(q8).simd(Simd.i16x8ExtendHighI8x16S);
  if (scale !== undefined) c.get(scale).simd(Simd.i16x8Mul);
  c.set(w.hi);
}

/**
 * For every token: vacc (= if first, else +=) sum over parts of the i32x4 dot of the 16 widened quants
 * with the 16 int8 activations at offset off of the token's block [times the i32x4 in local scale32]. Products and pair sums stay exact:
 * widened (scaled) quants are at most 4096 in magnitude, activations at most 127.
 */
export function accumulate(x: Ctx, parts: [w: Wide, off: number][], first: boolean, scale32?: number): void {
  const { c } = x;
  for (const tk of x.toks) {
    if (!first) c.get(tk.vacc);
    parts.forEach(([w, off], k) => {
      c.get(w.lo).get(tk.aqb).simdMem(Simd.load8x8S, off).simd(Simd.i32x4DotI16x8S);
      c.get(w.hi).get(tk.aqb).simdMem(Simd.load8x8S, off + 8).simd(Simd.i32x4DotI16x8S);
      c.simd(Simd.i32x4Add);
      if (k > 0) c.simd(Simd.i32x4Add);
    });
    if (scale32 !== undefined) c.get(scale32).simd(Simd.i32x4Mul);
    if (!first) c.simd(Simd.i32x4Add);
    c.set(tk.vacc);
  }
}

/** isum = horizontal sum of vacc, for every token. */
export function sumTokens(x: Ctx): void {
  for (const tk of x.toks) x.c.get(tk.vacc).sumI32x4().set(tk.isum);
}

export function wide(c: Code): Wide {
  return { lo: c.local(V128), hi: c.local(V128) };
}

/** Declares the locals a spec needs, once per kernel (a spec's block is emitted once per kernel). */
export function lazyLocals<T>(make: (c: Code) => T): (c: Code) => T {
  let v: T | undefined;
  return (c) => (v ??= make(c));
}

/** acc += (dw * da) * isum for every token, dw = the f64 in local dw. */
function accQ8(x: Ctx, dw: number): void {
  const { c } = x;
  for (const tk of x.toks) {
    c.get(tk.acc).get(dw);
    f32AsF64(c, tk.adb);
    c.op(Op.f64Mul).get(tk.isum).op(Op.f64ConvertI32S).op(Op.f64Mul).op(Op.f64Add).set(tk.acc);
  }
}

/**
 * Sets w[0], w[1] to the 32 quants of a Q8_0-family block at local wb, widened (values 0..15, 16..31);
 * `init`, if any, is emitted once at the kernel's start.
 */
type BlockQuants = ((wb: number, w: [Wide, Wide]) => void) & { init?: () => void };

/** Pushes the float32 bits (i32) of the scale of the Q8_0-family block at local wb. */
type ScaleBits = (wb: number) => void;

/** The f16 scale at the block's start (all but MXFP4). */
const f16Scale = (c: Code): ScaleBits => (wb) => f16Bits(c, wb);

/**
 * Q8_0, Q5_0, Q4_0, IQ4_NL and MXFP4 (x Q8_0): the block bodies around `quantsOf`, which unpacks one
 * row's block, and `scaleOf`, which reads its scale. Several
 * tokens: as accumulate() does; one token, two rows (`pair`): the token's 32 activations are loaded once
 * for both rows, the two integer sums reduced together, and the float part computed for both rows at once
 * in the two f64 lanes of a v128 (the same IEEE operations in the same order as accQ8).
 * Q4_1, Q5_1 (x Q8_1; `mOff`: the offset of their f16 m): then acc += m * s, s the activation block sum.
 */
function q8FamilySpec(typeSize: number, quantsOf: (c: Code) => BlockQuants, scaleOf: (c: Code) => ScaleBits = f16Scale, mOff?: number): KernelSpec {
  const L = lazyLocals((c) => ({ quants: quantsOf(c), scale: scaleOf(c), w: [wide(c), wide(c)] as [Wide, Wide], dw: c.local(F64) }));
  const L2 = lazyLocals((c) => ({ a: [c.local(V128), c.local(V128), c.local(V128), c.local(V128)], vacc: [c.local(V128), c.local(V128)], s: c.local(V128) }));
  return {
    typeSize,
    blockSize: 32,
    sumsStride: mOff === undefined ? undefined : 4,
    init: (c) => L(c).quants.init?.(),
    block(x) {
      const { c } = x;
      const { quants, w, dw } = L(c);
      quants(x.wb, w);
      accumulate(x, [[w[0], 0], [w[1], 16]], true);
      sumTokens(x);
      L(c).scale(x.wb);
      c.op(Op.f32ReinterpretI32, Op.f64PromoteF32).set(dw);
      accQ8(x, dw);
      if (mOff === undefined) return;
      for (const tk of x.toks) {
        c.get(tk.acc);
        f16AsF64(c, x.wb, mOff);
        f32AsF64(c, tk.absb);
        c.op(Op.f64Mul, Op.f64Add).set(tk.acc);
      }
    },
    pair(x) {
      const { c } = x;
      const { quants, scale, w } = L(c);
      const { a, vacc, s } = L2(c);
      a.forEach((ak, k) => c.get(x.aqb).simdMem(Simd.load8x8S, 8 * k).set(ak));
      x.wb.forEach((wb, i) => {
        quants(wb, w);
        c.get(w[0].lo).get(a[0]!).simd(Simd.i32x4DotI16x8S).get(w[0].hi).get(a[1]!).simd(Simd.i32x4DotI16x8S).simd(Simd.i32x4Add);
        c.get(w[1].lo).get(a[2]!).simd(Simd.i32x4DotI16x8S).get(w[1].hi).get(a[3]!).simd(Simd.i32x4DotI16x8S).simd(Simd.i32x4Add);
        c.simd(Simd.i32x4Add).set(vacc[i]!);
      });
      // acc += (dw * da) * isum, lane i for row i
      c.get(x.acc);
      x.wb.forEach((wb, i) => {
        scale(wb);
        if (i === 0) c.simd(Simd.i32x4Splat);
        else c.lane(Simd.i32x4ReplaceLane, 1);
      });
      c.simd(Simd.f64x2PromoteLowF32x4);
      c.get(x.adb).simdMem(Simd.load32Splat, 0).simd(Simd.f64x2PromoteLowF32x4).simd(Simd.f64x2Mul);
      // the two rows' integer sums in i32 lanes 0, 1
      const [v0, v1] = vacc as [number, number];
      c.get(v0).get(v1).shuffle(I32_PAIRS_EVEN).get(v0).get(v1).shuffle(I32_PAIRS_ODD).simd(Simd.i32x4Add).tee(s);
      c.get(s).get(s).shuffle(I32_SWAP_HALVES).simd(Simd.i32x4Add).simd(Simd.f64x2ConvertLowI32x4S);
      c.simd(Simd.f64x2Mul).simd(Simd.f64x2Add).set(x.acc);
      if (mOff === undefined) return;
      // acc += m * s, lane i for row i
      c.get(x.acc);
      x.wb.forEach((wb, i) => {
        f16Bits(c, wb, mOff);
        if (i === 0) c.simd(Simd.i32x4Splat);
        else c.lane(Simd.i32x4ReplaceLane, 1);
      });
      c.simd(Simd.f64x2PromoteLowF32x4);
      c.get(x.absb).simdMem(Simd.load32Splat, 0).simd(Simd.f64x2PromoteLowF32x4).simd(Simd.f64x2Mul).simd(Simd.f64x2Add).set(x.acc);
    },
  };
}

/** Byte shuffles of two i32x4 a, b: (a0, b0, a1, b1), (a2, b2, a3, b3); of one: its halves swapped. */
const I32_PAIRS_EVEN = [0, 4, 1, 5].flatMap((j) => [4 * j, 4 * j + 1, 4 * j + 2, 4 * j + 3]);
const I32_PAIRS_ODD = [2, 6, 3, 7].flatMap((j) => [4 * j, 4 * j + 1, 4 * j + 2, 4 * j + 3]);
const I32_SWAP_HALVES = [8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7];

function q8_0Spec(): KernelSpec {
  return q8FamilySpec(34, (c) => {
    const q = c.local(V128);
    return (wb, w) => {
      for (let k = 0; k < 2; k++) {
        c.get(wb).simdMem(Simd.v128Load, 2 + 16 * k).set(q);
        widen(c, q, w[k]!);
      }
    };
  });
}

/**
 * IQ4_NL (f16 scale, nibbles at 2) and MXFP4 (E8M0 scale byte, nibbles at 1): 4-bit indices into a table
 * of 16 int8 values, looked up with one `i8x16.swizzle` per 16 quants.
 */
function tableSpec(mxfp4: boolean): KernelSpec {
  const table = mxfp4 ? KVALUES_MXFP4 : KVALUES_IQ4NL;
  const scaleOf = mxfp4 ? (c: Code): ScaleBits => {
    const e = c.local(I32);
    return (wb) => e8m0HalfBits(c, wb, e);
  } : f16Scale;
  return q8FamilySpec(mxfp4 ? 17 : 18, (c) => {
    const qs = c.local(V128), q = c.local(V128), tab = c.local(V128), m15 = c.local(V128);
    const quants: BlockQuants = (wb, w) => {
      c.get(wb).simdMem(Simd.v128Load, mxfp4 ? 1 : 2).set(qs);
      [true, false].forEach((low, k) => {
        tableQuants16(c, qs, { table: tab, mask: m15 }, low);
        c.set(q);
        widen(c, q, w[k]!);
      });
    };
    quants.init = () => {
      c.v128Const(table).set(tab);
      splat8(c, 15);
      c.set(m15);
    };
    return quants;
  }, scaleOf);
}

/**
 * Q5_0, or Q4_0 (`four`: nibbles at 2, minus 8, no high bits); `one`: Q5_1, Q4_1 (an f16 m at 2, the
 * rest 2 bytes later, no bias).
 */
function q5_0Spec(four = false, one = false): KernelSpec {
  const at = one ? 2 : 0;
  return q8FamilySpec((four ? 18 : 22) + at, (c) => {
    const qs = c.local(V128), qh = c.local(V128), q = c.local(V128);
    return (wb, w) => {
      c.get(wb).simdMem(Simd.v128Load, (four ? 2 : 6) + at).set(qs);
      if (!four) c.get(wb).mem(Mem.i32Load, 2 + at).simd(Simd.i32x4Splat).set(qh);
      [true, false].forEach((low, k) => {
        q5_0Quants16(c, qs, qh, low, four, one ? 0 : undefined);
        c.set(q);
        widen(c, q, w[k]!);
      });
    };
  }, f16Scale, one ? 2 : undefined);
}

/**
 * Q4_K and Q5_K (`five`: a fifth bit per quant from the 32 qh bytes at 16, quants at 48). The 12 bytes of
 * 6-bit scales and mins are unpacked with 32-bit word arithmetic into one v128: bytes 0..7 the scales of
 * the 8 sub-blocks of 32, bytes 8..15 their mins.
 */
function q4KSpec(five: boolean): KernelSpec {
  const L = lazyLocals((c) => ({
    q: c.local(V128), w: [wide(c), wide(c)], sv: c.local(V128), sm: c.local(V128), zero: c.local(V128), mLo: c.local(V128), mHi: c.local(V128),
    a: c.local(I32), b: c.local(I32), cw: c.local(I32), msum: c.local(I32), d: c.local(F64), dmin: c.local(F64),
  }));
  return {
    typeSize: five ? 176 : 144,
    blockSize: 256,
    block(x) {
      const { c, wb } = x;
      const { q, w, sv, sm, zero, mLo, mHi, a, b, cw, msum, d, dmin } = L(c);
      kScalesMins(c, wb, { a, b, cw }, sm);
      c.v128Const(new Array(16).fill(0)).set(zero);
      // isum = sum over the 8 sub-blocks of 32 of sc * (integer dot of the sub-block)
      for (let j = 0; j < 4; j++) {
        for (const high of [false, true]) {
          const sub = 2 * j + (high ? 1 : 0);
          // one token: scale the i32 dot products; several: the i16 quants, once for all tokens
          const single = x.toks.length === 1;
          c.get(sm).get(zero).shuffle(single ? new Array(4).fill([sub, 16, 16, 16]).flat() : bytesAsI16(new Array(8).fill(sub))).set(sv);
          w.forEach((wk, k) => {
            kQuants16(c, wb, five, j, high, k);
            c.set(q);
            widen(c, q, wk, single ? undefined : sv);
          });
          const off = 64 * j + (high ? 32 : 0);
          accumulate(x, [[w[0]!, off], [w[1]!, off + 16]], sub === 0, single ? sv : undefined);
        }
      }
      sumTokens(x);
      f16AsF64(c, wb, 0);
      c.set(d);
      f16AsF64(c, wb, 2);
      c.set(dmin);
      // each min twice, against the block sums of its two groups of 16
      c.get(sm).get(zero).shuffle(bytesAsI16([8, 8, 9, 9, 10, 10, 11, 11])).set(mLo);
      c.get(sm).get(zero).shuffle(bytesAsI16([12, 12, 13, 13, 14, 14, 15, 15])).set(mHi);
      for (const tk of x.toks) {
        // msum = sum_g mn_g * bsum_g (|bsum| <= 16 * 128: exact in i16)
        c.get(mLo).get(tk.absb).simdMem(Simd.v128Load, 0).get(tk.absb).simdMem(Simd.v128Load, 16).simd(Simd.i16x8NarrowI32x4S).simd(Simd.i32x4DotI16x8S);
        c.get(mHi).get(tk.absb).simdMem(Simd.v128Load, 32).get(tk.absb).simdMem(Simd.v128Load, 48).simd(Simd.i16x8NarrowI32x4S).simd(Simd.i32x4DotI16x8S);
        c.simd(Simd.i32x4Add).sumI32x4().set(msum);
        // acc += da * (d * isum - dmin * msum)
        c.get(tk.acc);
        f32AsF64(c, tk.adb);
        c.get(d).get(tk.isum).op(Op.f64ConvertI32S, Op.f64Mul);
        c.get(dmin).get(msum).op(Op.f64ConvertI32S, Op.f64Mul, Op.f64Sub, Op.f64Mul, Op.f64Add).set(tk.acc);
      }
    },
  };
}

/** Q6_K; `single`: the one-token formula of dot-fused.ts ((da * d) * isum), else dot-quant.ts's da * (d * isum). */
function q6KSpec(single: boolean): KernelSpec {
  const L = lazyLocals((c) => ({ ql0: c.local(V128), ql1: c.local(V128), qh: c.local(V128), q: c.local(V128), w: wide(c), sv: c.local(V128), d: c.local(F64) }));
  return {
    typeSize: 210,
    blockSize: 256,
    block(x) {
      const { c, wb } = x;
      const { w, d } = L(c);
      let first = true;
      q6kVectors(c, wb, L(c), (v) => {
        widen(c, L(c).q, w, L(c).sv);
        accumulate(x, [[w, v]], first);
        first = false;
      });
      sumTokens(x);
      f16AsF64(c, wb, 208);
      c.set(d);
      for (const tk of x.toks) {
        c.get(tk.acc);
        f32AsF64(c, tk.adb);
        if (single) c.get(d).op(Op.f64Mul).get(tk.isum).op(Op.f64ConvertI32S, Op.f64Mul);
        else c.get(d).get(tk.isum).op(Op.f64ConvertI32S, Op.f64Mul, Op.f64Mul);
        c.op(Op.f64Add).set(tk.acc);
      }
    },
  };
}

/**
 * The row/token/block loops around a block body: for each row, tokens go through the blocks nTok at a
 * time (each weight block is unpacked once for them), the last T % nTok one at a time. The block body is
 * emitted once per token grouping, so `makeSpec` is called once per grouping.
 */
function emitKernel(name: string, makeSpec: () => KernelSpec, nTok: number): FuncDef {
  const c = new Code(N_PARAMS);
  const r = c.local(I32), t = c.local(I32), b = c.local(I32);
  const wr = c.local(I32), nRows = c.local(I32), tEnd = c.local(I32);
  const param = (i: number) => () => c.get(i);
  const tokenCtx = (): TokenCtx => ({ aqb: c.local(I32), adb: c.local(I32), absb: c.local(I32), acc: c.local(F64), vacc: c.local(V128), isum: c.local(I32) });
  /** the token loop over groups of n tokens, from the current t */
  const tokenLoop = (n: number, spec: KernelSpec, toks: TokenCtx[]) => {
    const x: Ctx = { c, wb: c.local(I32), toks };
    c.get(P.T).i32(n - 1).op(Op.i32Sub).set(tEnd);
    c.forLoop(t, () => c.get(t), () => c.get(tEnd), n, () => {
      c.get(wr).set(x.wb);
      toks.forEach((tk, i) => {
        c.f64(0).set(tk.acc);
        c.get(P.aq).get(t).i32(i).op(Op.i32Add).tee(tk.isum).get(P.K).op(Op.i32Mul, Op.i32Add).set(tk.aqb);
        c.get(P.ad).get(tk.isum).get(P.nb).op(Op.i32Mul).i32(2).op(Op.i32Shl, Op.i32Add).set(tk.adb);
        c.get(P.abs).get(tk.isum).get(P.nb).op(Op.i32Mul).i32(sumsStride(spec)).op(Op.i32Mul, Op.i32Add).set(tk.absb);
      });
      c.forLoop(b, () => c.i32(0), param(P.nb), 1, () => {
        spec.block(x);
        c.inc(x.wb, spec.typeSize);
        for (const tk of toks) c.inc(tk.aqb, spec.blockSize).inc(tk.adb, 4).inc(tk.absb, sumsStride(spec));
      });
      // out[(t + i) * nRows + r - r0] = f32(acc)
      toks.forEach((tk, i) => {
        c.get(P.out).get(t).i32(i).op(Op.i32Add).get(nRows).op(Op.i32Mul).get(r).op(Op.i32Add).get(P.r0).op(Op.i32Sub).i32(2).op(Op.i32Shl, Op.i32Add);
        c.get(tk.acc).op(Op.f32DemoteF64).mem(Mem.f32Store);
      });
    });
  };
  c.get(P.r1).get(P.r0).op(Op.i32Sub).set(nRows);
  const groupSpec = nTok > 1 ? makeSpec() : undefined;
  const groupToks = Array.from({ length: nTok }, tokenCtx);
  const singleSpec = makeSpec();
  groupSpec?.init?.(c);
  singleSpec.init?.(c);
  const singleToks = [tokenCtx()];
  // one token, n >= PAIR_MIN_ROWS rows: rows r and r + h (h = n / 2) go through the blocks together, the
  // remaining row (n odd) with the others below; h = 0 otherwise
  const h = c.local(I32);
  if (singleSpec.pair) {
    const pair = singleSpec.pair;
    const x: PairCtx = { c, wb: [c.local(I32), c.local(I32)], aqb: c.local(I32), adb: c.local(I32), absb: c.local(I32), acc: c.local(V128) };
    c.get(nRows).i32(1).op(Op.i32ShrU).i32(0);
    c.get(nRows).i32(PAIR_MIN_ROWS).op(Op.i32GeS).get(P.T).i32(1).op(Op.i32Eq, Op.i32And, Op.select).set(h);
    c.forLoop(r, param(P.r0), () => c.get(P.r0).get(h).op(Op.i32Add), 1, () => {
      c.get(P.w).get(r).get(P.rb).op(Op.i32Mul, Op.i32Add).tee(x.wb[0]).get(h).get(P.rb).op(Op.i32Mul, Op.i32Add).set(x.wb[1]);
      c.get(P.aq).set(x.aqb).get(P.ad).set(x.adb).v128Const(new Array(16).fill(0)).set(x.acc);
      if (singleSpec.sumsStride !== undefined) c.get(P.abs).set(x.absb);
      c.forLoop(b, () => c.i32(0), param(P.nb), 1, () => {
        pair(x);
        c.inc(x.wb[0], singleSpec.typeSize).inc(x.wb[1], singleSpec.typeSize).inc(x.aqb, singleSpec.blockSize).inc(x.adb, 4);
        if (singleSpec.sumsStride !== undefined) c.inc(x.absb, singleSpec.sumsStride);
      });
      // out[r - r0] = f32(lane 0), out[r + h - r0] = f32(lane 1)
      for (const lane of [0, 1]) {
        c.get(P.out).get(r).get(P.r0).op(Op.i32Sub);
        if (lane) c.get(h).op(Op.i32Add);
        c.i32(2).op(Op.i32Shl, Op.i32Add).get(x.acc).lane(Simd.f64x2ExtractLane, lane).op(Op.f32DemoteF64).mem(Mem.f32Store);
      }
    });
  } else c.i32(0).set(h);
  c.forLoop(r, () => c.get(P.r0).get(h).i32(1).op(Op.i32Shl, Op.i32Add), param(P.r1), 1, () => {
    c.get(P.w).get(r).get(P.rb).op(Op.i32Mul, Op.i32Add).set(wr);
    c.i32(0).set(t);
    if (groupSpec) tokenLoop(nTok, groupSpec, groupToks);
    tokenLoop(1, singleSpec, singleToks);
  });
  return { name, params: new Array(N_PARAMS).fill(I32), results: [], code: c };
}

const sumsStride = (spec: KernelSpec): number => spec.sumsStride ?? spec.blockSize / 4;

/** Fewest rows of a one-token call computed two at a time (fewer: a second weight stream's start costs more). */
const PAIR_MIN_ROWS = 64;

/** A kernel's exported name, its block layout, and the per-row scratch it needs per block (bytes). */
export interface KernelInfo {
  name: string;
  typeSize: number;
  blockSize: number;
  tmpPerBlock: number;
}

/** Tokens that go through a weight block together when a row kernel gets several tokens. */
export const TOKENS_PER_PASS = 2;

const KERNELS: Record<string, { make: () => KernelSpec; nTok: number }> = {
  q8_0: { make: q8_0Spec, nTok: TOKENS_PER_PASS },
  q5_0: { make: q5_0Spec, nTok: TOKENS_PER_PASS },
  q4_0: { make: () => q5_0Spec(true), nTok: TOKENS_PER_PASS },
  q5_1: { make: () => q5_0Spec(false, true), nTok: TOKENS_PER_PASS },
  q4_1: { make: () => q5_0Spec(true, true), nTok: TOKENS_PER_PASS },
  iq4_nl: { make: () => tableSpec(false), nTok: TOKENS_PER_PASS },
  mxfp4: { make: () => tableSpec(true), nTok: TOKENS_PER_PASS },
  q4_k: { make: () => q4KSpec(false), nTok: TOKENS_PER_PASS },
  q5_k: { make: () => q4KSpec(true), nTok: TOKENS_PER_PASS },
  q6_k_single: { make: () => q6KSpec(true), nTok: 1 },
  q6_k_batch: { make: () => q6KSpec(false), nTok: TOKENS_PER_PASS },
};

/** Every kernel function of the module, and what the dispatcher needs to know about each. */
export function emitKernels(): { funcs: FuncDef[]; info: Map<string, KernelInfo> } {
  return emitRowKernels(KERNELS);
}

/** Row kernels around the given block bodies (see emitKernel), by exported name. */
export function emitRowKernels(specs: Record<string, { make: () => KernelSpec; nTok: number }>): { funcs: FuncDef[]; info: Map<string, KernelInfo> } {
  const funcs: FuncDef[] = [];
  const info = new Map<string, KernelInfo>();
  for (const [name, { make, nTok }] of Object.entries(specs)) {
    const spec = make();
    funcs.push(emitKernel(name, make, nTok));
    info.set(name, { name, typeSize: spec.typeSize, blockSize: spec.blockSize, tmpPerBlock: 0 });
  }
  return { funcs, info };
}
