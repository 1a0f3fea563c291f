/**
 * Single-token (decode) WebAssembly SIMD kernels for Q4_K, Q5_K and Q6_K weights, emitted with
 * ./emitter.ts. One token is dotted with every weight row, so the weight unpacking is paid per row and
 * the activations are shared by all rows: the runtime stages them once per product (see
 * `stageDecodeActivations`) as int16, each group of 16 values a_0..a_15 as the 8 even-indexed values
 * a_2i, then the 8 values a_2i+1 - 256 a_2i (wrapped to int16). That order matches weights read as i16x8
 * lanes v = e + 256 o (e an even value's quant in the low byte, o an odd one's in the high byte, both
 * unsigned, all other bits cleared with 16-bit masks and shifts, which are cheap on every SIMD unit):
 * v * a_2i + (v >> 8) * (a_2i+1 - 256 a_2i) = e a_2i + o a_2i+1, modulo 2^16 as `i16x8.mul` computes it,
 * one mask fewer than splitting v into e and o.
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
/** Byte offsets in the kernel scratch (param tmp), row i's at + 32 i (scales) or + 16 i: a block's scales as int16 */
const SCALES_AT = 0;
/** the integer accumulator's store (see addScaled) */
const STORE_AT = SCALES_AT + 32 * ROWS;
/** Q4_K/Q5_K: the block's mins times the activation sums */
const MSUM_AT = STORE_AT + 16 * ROWS;
/** the i16x8 constants (at most MAX_CONSTANTS), 16 bytes each */
const CONSTANTS_AT = MSUM_AT + 16 * ROWS;
const MAX_CONSTANTS = 2;

/** Bytes of kernel scratch (param tmp) a decode kernel needs. */
export const DECODE_SCRATCH = CONSTANTS_AT + 16 * MAX_CONSTANTS;

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
 * vacc += dot(i16x8 on the stack, the int16 scale at tmp + SCALES_AT + 32 i + off splatted), for row i.
 * vacc is also stored at tmp + STORE_AT + 16 i, a store the loads that follow are ordered after: V8 would
 * otherwise issue the loads of a whole loop body first and keep every loaded vector live (spilling them).
 */
function addScaled(c: Code, i: number, off: number, vacc: number): void {
  c.get(P.tmp).simdMem(Simd.load16Splat, SCALES_AT + 32 * i + off).simd(Simd.i32x4DotI16x8S).get(vacc).simd(Simd.i32x4Add).set(vacc);
  c.get(P.tmp).get(vacc).simdMem(Simd.v128Store, STORE_AT + 16 * i);
}

/** A v128 local per row. */
function perRow(c: Code): number[] {
  return Array.from({ length: ROWS }, () => c.local(V128));
}

/**
 * Q4_K and Q5_K (`five`: the fifth bit of every quant from the 32 qh bytes at 16, quants at 48). For
 * j = 0..3: the 32 quant bytes of sub-blocks 2j (low nibbles) and 2j + 1 (high nibbles).
 */
function q4KDecode(five: boolean): (init: (() => void)[], c: Code) => DecodeSpec {
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
      c.get(xs[k]![i]!);
      if (high) c.i32(4).simd(Simd.i16x8ShrU);
      c.get(m0f0f).simd(Simd.v128And);
      if (five) {
        c.get(qh[k]![i]!);
        if (bit < 4) c.i32(4 - bit).simd(Simd.i16x8Shl);
        else if (bit > 4) c.i32(bit - 4).simd(Simd.i16x8ShrU);
        c.get(m1010).simd(Simd.v128And).simd(Simd.v128Or);
      }
      mulBytePairs(c, ae, ad, v);
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
          loadActivations(c, ab, 64 * j + (high ? 32 : 0) + 16 * k, ae, ad);
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
          // isum = sum of vacc's lanes, msum = sum of msum's lanes: one reduction for both
          const msum = () => c.get(P.tmp).simdMem(Simd.v128Load, MSUM_AT + 16 * i);
          c.get(vacc[i]!);
          msum();
          c.shuffle(i32Lanes([0, 4, 1, 5])).get(vacc[i]!);
          msum();
          c.shuffle(i32Lanes([2, 6, 3, 7])).simd(Simd.i32x4Add).tee(v);
          c.get(v).get(v).shuffle(i32Lanes([2, 3, 0, 1])).simd(Simd.i32x4Add).set(v);
          // acc += da * (d * isum - dmin * msum)
          c.get(acc);
          f32AsF64(c, dp);
          f16AsF64(c, wb, 0);
          c.get(v).lane(Simd.i32x4ExtractLane, 0).op(Op.f64ConvertI32S, Op.f64Mul);
          f16AsF64(c, wb, 2);
          c.get(v).lane(Simd.i32x4ExtractLane, 1).op(Op.f64ConvertI32S, Op.f64Mul, Op.f64Sub, Op.f64Mul, Op.f64Add).set(acc);
        });
      },
    };
  };
}

/** Shuffle lanes selecting i32 lanes k (0..3 of the first operand, 4..7 of the second). */
function i32Lanes(k: number[]): number[] {
  return k.flatMap((j) => [4 * j, 4 * j + 1, 4 * j + 2, 4 * j + 3]);
}

/** Byte offsets in Q6_K's 210-byte block: ql (128), qh (64), 16 int8 scales, f16 d. */
const Q6K_QH = 128, Q6K_SCALES = 192, Q6K_D = 208;

/**
 * Q6_K: for k = 0..3 (half h = k >> 1, x = k & 1), the 16 bytes at ql + 64 h + 16 x, ql + 64 h + 32 + 16 x
 * and qh + 32 h + 16 x make the quants of values 128 h + 32 p + 16 x + 0..15, p = 0..3 (p = 0, 2 from the
 * first ql bytes, 1, 3 from the second), whose scale is scales[8 h + 2 p + x].
 */
function q6KDecode(init: (() => void)[], c: Code): DecodeSpec {
  const m0f0f = constant16(c, 0x0f0f, init), m3030 = constant16(c, 0x3030, init);
  const v = c.local(V128), sc = c.local(V128), ae = c.local(V128), ad = c.local(V128);
  const vacc = perRow(c), ql = [perRow(c), perRow(c)], qh = perRow(c);
  return {
    typeSize: 210,
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
            loadActivations(c, ab, 128 * h + 32 * p + 16 * x, ae, ad);
            rows.forEach((_, i) => {
              // (nibble | two high bits << 4), unsigned 0..63
              c.get(ql[p % 2]![i]!);
              if (p >= 2) c.i32(4).simd(Simd.i16x8ShrU);
              c.get(m0f0f).simd(Simd.v128And);
              c.get(qh[i]!);
              const shift = 4 - 2 * p;
              if (shift > 0) c.i32(shift).simd(Simd.i16x8Shl);
              else if (shift < 0) c.i32(-shift).simd(Simd.i16x8ShrU);
              c.get(m3030).simd(Simd.v128And).simd(Simd.v128Or);
              mulBytePairs(c, ae, ad, v);
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
      c.inc(ab, 512).inc(dp, 4).inc(bp, spec.bsBytes);
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

/** What the runtime needs to know about a decode kernel. */
export interface DecodeKernelInfo {
  name: string;
  typeSize: number;
  /** staged activation sums: per 32 values (Q4_K, Q5_K) or per 16 (Q6_K) */
  sumsPer: 16 | 32;
}

const DECODE: Record<string, (init: (() => void)[], c: Code) => DecodeSpec> = {
  q4_k_1tok: q4KDecode(false),
  q5_k_1tok: q4KDecode(true),
  q6_k_1tok: q6KDecode,
};

/** Every decode kernel function, and its description. */
export function emitDecodeKernels(): { funcs: FuncDef[]; info: Map<string, DecodeKernelInfo> } {
  const funcs: FuncDef[] = [];
  const info = new Map<string, DecodeKernelInfo>();
  for (const [name, make] of Object.entries(DECODE)) {
    const { def, spec } = emitDecodeKernel(name, make);
    funcs.push(def);
    info.set(name, { name, typeSize: spec.typeSize, sumsPer: spec.bsBytes === 16 ? 32 : 16 });
  }
  return { funcs, info };
}

/** Bytes of staged activations for K values (int16 quants, float32 scales, int16 sums). */
export function decodeStagedBytes(K: number, sumsPer: 16 | 32): { quants: number; scales: number; sums: number } {
  return { quants: 2 * K, scales: (K / 256) * 4, sums: (2 * K) / sumsPer };
}

/**
 * Stages one token's Q8_K activations for the decode kernels: quants as int16, each group of 16 as its 8
 * evens then its 8 odds minus 256 times the even before them (see the header); scales as they are; sums
 * of the quants per sumsPer values as int16 (|sum| <= 4096).
 */
export function stageDecodeActivations(qs: Int8Array, d: Float32Array, bsums: Int32Array, K: number, sumsPer: 16 | 32, quants: Int16Array, scales: Float32Array, sums: Int16Array): void {
  for (let g = 0; g < K; g += 16) {
    for (let i = 0; i < 8; i++) {
      quants[g + i] = qs[g + 2 * i]!;
      // wraps to int16
      quants[g + 8 + i] = qs[g + 2 * i + 1]! - 256 * qs[g + 2 * i]!;
    }
  }
  scales.set(d.subarray(0, K / 256));
  const n = K / sumsPer;
  const per = sumsPer / 16;
  for (let i = 0; i < n; i++) sums[i] = per === 1 ? bsums[i]! : bsums[2 * i]! + bsums[2 * i + 1]!;
}
