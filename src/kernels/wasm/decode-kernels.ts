/**
 * Decode WebAssembly SIMD kernels for Q4_K, Q5_K and Q6_K weights times one token, or a few (2 to
 * MAX_DECODE_TOKENS: the tokens an expert gets in a MoE prompt), emitted with ./emitter.ts. The weight
 * unpacking is paid per row (and shared by the tokens) and the activations are shared by all rows: the
 * runtime stages them once per product (see `stageDecodeActivations`) as int16, each group of 16 values
 * a_0..a_15 as the 8 even-indexed values a_2i, then the 8 values a_2i+1 - 256 a_2i (wrapped to int16).
 * That order matches weights read as i16x8 lanes v = e + 256 o (e an even value's quant in the low byte,
 * o an odd one's in the high byte, both unsigned, all other bits cleared with 16-bit masks and shifts,
 * which are cheap on every SIMD unit): v * a_2i + (v >> 8) * (a_2i+1 - 256 a_2i) = e a_2i + o a_2i+1,
 * modulo 2^16 as `i16x8.mul` computes it, one mask fewer than splitting v into e and o.
 *
 * Integer part, exact: quants (unsigned: Q4_K 0..15, Q5_K 0..31, Q6_K 0..63 before its -32) times
 * activations (-128..127), at most two or four products summed per i16 lane: the true sum is within
 * |sum| <= 32256, so the value computed modulo 2^16 is that sum. Then `i32x4.dot_i16x8_s` with the
 * splatted 6-bit / int8 sub-block scale. Q6_K's -32 is applied once per block as
 * -32 * sum_g scale_g * bsum_g (bsum_g: the activation sum of group g of 16), which is the same integer.
 * Float part, the expressions of dot-fused.ts in its order:
 *
 * - Q4_K, Q5_K: acc += da * (d * isum - dmin * msum)
 * - Q6_K:       acc += (da * d) * isum
 *
 * acc a double summed over the blocks of the row in order, rounded once to float32.
 *
 * Speed: two rows go through a block together (each staged activation vector is loaded once for both),
 * rows r and r + h of a call's n >= SPLIT_MIN_ROWS rows, h = n / 2: the weights are read as two sequential
 * streams, far apart (adjacent rows side by side ran up to 2x slower: the hardware prefetcher loses
 * them). For fewer rows a second stream's cold start costs more than sharing the loads saves, so they go
 * one by one. A block's body is unrolled, cut into steps of 16 or 32 values each ending with a store of
 * the integer accumulator (`addScaled`): V8 issues all the loads of a straight-line block first, which
 * keeps every loaded vector live and spills; loads are not moved above a store. The i16x8 masks are
 * loaded from memory once per call (V8 rebuilds a literal constant at every use). Two rows at a time and
 * the staged odd-minus-256-even activations gave 1.1x to 1.3x the speed of one row at a time for Q4_K,
 * 1.05x to 1.2x for Q6_K (single thread, weights streamed from memory, K x N = 2048 x 768, 768 x 2048,
 * 2048 x 2048, calls of 64 rows or more).
 *
 * Several tokens (emitMultiKernel): one row at a time, each group of 16 quants unpacked once into
 * registers (q and q >> 8, and the sub-block's scale splatted) and multiplied with each token's staged
 * activations, one integer accumulator per token (with the addScaled store after each token: without it
 * the kernels ran 2x slower), the f64 accumulators in the scratch memory (fewer live registers); the
 * tokens' activations are staged interleaved by block, so token t's are at a constant offset from token
 * 0's. Against the tile kernels (./tile-kernels.ts, which unpack rows to memory first) this was 1.2x to
 * 1.45x the speed for 2 tokens, 1.1x to 1.35x for 3, 0.85x to 1.2x for 4 (by type) and slower from 6
 * (single thread, same shapes), hence MAX_DECODE_TOKENS.
 */
import { Code, F64, I32, Mem, Op, Simd, V128, type FuncDef } from "./emitter.ts";
import { f16AsF64, f32AsF64, kScalesMins } from "./unpack.ts";
import { WEIGHT_ROW_PARAMS } from "./kernels.ts";

/** Kernel parameters (all i32 byte addresses in the shared memory, except the counts). */
const P = {
  ...WEIGHT_ROW_PARAMS,
  /** staged activations: int16, reordered (see the header) */
  act: 5,
  /** activation block scales, float32 */
  ad: 6,
  /** staged activation sums per block, int16: Q4_K/Q5_K 8 (per 32 values), Q6_K 16 (per 16) */
  bs: 7,
  /** output, float32, out[r - r0] */
  out: 8,
  /** DECODE_SCRATCH bytes of scratch, see SCALES_AT, STORE_AT, MSUM_AT, CONSTANTS_AT */
  tmp: 9,
} as const;
const N_PARAMS = 10;

/** Rows computed together (see emitDecodeKernel). */
const ROWS = 2;
/** Fewest rows of a call computed ROWS at a time; fewer go one by one. */
const SPLIT_MIN_ROWS = 64;
/** Most tokens of a multi-token kernel (see emitMultiKernel; more were slower than the tile kernels). */
export const MAX_DECODE_TOKENS = 4;
/** Entries of the per-row (single token) or per-token (several) scratch arrays below. */
const LANES = Math.max(ROWS, MAX_DECODE_TOKENS);
/** Byte offsets in the kernel scratch (param tmp): the i16x8 constants (at most MAX_CONSTANTS), 16 bytes each */
const CONSTANTS_AT = 0;
const MAX_CONSTANTS = 2;
/** row i's at + 32 i: a block's scales as int16 (several tokens: one row, at + 0) */
const SCALES_AT = CONSTANTS_AT + 16 * MAX_CONSTANTS;
/** the integer accumulator's store (see addScaled), row or token i's at + 16 i */
const STORE_AT = SCALES_AT + 32 * ROWS;
/** Q4_K/Q5_K: the block's mins times the activation sums, row or token i's at + 16 i */
const MSUM_AT = STORE_AT + 16 * LANES;
/** several tokens: token i's f64 accumulator at + 8 i */
const ACC_AT = MSUM_AT + 16 * LANES;

/** Bytes of kernel scratch (param tmp) a decode kernel needs. */
export const DECODE_SCRATCH = ACC_AT + 8 * LANES;

/** Locals of one weight row in the row and block loops. */
interface RowCtx {
  /** weight block */
  wb: number;
  /** the f64 accumulator of the row */
  acc: number;
}

/** Locals of the row/block loops a block body uses. */
interface Ctx {
  c: Code;
  /** the rows computed together: row i's scratch at SCALES_AT + 32 i etc. */
  rows: RowCtx[];
  /** staged activations of the block */
  ab: number;
  /** the block's activation scale (address) */
  dp: number;
  /** the block's staged activation sums (address) */
  bp: number;
}

interface DecodeSpec {
  typeSize: number;
  /** bytes of a block's staged activations: 512 (int16), relaxed 256 (int8) */
  actBytes: number;
  /** bytes of staged activation sums per block */
  bsBytes: number;
  block: (x: Ctx) => void;
}

/** Pushes an i16x8 with every lane v. */
function splat16(c: Code, v: number): void {
  c.v128Const(new Array(8).fill(0).flatMap(() => [v & 0xff, v >> 8]));
}

/**
 * A v128 local set to an i16x8 constant, once, before the row loop. Stored to the scratch memory and
 * loaded back: V8 would rematerialize a literal constant at every use inside the loops (three
 * instructions), a loaded value stays in a register.
 */
function constant16(c: Code, v: number, init: (() => void)[]): number {
  if (init.length >= MAX_CONSTANTS) throw new Error("decode kernel: more constants than MAX_CONSTANTS");
  const l = c.local(V128);
  const at = CONSTANTS_AT + 16 * init.length;
  init.push(() => {
    c.get(P.tmp);
    splat16(c, v);
    c.simdMem(Simd.v128Store, at);
    c.get(P.tmp).simdMem(Simd.v128Load, at).set(l);
  });
  return l;
}

/** Sets locals ae, ad to the 16 staged activations at (local a) + 2 off: the 8 even-indexed values, the 8 odd-minus-256-even ones. */
function loadActivations(c: Code, a: number, off: number, ae: number, ad: number): void {
  c.get(a).simdMem(Simd.v128Load, 2 * off).set(ae);
  c.get(a).simdMem(Simd.v128Load, 2 * off + 16).set(ad);
}

/**
 * The i16x8 lanes on the stack each hold two quants, even + 256 odd (unsigned bytes); pushes
 * even * act_even + odd * act_odd per lane as lanes * ae + (lanes >> 8) * ad, locals ae and ad holding the
 * staged activations (loadActivations). v: a scratch local.
 */
function mulBytePairs(c: Code, ae: number, ad: number, v: number): void {
  c.tee(v).get(ae).simd(Simd.i16x8Mul);
  c.get(v).i32(8).simd(Simd.i16x8ShrU).get(ad).simd(Simd.i16x8Mul);
  c.simd(Simd.i16x8Add);
}

/**
 * Relaxed SIMD (./relaxed.ts): the i16x8 lanes of the activations in local a (int8) times the quants on
 * the stack (unsigned bytes, 0..63), summed in pairs: the same sums as mulBytePairs, exact (|sum| <= 2 *
 * 63 * 128 per lane). `q`: pushes the quants.
 */
function relaxedProducts(c: Code, a: number, q: () => void): void {
  c.get(a);
  q();
  c.simd(Simd.i16x8RelaxedDotI8x16I7x16S);
}

/** The offset of value v of token t in a block's staged activations: int16 (512 bytes a token) or, relaxed, int8 (256). */
function actOffset(relaxed: boolean, v: number, t = 0): number {
  return relaxed ? 256 * t + v : 512 * t + 2 * v;
}

/**
 * vacc += dot(i16x8 on the stack, the int16 scale at tmp + SCALES_AT + 32 i + off splatted), for row i.
 * vacc is also stored at tmp + STORE_AT + 16 i, a store the loads that follow are ordered after: V8 would
 * otherwise issue the loads of a whole loop body first and keep every loaded vector live (spilling them).
 */
function addScaled(c: Code, i: number, off: number, vacc: number): void {
  c.get(P.tmp).simdMem(Simd.load16Splat, SCALES_AT + 32 * i + off);
  addDot(c, STORE_AT + 16 * i, vacc);
}

/** addScaled with the splatted scale in local scale, vacc stored at tmp + storeAt. */
function addScaledBy(c: Code, scale: number, storeAt: number, vacc: number): void {
  c.get(scale);
  addDot(c, storeAt, vacc);
}

/** vacc += dot of the two i16x8 on the stack, then stored at tmp + storeAt (see addScaled). */
function addDot(c: Code, storeAt: number, vacc: number): void {
  c.simd(Simd.i32x4DotI16x8S).get(vacc).simd(Simd.i32x4Add).set(vacc);
  c.get(P.tmp).get(vacc).simdMem(Simd.v128Store, storeAt);
}

/** Sets local scale to the int16 scale at tmp + SCALES_AT + off splatted. */
function splatScale(c: Code, off: number, scale: number): void {
  c.get(P.tmp).simdMem(Simd.load16Splat, SCALES_AT + off).set(scale);
}

/** A v128 local per row. */
function perRow(c: Code): number[] {
  return Array.from({ length: ROWS }, () => c.local(V128));
}

/**
 * Q4_K and Q5_K (`five`: the fifth bit of every quant from the 32 qh bytes at 16, quants at 48). For
 * j = 0..3: the 32 quant bytes of sub-blocks 2j (low nibbles) and 2j + 1 (high nibbles).
 */
function q4KDecode(five: boolean, relaxed: boolean): (init: (() => void)[], c: Code) => DecodeSpec {
  return (init, c) => {
    const m0f0f = constant16(c, 0x0f0f, init);
    const m1010 = five ? constant16(c, 0x1010, init) : -1;
    const sm = c.local(V128), v = c.local(V128), ae = c.local(V128), ad = c.local(V128);
    const vacc = perRow(c), part = perRow(c), xs = [perRow(c), perRow(c)], qh = [perRow(c), perRow(c)];
    const a = c.local(I32), b = c.local(I32), cw = c.local(I32);
    const qsOff = five ? 48 : 16;
    /**
     * Pushes the products for the nibbles (`high`) of row i's xs[k], with their fifth bits: bit `bit` of
     * qh[k]'s bytes (Q5_K), times the activations in ae, ad.
     */
    const quantProducts = (high: boolean, i: number, k: number, bit: number) => {
      const quants = () => {
        c.get(xs[k]![i]!);
        if (high) c.i32(4).simd(Simd.i16x8ShrU);
        c.get(m0f0f).simd(Simd.v128And);
        if (five) {
          c.get(qh[k]![i]!);
          if (bit < 4) c.i32(4 - bit).simd(Simd.i16x8Shl);
          else if (bit > 4) c.i32(bit - 4).simd(Simd.i16x8ShrU);
          c.get(m1010).simd(Simd.v128And).simd(Simd.v128Or);
        }
      };
      if (relaxed) relaxedProducts(c, ae, quants);
      else {
        quants();
        mulBytePairs(c, ae, ad, v);
      }
    };
    /**
     * Adds sub-blocks 2j (low nibbles: values 64j + 16k + 0..15, k = 0, 1) and 2j + 1 (high nibbles:
     * values 64j + 32 + 16k ..) to every row's vacc: quant bytes at wb + qsOff + 32j.
     */
    const subBlocks = (rows: RowCtx[], ab: number, j: number) => {
      rows.forEach(({ wb }, i) => {
        for (let k = 0; k < 2; k++) c.get(wb).simdMem(Simd.v128Load, qsOff + 32 * j + 16 * k).set(xs[k]![i]!);
      });
      for (const high of [false, true]) {
        for (let k = 0; k < 2; k++) {
          const first = 64 * j + (high ? 32 : 0) + 16 * k;
          if (relaxed) c.get(ab).simdMem(Simd.v128Load, first).set(ae);
          else loadActivations(c, ab, first, ae, ad);
          rows.forEach((_, i) => {
            quantProducts(high, i, k, 2 * j + (high ? 1 : 0));
            if (k === 0) c.set(part[i]!);
            else {
              c.get(part[i]!).simd(Simd.i16x8Add);
              addScaled(c, i, 4 * j + (high ? 2 : 0), vacc[i]!);
            }
          });
        }
      }
    };
    return {
      typeSize: five ? 176 : 144,
      actBytes: actOffset(relaxed, 256),
      bsBytes: 16,
      block({ rows, dp, ab, bp }) {
        rows.forEach(({ wb }, i) => {
          kScalesMins(c, wb, { a, b, cw }, sm);
          // the 8 scales as int16 in tmp; msum lanes: mins times the activation sums of their sub-blocks
          c.get(P.tmp).get(sm).simd(Simd.i16x8ExtendLowI8x16U).simdMem(Simd.v128Store, SCALES_AT + 32 * i);
          c.get(P.tmp).get(sm).simd(Simd.i16x8ExtendHighI8x16U).get(bp).simdMem(Simd.v128Load, 0).simd(Simd.i32x4DotI16x8S).simdMem(Simd.v128Store, MSUM_AT + 16 * i);
          if (five) for (let k = 0; k < 2; k++) c.get(wb).simdMem(Simd.v128Load, 16 + 16 * k).set(qh[k]![i]!);
          c.v128Const(new Array(16).fill(0)).set(vacc[i]!);
        });
        for (let j = 0; j < 4; j++) subBlocks(rows, ab, j);
        rows.forEach(({ wb, acc }, i) => {
          c.get(acc);
          q4KBlockValue(c, vacc[i]!, MSUM_AT + 16 * i, v, wb, dp, 0);
          c.op(Op.f64Add).set(acc);
        });
      },
    };
  };
}

/**
 * Pushes a Q4_K/Q5_K block's da * (d * isum - dmin * msum) as f64: isum the sum of vacc's i32 lanes,
 * msum that of the i32x4 at tmp + msumAt, d and dmin the f16 at wb, wb + 2, da the f32 at dp + dpOff.
 * v: a v128 scratch local.
 */
function q4KBlockValue(c: Code, vacc: number, msumAt: number, v: number, wb: number, dp: number, dpOff: number): void {
  // isum = sum of vacc's lanes, msum = sum of msum's lanes: one reduction for both
  const msum = () => c.get(P.tmp).simdMem(Simd.v128Load, msumAt);
  c.get(vacc);
  msum();
  c.shuffle(i32Lanes([0, 4, 1, 5])).get(vacc);
  msum();
  c.shuffle(i32Lanes([2, 6, 3, 7])).simd(Simd.i32x4Add).tee(v);
  c.get(v).get(v).shuffle(i32Lanes([2, 3, 0, 1])).simd(Simd.i32x4Add).set(v);
  f32AsF64(c, dp, dpOff);
  f16AsF64(c, wb, 0);
  c.get(v).lane(Simd.i32x4ExtractLane, 0).op(Op.f64ConvertI32S, Op.f64Mul);
  f16AsF64(c, wb, 2);
  c.get(v).lane(Simd.i32x4ExtractLane, 1).op(Op.f64ConvertI32S, Op.f64Mul, Op.f64Sub, Op.f64Mul);
}

/** Shuffle lanes selecting i32 lanes k (0..3 of the first operand, 4..7 of the second). */
function i32Lanes(k: number[]): number[] {
  return k.flatMap((j) => [4 * j, 4 * j + 1, 4 * j + 2, 4 * j + 3]);
}

/** Byte offsets in Q6_K's 210-byte block: ql (128), qh (64), 16 int8 scales, f16 d. */
const Q6K_QH = 128, Q6K_SCALES = 192, Q6K_D = 208;

/** Pushes Q6_K quants (nibble | two high bits << 4), unsigned 0..63, of part p from locals ql (its ql bytes) and qh. */
function q6KQuants(c: Code, ql: number, qh: number, p: number, m0f0f: number, m3030: number): void {
  c.get(ql);
  if (p >= 2) c.i32(4).simd(Simd.i16x8ShrU);
  c.get(m0f0f).simd(Simd.v128And);
  c.get(qh);
  const shift = 4 - 2 * p;
  if (shift > 0) c.i32(shift).simd(Simd.i16x8Shl);
  else if (shift < 0) c.i32(-shift).simd(Simd.i16x8ShrU);
  c.get(m3030).simd(Simd.v128And).simd(Simd.v128Or);
}

/**
 * Q6_K: for k = 0..3 (half h = k >> 1, x = k & 1), the 16 bytes at ql + 64 h + 16 x, ql + 64 h + 32 + 16 x
 * and qh + 32 h + 16 x make the quants of values 128 h + 32 p + 16 x + 0..15, p = 0..3 (p = 0, 2 from the
 * first ql bytes, 1, 3 from the second), whose scale is scales[8 h + 2 p + x].
 */
function q6KDecode(relaxed: boolean): (init: (() => void)[], c: Code) => DecodeSpec {
  return (init, c) => q6KDecodeSpec(relaxed, init, c);
}

function q6KDecodeSpec(relaxed: boolean, init: (() => void)[], c: Code): DecodeSpec {
  const m0f0f = constant16(c, 0x0f0f, init), m3030 = constant16(c, 0x3030, init);
  const v = c.local(V128), sc = c.local(V128), ae = c.local(V128), ad = c.local(V128);
  const vacc = perRow(c), ql = [perRow(c), perRow(c)], qh = perRow(c);
  return {
    typeSize: 210,
    actBytes: actOffset(relaxed, 256),
    bsBytes: 32,
    block({ rows, ab, dp, bp }) {
      rows.forEach(({ wb }, i) => {
        // scales as int16 in tmp; vacc starts at -32 * sum_g scale_g * bsum_g
        const at = SCALES_AT + 32 * i;
        c.get(wb).simdMem(Simd.v128Load, Q6K_SCALES).set(sc);
        c.get(P.tmp).get(sc).simd(Simd.i16x8ExtendLowI8x16S).simdMem(Simd.v128Store, at);
        c.get(P.tmp).get(sc).simd(Simd.i16x8ExtendHighI8x16S).simdMem(Simd.v128Store, at + 16);
        c.v128Const(new Array(16).fill(0));
        c.get(P.tmp).simdMem(Simd.v128Load, at).get(bp).simdMem(Simd.v128Load, 0).simd(Simd.i32x4DotI16x8S);
        c.get(P.tmp).simdMem(Simd.v128Load, at + 16).get(bp).simdMem(Simd.v128Load, 16).simd(Simd.i32x4DotI16x8S);
        c.simd(Simd.i32x4Add).i32(5).simd(Simd.i32x4Shl).simd(Simd.i32x4Sub).set(vacc[i]!);
      });
      for (let k = 0; k < 4; k++) {
        const h = k >> 1, x = k & 1;
        // one row: the step's three weight vectors loaded first, p in order; two rows: fewer live
        // registers, p = 0, 2 then 1, 3 (each the faster, measured)
        const stages = rows.length === 1 ? [[0, 1, 2, 3]] : [[0, 2], [1, 3]];
        for (const ps of stages) {
          rows.forEach(({ wb }, i) => {
            for (const first of [0, 1]) if (ps.includes(first)) c.get(wb).simdMem(Simd.v128Load, 64 * h + 32 * first + 16 * x).set(ql[first]![i]!);
            if (ps === stages[0]) c.get(wb).simdMem(Simd.v128Load, Q6K_QH + 16 * k).set(qh[i]!);
          });
          for (const p of ps) {
            const first = 128 * h + 32 * p + 16 * x;
            if (relaxed) c.get(ab).simdMem(Simd.v128Load, first).set(ae);
            else loadActivations(c, ab, first, ae, ad);
            rows.forEach((_, i) => {
              const quants = () => q6KQuants(c, ql[p % 2]![i]!, qh[i]!, p, m0f0f, m3030);
              if (relaxed) relaxedProducts(c, ae, quants);
              else {
                quants();
                mulBytePairs(c, ae, ad, v);
              }
              addScaled(c, i, 2 * (8 * h + 2 * p + x), vacc[i]!);
            });
          }
        }
      }
      rows.forEach(({ wb, acc }, i) => {
        // acc += (da * d) * isum
        c.get(acc);
        f32AsF64(c, dp);
        f16AsF64(c, wb, Q6K_D);
        c.op(Op.f64Mul).get(vacc[i]!).sumI32x4().op(Op.f64ConvertI32S, Op.f64Mul, Op.f64Add).set(acc);
      });
    },
  };
}

/**
 * The row and block loops around a block body. The n = r1 - r0 rows are cut into ROWS ranges of
 * h = n / ROWS rows whose i-th rows go through the block body together, as ROWS sequential streams of
 * weights far apart (see the header); the rows left over (all of them when n < SPLIT_MIN_ROWS) come
 * last, one at a time.
 */
function emitDecodeKernel(name: string, make: (init: (() => void)[], c: Code) => DecodeSpec): { def: FuncDef; spec: DecodeSpec } {
  const c = new Code(N_PARAMS);
  const r = c.local(I32), h = c.local(I32), blk = c.local(I32), ab = c.local(I32), dp = c.local(I32), bp = c.local(I32);
  const rows: RowCtx[] = Array.from({ length: ROWS }, () => ({ wb: c.local(I32), acc: c.local(F64) }));
  const init: (() => void)[] = [];
  const spec = make(init, c);
  for (const f of init) f();
  /** rows r + i h, i = 0 .. n - 1 */
  const rowsBody = (n: number) => {
    const x: Ctx = { c, rows: rows.slice(0, n), ab, dp, bp };
    x.rows.forEach(({ wb, acc }, i) => {
      c.get(P.w).get(r);
      if (i > 0) c.get(h).i32(i).op(Op.i32Mul, Op.i32Add);
      c.get(P.rb).op(Op.i32Mul, Op.i32Add).set(wb).f64(0).set(acc);
    });
    c.get(P.act).set(ab).get(P.ad).set(dp).get(P.bs).set(bp);
    c.forLoop(blk, () => c.i32(0), () => c.get(P.nb), 1, () => {
      spec.block(x);
      for (const { wb } of x.rows) c.inc(wb, spec.typeSize);
      c.inc(ab, spec.actBytes).inc(dp, 4).inc(bp, spec.bsBytes);
    });
    x.rows.forEach(({ acc }, i) => {
      c.get(P.out).get(r).get(P.r0).op(Op.i32Sub);
      if (i > 0) c.get(h).i32(i).op(Op.i32Mul, Op.i32Add);
      c.i32(2).op(Op.i32Shl, Op.i32Add).get(acc).op(Op.f32DemoteF64).mem(Mem.f32Store);
    });
  };
  // h = n / ROWS for n >= SPLIT_MIN_ROWS rows, else 0 (every row alone)
  c.get(P.r1).get(P.r0).op(Op.i32Sub).tee(h).i32(ROWS).op(Op.i32DivU).i32(0).get(h).i32(SPLIT_MIN_ROWS).op(Op.i32GeS, Op.select).set(h);
  c.forLoop(r, () => c.get(P.r0), () => c.get(P.r0).get(h).op(Op.i32Add), 1, () => rowsBody(ROWS));
  c.forLoop(r, () => c.get(P.r0).get(h).i32(ROWS).op(Op.i32Mul, Op.i32Add), () => c.get(P.r1), 1, () => rowsBody(1));
  return { def: { name, params: new Array(N_PARAMS).fill(I32), results: [], code: c }, spec };
}

/**
 * Locals of a multi-token kernel's block loop: one weight row's block at wb, the T tokens' staged
 * activations of the block at ab + 512 t, their scales at dp + 4 t and sums at bp + bsBytes t.
 */
interface MultiCtx {
  wb: number;
  ab: number;
  dp: number;
  bp: number;
}

interface MultiSpec {
  typeSize: number;
  /** bytes of a block's staged activations, per token: 512 (int16), relaxed 256 (int8) */
  actBytes: number;
  bsBytes: number;
  /** the block body: token t's integer accumulator is vacc[t], its f64 accumulator at tmp + ACC_AT + 8 t */
  block: (x: MultiCtx) => void;
}

/**
 * Pushes q * (the 8 staged even activations at ab + off) + qShr * (the 8 odd-minus-256-even ones at
 * ab + off + 16): see mulBytePairs, with q >> 8 already in qShr. `relaxed`: the same sums as the relaxed
 * dot product of the 16 int8 activations at ab + off with q (qShr unused).
 */
function mulStaged(c: Code, relaxed: boolean, q: number, qShr: number, ab: number, off: number): void {
  if (relaxed) {
    c.get(ab).simdMem(Simd.v128Load, off).get(q).simd(Simd.i16x8RelaxedDotI8x16I7x16S);
    return;
  }
  c.get(q).get(ab).simdMem(Simd.v128Load, off).simd(Simd.i16x8Mul);
  c.get(qShr).get(ab).simdMem(Simd.v128Load, off + 16).simd(Simd.i16x8Mul).simd(Simd.i16x8Add);
}

/** Sets q to the i16x8 on the stack and qShr to q >> 8 (unsigned). */
function setQuants(c: Code, q: number, qShr: number): void {
  c.tee(q).i32(8).simd(Simd.i16x8ShrU).set(qShr);
}

/** Token t's f64 accumulator: pushes its address, then its value (for addToAcc). */
function loadAcc(c: Code, t: number): void {
  c.get(P.tmp).get(P.tmp).mem(Mem.f64Load, ACC_AT + 8 * t);
}

/** Ends loadAcc: adds the f64 on the stack and stores the sum. */
function addToAcc(c: Code, t: number): void {
  c.op(Op.f64Add).mem(Mem.f64Store, ACC_AT + 8 * t);
}

/**
 * Q4_K / Q5_K for T tokens, one weight row: each group of 16 quants is unpacked once (16-byte loads,
 * masks and shifts as in q4KDecode) and multiplied with every token's staged activations.
 */
function q4KMulti(five: boolean, relaxed: boolean, T: number): (init: (() => void)[], c: Code) => MultiSpec {
  return (init, c) => {
    const m0f0f = constant16(c, 0x0f0f, init);
    const m1010 = five ? constant16(c, 0x1010, init) : -1;
    const sm = c.local(V128), v = c.local(V128), mins = c.local(V128), scale = c.local(V128);
    const q = [c.local(V128), c.local(V128)], qShr = [c.local(V128), c.local(V128)];
    const vacc = Array.from({ length: T }, () => c.local(V128));
    const a = c.local(I32), b = c.local(I32), cw = c.local(I32);
    const qsOff = five ? 48 : 16;
    return {
      typeSize: five ? 176 : 144,
      actBytes: actOffset(relaxed, 256),
      bsBytes: 16,
      block({ wb, ab, dp, bp }) {
        kScalesMins(c, wb, { a, b, cw }, sm);
        c.get(P.tmp).get(sm).simd(Simd.i16x8ExtendLowI8x16U).simdMem(Simd.v128Store, SCALES_AT);
        c.get(sm).simd(Simd.i16x8ExtendHighI8x16U).set(mins);
        for (let t = 0; t < T; t++) {
          c.get(P.tmp).get(mins).get(bp).simdMem(Simd.v128Load, 16 * t).simd(Simd.i32x4DotI16x8S).simdMem(Simd.v128Store, MSUM_AT + 16 * t);
          c.v128Const(new Array(16).fill(0)).set(vacc[t]!);
        }
        // sub-block s = 2j + high: values 64j + 32 high + 16k + 0..15 from the nibbles of bytes qsOff + 32j + 16k
        for (let s = 0; s < 8; s++) {
          const j = s >> 1, high = s & 1;
          for (let k = 0; k < 2; k++) {
            c.get(wb).simdMem(Simd.v128Load, qsOff + 32 * j + 16 * k);
            if (high) c.i32(4).simd(Simd.i16x8ShrU);
            c.get(m0f0f).simd(Simd.v128And);
            if (five) {
              c.get(wb).simdMem(Simd.v128Load, 16 + 16 * k);
              if (s < 4) c.i32(4 - s).simd(Simd.i16x8Shl);
              else if (s > 4) c.i32(s - 4).simd(Simd.i16x8ShrU);
              c.get(m1010).simd(Simd.v128And).simd(Simd.v128Or);
            }
            if (relaxed) c.set(q[k]!);
            else setQuants(c, q[k]!, qShr[k]!);
          }
          splatScale(c, 2 * s, scale);
          for (let t = 0; t < T; t++) {
            for (let k = 0; k < 2; k++) mulStaged(c, relaxed, q[k]!, qShr[k]!, ab, actOffset(relaxed, 32 * s + 16 * k, t));
            c.simd(Simd.i16x8Add);
            addScaledBy(c, scale, STORE_AT + 16 * t, vacc[t]!);
          }
        }
        for (let t = 0; t < T; t++) {
          loadAcc(c, t);
          q4KBlockValue(c, vacc[t]!, MSUM_AT + 16 * t, v, wb, dp, 4 * t);
          addToAcc(c, t);
        }
      },
    };
  };
}

/**
 * Q6_K for T tokens, one weight row: each group of 16 quants is unpacked once (as in q6KDecode) and
 * multiplied with every token's staged activations.
 */
function q6KMulti(relaxed: boolean, T: number): (init: (() => void)[], c: Code) => MultiSpec {
  return (init, c) => {
    const m0f0f = constant16(c, 0x0f0f, init), m3030 = constant16(c, 0x3030, init);
    const sc = c.local(V128), scale = c.local(V128), q = c.local(V128), qShr = c.local(V128), ql = [c.local(V128), c.local(V128)], qh = c.local(V128);
    const vacc = Array.from({ length: T }, () => c.local(V128));
    return {
      typeSize: 210,
      actBytes: actOffset(relaxed, 256),
      bsBytes: 32,
      block({ wb, ab, dp, bp }) {
        c.get(wb).simdMem(Simd.v128Load, Q6K_SCALES).set(sc);
        c.get(P.tmp).get(sc).simd(Simd.i16x8ExtendLowI8x16S).simdMem(Simd.v128Store, SCALES_AT);
        c.get(P.tmp).get(sc).simd(Simd.i16x8ExtendHighI8x16S).simdMem(Simd.v128Store, SCALES_AT + 16);
        for (let t = 0; t < T; t++) {
          // vacc starts at -32 * sum_g scale_g * bsum_g
          c.v128Const(new Array(16).fill(0));
          c.get(P.tmp).simdMem(Simd.v128Load, SCALES_AT).get(bp).simdMem(Simd.v128Load, 32 * t).simd(Simd.i32x4DotI16x8S);
          c.get(P.tmp).simdMem(Simd.v128Load, SCALES_AT + 16).get(bp).simdMem(Simd.v128Load, 32 * t + 16).simd(Simd.i32x4DotI16x8S);
          c.simd(Simd.i32x4Add).i32(5).simd(Simd.i32x4Shl).simd(Simd.i32x4Sub).set(vacc[t]!);
        }
        for (let k = 0; k < 4; k++) {
          const h = k >> 1, x = k & 1;
          for (const first of [0, 1]) c.get(wb).simdMem(Simd.v128Load, 64 * h + 32 * first + 16 * x).set(ql[first]!);
          c.get(wb).simdMem(Simd.v128Load, Q6K_QH + 16 * k).set(qh);
          for (let p = 0; p < 4; p++) {
            q6KQuants(c, ql[p % 2]!, qh, p, m0f0f, m3030);
            if (relaxed) c.set(q);
            else setQuants(c, q, qShr);
            splatScale(c, 2 * (8 * h + 2 * p + x), scale);
            for (let t = 0; t < T; t++) {
              mulStaged(c, relaxed, q, qShr, ab, actOffset(relaxed, 128 * h + 32 * p + 16 * x, t));
              addScaledBy(c, scale, STORE_AT + 16 * t, vacc[t]!);
            }
          }
        }
        for (let t = 0; t < T; t++) {
          // acc += (da * d) * isum
          loadAcc(c, t);
          f32AsF64(c, dp, 4 * t);
          f16AsF64(c, wb, Q6K_D);
          c.op(Op.f64Mul).get(vacc[t]!).sumI32x4().op(Op.f64ConvertI32S, Op.f64Mul);
          addToAcc(c, t);
        }
      },
    };
  };
}

/**
 * The row and block loops around a multi-token block body: rows one at a time, each block of the row
 * with the T tokens' activations of that block (staged interleaved by block, see
 * stageDecodeActivations); out[t * n + r - r0], n = r1 - r0.
 */
function emitMultiKernel(name: string, T: number, make: (init: (() => void)[], c: Code) => MultiSpec): { def: FuncDef; spec: MultiSpec } {
  const c = new Code(N_PARAMS);
  const r = c.local(I32), blk = c.local(I32), wb = c.local(I32), ab = c.local(I32), dp = c.local(I32), bp = c.local(I32), n4 = c.local(I32);
  const init: (() => void)[] = [];
  const spec = make(init, c);
  for (const f of init) f();
  c.get(P.r1).get(P.r0).op(Op.i32Sub).i32(2).op(Op.i32Shl).set(n4);
  c.forLoop(r, () => c.get(P.r0), () => c.get(P.r1), 1, () => {
    c.get(P.w).get(r).get(P.rb).op(Op.i32Mul, Op.i32Add).set(wb);
    for (let t = 0; t < T; t++) c.get(P.tmp).f64(0).mem(Mem.f64Store, ACC_AT + 8 * t);
    c.get(P.act).set(ab).get(P.ad).set(dp).get(P.bs).set(bp);
    c.forLoop(blk, () => c.i32(0), () => c.get(P.nb), 1, () => {
      spec.block({ wb, ab, dp, bp });
      c.inc(wb, spec.typeSize).inc(ab, spec.actBytes * T).inc(dp, 4 * T).inc(bp, spec.bsBytes * T);
    });
    for (let t = 0; t < T; t++) {
      c.get(P.out).get(r).get(P.r0).op(Op.i32Sub).i32(2).op(Op.i32Shl, Op.i32Add);
      if (t > 0) c.get(n4).i32(t).op(Op.i32Mul, Op.i32Add);
      c.get(P.tmp).mem(Mem.f64Load, ACC_AT + 8 * t).op(Op.f32DemoteF64).mem(Mem.f32Store);
    }
  });
  return { def: { name, params: new Array(N_PARAMS).fill(I32), results: [], code: c }, spec };
}

/** What the runtime needs to know about a decode kernel. */
export interface DecodeKernelInfo {
  name: string;
  typeSize: number;
  /** staged activation sums: per 32 values (Q4_K, Q5_K) or per 16 (Q6_K) */
  sumsPer: 16 | 32;
  /** tokens per call */
  tokens: number;
  /** relaxed SIMD (./relaxed.ts): activations staged as int8 */
  relaxed: boolean;
}

/** Kernel makers per weight type name: one token (rows two at a time) and T tokens (one row at a time). */
const DECODE: Record<string, { one: (relaxed: boolean) => (init: (() => void)[], c: Code) => DecodeSpec; multi: (relaxed: boolean, T: number) => (init: (() => void)[], c: Code) => MultiSpec }> = {
  q4_k: { one: (relaxed) => q4KDecode(false, relaxed), multi: (relaxed, T) => q4KMulti(false, relaxed, T) },
  q5_k: { one: (relaxed) => q4KDecode(true, relaxed), multi: (relaxed, T) => q4KMulti(true, relaxed, T) },
  q6_k: { one: q6KDecode, multi: q6KMulti },
};

/** The decode kernel's name for weights of type `type` (q4_k, q5_k, q6_k) and T tokens. */
export function decodeKernelFor(type: string, T: number): string {
  return `${type}_${T}tok`;
}

/** The relaxed-SIMD variant of decode kernel `name` (./relaxed.ts): its name in the module. */
export const relaxedDecodeName = (name: string): string => `${name}_r`;

/**
 * Every decode kernel function (for 1 to MAX_DECODE_TOKENS tokens), and its description; with `relaxed`,
 * also their relaxed-SIMD variants (relaxedDecodeName).
 */
export function emitDecodeKernels(relaxed = false): { funcs: FuncDef[]; info: Map<string, DecodeKernelInfo> } {
  const funcs: FuncDef[] = [];
  const info = new Map<string, DecodeKernelInfo>();
  for (const [type, { one, multi }] of Object.entries(DECODE)) {
    for (const r of relaxed ? [false, true] : [false]) {
      for (let T = 1; T <= MAX_DECODE_TOKENS; T++) {
        const name = r ? relaxedDecodeName(decodeKernelFor(type, T)) : decodeKernelFor(type, T);
        const { def, spec } = T === 1 ? emitDecodeKernel(name, one(r)) : emitMultiKernel(name, T, multi(r, T));
        funcs.push(def);
        info.set(name, { name, typeSize: spec.typeSize, sumsPer: spec.bsBytes === 16 ? 32 : 16, tokens: T, relaxed: r });
      }
    }
  }
  return { funcs, info };
}

/** Bytes of staged activations for T tokens of K values (int16 quants, relaxed int8; float32 scales, int16 sums). */
export function decodeStagedBytes(K: number, sumsPer: 16 | 32, T = 1, relaxed = false): { quants: number; scales: number; sums: number } {
  return { quants: (relaxed ? 1 : 2) * K * T, scales: (K / 256) * 4 * T, sums: ((2 * K) / sumsPer) * T };
}

/**
 * Stages token t of T tokens' Q8_K activations (qs, d, bsums: that token's) for the decode kernels,
 * interleaved by block (block b of token t at index b T + t in units of a block's staged values): quants
 * as int16, each group of 16 as its 8 evens then its 8 odds minus 256 times the even before them (see
 * the header), or (int8 `quants`: the relaxed kernels) as they are; scales as they are; sums of the
 * quants per sumsPer values as int16 (|sum| <= 4096).
 */
export function stageDecodeActivations(qs: Int8Array, d: Float32Array, bsums: Int32Array, K: number, sumsPer: 16 | 32, quants: Int16Array | Int8Array, scales: Float32Array, sums: Int16Array, t = 0, T = 1): void {
  const nb = K / 256, sumsPerBlock = 256 / sumsPer, per = sumsPer / 16;
  for (let b = 0; b < nb; b++) {
    const src = 256 * b, dst = 256 * (b * T + t);
    if (quants instanceof Int8Array) quants.set(qs.subarray(src, src + 256), dst);
    else for (let g = 0; g < 256; g += 16) {
      for (let i = 0; i < 8; i++) {
        const e = qs[src + g + 2 * i]!;
        quants[dst + g + i] = e;
        // wraps to int16
        quants[dst + g + 8 + i] = qs[src + g + 2 * i + 1]! - 256 * e;
      }
    }
    scales[b * T + t] = d[b]!;
    const s0 = sumsPerBlock * (b * T + t), i0 = sumsPerBlock * b;
    for (let i = 0; i < sumsPerBlock; i++) sums[s0 + i] = per === 1 ? bsums[i0 + i]! : bsums[2 * (i0 + i)]! + bsums[2 * (i0 + i) + 1]!;
  }
}
