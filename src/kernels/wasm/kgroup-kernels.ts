/**
 * WebAssembly SIMD row kernels (the loops of ./kernels.ts) for the K-family types whose scales are read
 * one at a time: IQ4_XS (6-bit scale per 32 values, non-linear 4-bit quants), Q3_K (6-bit signed scale
 * per 16, 3-bit quants) and Q2_K (4-bit scale and min per 16, 2-bit quants), all times Q8_K activations.
 * A super-block of 256 values is 16 vectors of 16 quants, in runs that share one integer scale; a run's
 * integer dot products are scaled as in ./kernels.ts's Q4_K (one token: the i32 products; several: the
 * i16 quants, once for all tokens). Scaled quants stay exact in int16: |scale * q| <= 32 * 127 (IQ4_XS).
 *
 * Float part, bit for bit the TypeScript kernels' (dot-fused.ts for one token, dot-quant.ts for several):
 * - Q2_K:         acc += da * (d * isum - dmin * msum), msum = sum over groups of min * activation sum
 * - Q3_K, IQ4_XS: one token acc += (da * d) * isum (`_single`), several da * (d * isum) (`_batch`)
 */
import { Code, F64, I32, Mem, Op, Simd, V128 } from "./emitter.ts";
import { KVALUES_IQ4NL } from "../../tensor/decode.ts";
import { type Ctx, type KernelInfo, type KernelSpec, TOKENS_PER_PASS, accumulate, emitRowKernels, lazyLocals, sumTokens, wide, widen } from "./kernels.ts";
import type { FuncDef } from "./emitter.ts";
import { f16AsF64, f32AsF64, splat8, tableQuants16 } from "./unpack.ts";

/**
 * What a type's block body needs: its runs of vectors, how to unpack them, their scales, its floats (also
 * what the batch kernels' tiles are unpacked with, see ./tile-types.ts).
 */
export interface KGroupType {
  typeSize: number;
  /** runs of vectors sharing a scale, each vector named by its first value's index in the super-block */
  runs: number[][];
  /** offset of the f16 d */
  dOff: number;
  /** Q2_K: offset of the f16 dmin (the 16 mins are the scale bytes' high nibbles at the block's start) */
  dminOff?: number;
  /**
   * The emitters, given the function's code: quants(wb, v) pushes the 16 quants (int8) of the vector at
   * value v of the block at local wb, scale(wb, i) the (i32) scale of run i; init() is emitted once at
   * the kernel's start.
   */
  make(c: Code): { quants(wb: number, v: number): void; scale(wb: number, i: number): void; init?(): void };
}

/** The block body of `t`; `single`: the one-token float formula (types without mins). */
function kGroupSpec(t: KGroupType, single: boolean): KernelSpec {
  const L = lazyLocals((c) => ({
    e: t.make(c), q: c.local(V128), sv: c.local(V128), w: [wide(c), wide(c)], d: c.local(F64), dmin: c.local(F64), msum: c.local(I32), mins: c.local(V128),
  }));
  return {
    typeSize: t.typeSize,
    blockSize: 256,
    init: (c) => L(c).e.init?.(),
    block(x: Ctx) {
      const { c, wb } = x;
      const { e, q, sv, w, d, dmin, msum, mins } = L(c);
      const oneToken = x.toks.length === 1;
      t.runs.forEach((run, i) => {
        e.scale(wb, i);
        c.simd(oneToken ? Simd.i32x4Splat : Simd.i16x8Splat).set(sv);
        run.forEach((v, k) => {
          e.quants(wb, v);
          c.set(q);
          widen(c, q, w[k]!, oneToken ? undefined : sv);
        });
        accumulate(x, run.map((v, k) => [w[k]!, v]), i === 0, oneToken ? sv : undefined);
      });
      sumTokens(x);
      f16AsF64(c, wb, t.dOff);
      c.set(d);
      if (t.dminOff !== undefined) {
        f16AsF64(c, wb, t.dminOff);
        c.set(dmin);
        c.get(wb).simdMem(Simd.v128Load, 0).i32(4).simd(Simd.i8x16ShrU).set(mins);
      }
      for (const tk of x.toks) {
        c.get(tk.acc);
        f32AsF64(c, tk.adb);
        if (t.dminOff !== undefined) {
          // msum = sum_g mn_g * bsum_g (|bsum| <= 16 * 128: exact in i16); acc += da * (d * isum - dmin * msum)
          c.get(mins).simd(Simd.i16x8ExtendLowI8x16U).get(tk.absb).simdMem(Simd.v128Load, 0).get(tk.absb).simdMem(Simd.v128Load, 16).simd(Simd.i16x8NarrowI32x4S).simd(Simd.i32x4DotI16x8S);
          c.get(mins).simd(Simd.i16x8ExtendHighI8x16U).get(tk.absb).simdMem(Simd.v128Load, 32).get(tk.absb).simdMem(Simd.v128Load, 48).simd(Simd.i16x8NarrowI32x4S).simd(Simd.i32x4DotI16x8S);
          c.simd(Simd.i32x4Add).sumI32x4().set(msum);
          c.get(d).get(tk.isum).op(Op.f64ConvertI32S, Op.f64Mul);
          c.get(dmin).get(msum).op(Op.f64ConvertI32S, Op.f64Mul, Op.f64Sub, Op.f64Mul);
        } else if (single) c.get(d).op(Op.f64Mul).get(tk.isum).op(Op.f64ConvertI32S, Op.f64Mul);
        else c.get(d).get(tk.isum).op(Op.f64ConvertI32S, Op.f64Mul, Op.f64Mul);
        c.op(Op.f64Add).set(tk.acc);
      }
    },
  };
}

/** The 16 vectors of a super-block, one per run (one scale per 16 values). */
const VECTORS = Array.from({ length: 16 }, (_, g) => [16 * g]);

/**
 * IQ4_XS: f16 d at 0, the 2-bit high parts of the 8 scales at 2 (u16), their 4-bit low parts at 4, the
 * nibbles of sub-block ib at 8 + 16 ib.
 */
export const IQ4_XS: KGroupType = {
  typeSize: 136,
  runs: Array.from({ length: 8 }, (_, ib) => [32 * ib, 32 * ib + 16]),
  dOff: 0,
  make(c) {
    const qs = c.local(V128), tab = c.local(V128), m15 = c.local(V128);
    return {
      init() {
        c.v128Const(KVALUES_IQ4NL).set(tab);
        splat8(c, 15);
        c.set(m15);
      },
      quants(wb, v) {
        if (v % 32 === 0) c.get(wb).simdMem(Simd.v128Load, 8 + v / 2).set(qs);
        tableQuants16(c, qs, { table: tab, mask: m15 }, v % 32 === 0);
      },
      scale(wb, ib) {
        // ((low nibble) | (high 2 bits) << 4) - 32
        c.get(wb).mem(Mem.i32Load8U, 4 + (ib >> 1));
        if (ib & 1) c.i32(4).op(Op.i32ShrU);
        c.i32(15).op(Op.i32And);
        c.get(wb).mem(Mem.i32Load16U, 2);
        if (ib > 0) c.i32(2 * ib).op(Op.i32ShrU);
        c.i32(3).op(Op.i32And).i32(4).op(Op.i32Shl, Op.i32Or).i32(32).op(Op.i32Sub);
      },
    };
  },
};

/**
 * Q2_K (`q3`: false) and Q3_K: vector g (values 16 g ..) of half h = g >> 3, shift s = (g >> 1) & 3, part
 * k = g & 1 has its 2-bit quants in bits 2s of the 16 bytes at qs + 32 h + 16 k (qs: Q2_K 16, Q3_K 32).
 * Q3_K: minus 4 where bit 4h + s of the hmask byte at 16 k + l is clear; 6-bit scales at 96 (see q3kScale
 * in ../../tensor/decode.ts), d at 108. Q2_K: scale (low nibble) and min (high) bytes at g, d at 80, dmin at 82.
 */
export function lowBit(q3: boolean): KGroupType {
  return {
    typeSize: q3 ? 110 : 84,
    runs: VECTORS,
    dOff: q3 ? 108 : 80,
    dminOff: q3 ? undefined : 82,
    make(c) {
      return {
        quants(wb, v) {
          const g = v / 16, h = g >> 3, s = (g >> 1) & 3, k = g & 1;
          c.get(wb).simdMem(Simd.v128Load, (q3 ? 32 : 16) + 32 * h + 16 * k);
          if (s > 0) c.i32(2 * s).simd(Simd.i8x16ShrU);
          splat8(c, 3);
          c.simd(Simd.v128And);
          if (q3) {
            // | (hmask bit) << 2, minus 4
            const bit = 4 * h + s;
            c.get(wb).simdMem(Simd.v128Load, 16 * k);
            splat8(c, 1 << bit);
            c.simd(Simd.v128And);
            if (bit < 2) c.i32(2 - bit).simd(Simd.i8x16Shl);
            else if (bit > 2) c.i32(bit - 2).simd(Simd.i8x16ShrU);
            c.simd(Simd.v128Or);
            splat8(c, 4);
            c.simd(Simd.i8x16Sub);
          }
        },
        scale(wb, g) {
          if (!q3) {
            c.get(wb).mem(Mem.i32Load8U, g).i32(15).op(Op.i32And);
            return;
          }
          // (low 4 bits | high 2 bits << 4) - 32
          c.get(wb).mem(Mem.i32Load8U, 96 + (g & 7));
          if (g >= 8) c.i32(4).op(Op.i32ShrU);
          c.i32(15).op(Op.i32And);
          c.get(wb).mem(Mem.i32Load8U, 96 + 8 + (g & 3));
          if (g >= 4) c.i32(2 * (g >> 2)).op(Op.i32ShrU);
          c.i32(3).op(Op.i32And).i32(4).op(Op.i32Shl, Op.i32Or).i32(32).op(Op.i32Sub);
        },
      };
    },
  };
}

const KGROUP_KERNELS: Record<string, { make: () => KernelSpec; nTok: number }> = {
  iq4_xs_single: { make: () => kGroupSpec(IQ4_XS, true), nTok: 1 },
  iq4_xs_batch: { make: () => kGroupSpec(IQ4_XS, false), nTok: TOKENS_PER_PASS },
  q3_k_single: { make: () => kGroupSpec(lowBit(true), true), nTok: 1 },
  q3_k_batch: { make: () => kGroupSpec(lowBit(true), false), nTok: TOKENS_PER_PASS },
  q2_k: { make: () => kGroupSpec(lowBit(false), false), nTok: TOKENS_PER_PASS },
};

/** The kernels of this file, and what the dispatcher needs to know about each. */
export function emitKGroupKernels(): { funcs: FuncDef[]; info: Map<string, KernelInfo> } {
  return emitRowKernels(KGROUP_KERNELS);
}
