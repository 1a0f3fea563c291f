/**
 * The WebAssembly SIMD matmul kernels, emitted with ./emitter.ts. Each kernel computes, for weight rows
 * [r0, r1) and tokens [0, T), out[t * (r1 - r0) + r - r0] (float32) = dot(weight row r, activation row t),
 * everything addressed in the shared linear memory (see ./memory.ts).
 *
 * Numerics are those of the TypeScript kernels (dot-quant.ts, dot-fused.ts), bit for bit: the integer sum
 * of every block is computed exactly with i16x8 products (`i32x4.dot_i16x8_s` on sign-extended int8 quants),
 * and the float part is the same f64 expression, in the same order, as the TypeScript code:
 *
 * - Q8_0, Q5_0 (x Q8_0):  acc += (dw * da) * isum
 * - Q4_K (x Q8_K):        acc += da * (dw * isum - dmin * msum)
 * - Q6_K (x Q8_K):        acc += (da * dw) * isum for one token (dot-fused.ts), da * (dw * isum) for a batch
 *
 * with acc a double summed over the blocks of the row in order, rounded once to float32.
 */
import { Code, F64, I32, Mem, Op, Simd, V128, type FuncDef } from "./emitter.ts";

/** Address of the f16 -> f32 table (65536 float32 values) in linear memory. */
export const F16_TABLE_ADDR = 65536;

/** Kernel parameters (all i32; addresses are byte offsets in the shared memory). */
const P = {
  /** weight row 0 */
  w: 0,
  /** bytes per weight row */
  rb: 1,
  /** blocks per row */
  nb: 2,
  r0: 3,
  r1: 4,
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
  /** per-row scratch (Q4_K unpacked scales) */
  tmp: 11,
} as const;
const N_PARAMS = 12;

/** Locals a block body may use. */
interface Ctx {
  c: Code;
  /** current weight block */
  wb: number;
  /** current activation block (quants) */
  aqb: number;
  /** current activation block scale (float32) */
  adb: number;
  /** current activation block sums (Q8_K: 16 int32) */
  absb: number;
  /** this block's per-row scratch */
  tb: number;
  /** the f64 accumulator */
  acc: number;
  /** i32x4 integer accumulator */
  vacc: number;
}

interface KernelSpec {
  typeSize: number;
  blockSize: number;
  /** bytes of per-row scratch per block written by prepBlock */
  tmpPerBlock: number;
  /** run once per weight block of a row before its tokens: wb and tb are set */
  prepBlock?: (x: Ctx) => void;
  /** adds the block's contribution to x.acc */
  block: (x: Ctx) => void;
}

/** Pushes the f16 at address (local a) + off, converted to f64. */
function f16AsF64(c: Code, a: number, off: number): void {
  c.get(a).mem(Mem.i32Load16U, off).i32(2).op(Op.i32Shl).mem(Mem.f32Load, F16_TABLE_ADDR).op(Op.f64PromoteF32);
}

/** Pushes the f32 at address (local a) + off, converted to f64. */
function f32AsF64(c: Code, a: number, off = 0): void {
  c.get(a).mem(Mem.f32Load, off).op(Op.f64PromoteF32);
}

/** i32x4 dot of 16 int8 quants (the v128 in local q) with 16 int8 activations at (local a) + off. */
function dot16(c: Code, q: number, a: number, off: number): void {
  c.get(q).simd(Simd.i16x8ExtendLowI8x16S).get(a).simdMem(Simd.load8x8S, off).simd(Simd.i32x4DotI16x8S);
  c.get(q).simd(Simd.i16x8ExtendHighI8x16S).get(a).simdMem(Simd.load8x8S, off + 8).simd(Simd.i32x4DotI16x8S);
  c.simd(Simd.i32x4Add);
}

function splat8(c: Code, v: number): void {
  c.v128Const(new Array(16).fill(v));
}

/** acc += (dw * da) * isum, isum = the i32 on top of the stack is consumed after dw, da are pushed. */
function accQ8(x: Ctx, dw: () => void, isum: number): void {
  const { c } = x;
  c.get(x.acc);
  dw();
  f32AsF64(c, x.adb);
  c.op(Op.f64Mul).get(isum).op(Op.f64ConvertI32S).op(Op.f64Mul).op(Op.f64Add).set(x.acc);
}

const q8_0: KernelSpec = {
  typeSize: 34,
  blockSize: 32,
  tmpPerBlock: 0,
  block(x) {
    const { c } = x;
    const isum = x.c.local(I32);
    for (let k = 0; k < 4; k++) {
      c.get(x.wb).simdMem(Simd.load8x8S, 2 + 8 * k).get(x.aqb).simdMem(Simd.load8x8S, 8 * k).simd(Simd.i32x4DotI16x8S);
      if (k > 0) c.simd(Simd.i32x4Add);
    }
    c.sumI32x4().set(isum);
    accQ8(x, () => f16AsF64(c, x.wb, 0), isum);
  },
};

/** Lane i of the result takes byte `bytes[i]` of the operand: the qh byte holding quant i's high bit. */
const Q5_SPREAD_LO = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
const Q5_SPREAD_HI = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
const BIT_OF_LANE = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];

function q5_0Spec(): KernelSpec {
  let qs = -1, qh = -1, q = -1, isum = -1;
  return {
    typeSize: 22,
    blockSize: 32,
    tmpPerBlock: 0,
    block(x) {
      const { c } = x;
      if (qs < 0) {
        qs = c.local(V128);
        qh = c.local(V128);
        q = c.local(V128);
        isum = c.local(I32);
      }
      c.get(x.wb).simdMem(Simd.v128Load, 6).set(qs);
      c.get(x.wb).mem(Mem.i32Load, 2).simd(Simd.i32x4Splat).set(qh);
      const half = (lowNibbles: boolean, spread: number[], aOff: number) => {
        // nibble | (high bit << 4), minus 16
        c.get(qs);
        if (lowNibbles) {
          splat8(c, 15);
          c.simd(Simd.v128And);
        } else c.i32(4).simd(Simd.i8x16ShrU);
        c.get(qh).get(qh).shuffle(spread).v128Const(BIT_OF_LANE).simd(Simd.v128And).v128Const(BIT_OF_LANE).simd(Simd.i8x16Eq);
        splat8(c, 16);
        c.simd(Simd.v128And).simd(Simd.v128Or);
        splat8(c, 16);
        c.simd(Simd.i8x16Sub).set(q);
        dot16(c, q, x.aqb, aOff);
      };
      half(true, Q5_SPREAD_LO, 0);
      half(false, Q5_SPREAD_HI, 16);
      c.simd(Simd.i32x4Add).sumI32x4().set(isum);
      accQ8(x, () => f16AsF64(c, x.wb, 0), isum);
    },
  };
}

/**
 * Q4_K: per row, the 6-bit scales and mins of each super-block are unpacked into the row scratch (8 int32
 * scales, then 16 int32 mins: each min twice, one per group of 16, matching the 16 block sums of Q8_K).
 */
function q4KSpec(): KernelSpec {
  let q = -1, isum = -1, msum = -1, s = -1, m = -1;
  const ensure = (c: Code) => {
    if (q >= 0) return;
    q = c.local(V128);
    isum = c.local(I32);
    msum = c.local(I32);
    s = c.local(I32);
    m = c.local(I32);
  };
  return {
    typeSize: 144,
    blockSize: 256,
    tmpPerBlock: 96,
    prepBlock(x) {
      const { c, wb, tb } = x;
      ensure(c);
      const sb = (k: number) => c.get(wb).mem(Mem.i32Load8U, 4 + k);
      for (let j = 0; j < 8; j++) {
        if (j < 4) {
          sb(j).i32(63).op(Op.i32And).set(s);
          sb(j + 4).i32(63).op(Op.i32And).set(m);
        } else {
          sb(j + 4).i32(15).op(Op.i32And);
          sb(j - 4).i32(6).op(Op.i32ShrU).i32(4).op(Op.i32Shl).op(Op.i32Or).set(s);
          sb(j + 4).i32(4).op(Op.i32ShrU);
          sb(j).i32(6).op(Op.i32ShrU).i32(4).op(Op.i32Shl).op(Op.i32Or).set(m);
        }
        c.get(tb).get(s).mem(Mem.i32Store, 4 * j);
        c.get(tb).get(m).mem(Mem.i32Store, 32 + 8 * j);
        c.get(tb).get(m).mem(Mem.i32Store, 32 + 8 * j + 4);
      }
    },
    block(x) {
      const { c, wb, tb } = x;
      ensure(c);
      // isum = sum_j sc_j * (integer dot of sub-block j)
      for (let j = 0; j < 4; j++) {
        for (const high of [false, true]) {
          const sub = 2 * j + (high ? 1 : 0);
          for (let k = 0; k < 2; k++) {
            c.get(wb).simdMem(Simd.v128Load, 16 + 32 * j + 16 * k);
            if (high) c.i32(4).simd(Simd.i8x16ShrU);
            else {
              splat8(c, 15);
              c.simd(Simd.v128And);
            }
            c.set(q);
            dot16(c, q, x.aqb, 64 * j + (high ? 32 : 0) + 16 * k);
            if (k > 0) c.simd(Simd.i32x4Add);
          }
          c.get(tb).mem(Mem.i32Load, 4 * sub).simd(Simd.i32x4Splat).simd(Simd.i32x4Mul);
          if (sub > 0) c.simd(Simd.i32x4Add);
        }
      }
      c.sumI32x4().set(isum);
      // msum = sum_g mn_g * bsum_g
      for (let k = 0; k < 4; k++) {
        c.get(tb).simdMem(Simd.v128Load, 32 + 16 * k).get(x.absb).simdMem(Simd.v128Load, 16 * k).simd(Simd.i32x4Mul);
        if (k > 0) c.simd(Simd.i32x4Add);
      }
      c.sumI32x4().set(msum);
      // acc += da * (d * isum - dmin * msum)
      c.get(x.acc);
      f32AsF64(c, x.adb);
      f16AsF64(c, wb, 0);
      c.get(isum).op(Op.f64ConvertI32S, Op.f64Mul);
      f16AsF64(c, wb, 2);
      c.get(msum).op(Op.f64ConvertI32S, Op.f64Mul, Op.f64Sub, Op.f64Mul, Op.f64Add).set(x.acc);
    },
  };
}

/** Q6_K; `single`: the one-token formula of dot-fused.ts ((da * d) * isum), else dot-quant.ts's da * (d * isum). */
function q6KSpec(single: boolean): KernelSpec {
  let ql0 = -1, ql1 = -1, qh = -1, q = -1, isum = -1;
  return {
    typeSize: 210,
    blockSize: 256,
    tmpPerBlock: 0,
    block(x) {
      const { c, wb } = x;
      if (ql0 < 0) {
        ql0 = c.local(V128);
        ql1 = c.local(V128);
        qh = c.local(V128);
        q = c.local(V128);
        isum = c.local(I32);
      }
      let first = true;
      for (let h = 0; h < 2; h++) {
        for (let half = 0; half < 32; half += 16) {
          c.get(wb).simdMem(Simd.v128Load, 64 * h + half).set(ql0);
          c.get(wb).simdMem(Simd.v128Load, 64 * h + 32 + half).set(ql1);
          c.get(wb).simdMem(Simd.v128Load, 128 + 32 * h + half).set(qh);
          // four 16-quant vectors: (nibble | two high bits << 4) - 32
          for (let part = 0; part < 4; part++) {
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
            splat8(c, 32);
            c.simd(Simd.i8x16Sub).set(q);
            dot16(c, q, x.aqb, 128 * h + 32 * part + half);
            c.get(wb).mem(Mem.i32Load8S, 192 + 8 * h + (half >> 4) + 2 * part).simd(Simd.i32x4Splat).simd(Simd.i32x4Mul);
            if (!first) c.simd(Simd.i32x4Add);
            first = false;
          }
        }
      }
      c.sumI32x4().set(isum);
      c.get(x.acc);
      f32AsF64(c, x.adb);
      f16AsF64(c, wb, 208);
      if (single) c.op(Op.f64Mul).get(isum).op(Op.f64ConvertI32S, Op.f64Mul);
      else c.get(isum).op(Op.f64ConvertI32S, Op.f64Mul, Op.f64Mul);
      c.op(Op.f64Add).set(x.acc);
    },
  };
}

/** The row/token/block loops around a block body. */
function emitKernel(name: string, spec: KernelSpec): FuncDef {
  const c = new Code(N_PARAMS);
  const r = c.local(I32), t = c.local(I32), b = c.local(I32);
  const wr = c.local(I32), nRows = c.local(I32);
  const x: Ctx = { c, wb: c.local(I32), aqb: c.local(I32), adb: c.local(I32), absb: c.local(I32), tb: c.local(I32), acc: c.local(F64), vacc: c.local(V128) };
  c.get(P.r1).get(P.r0).op(Op.i32Sub).set(nRows);
  const param = (i: number) => () => c.get(i);
  c.forLoop(r, param(P.r0), param(P.r1), 1, () => {
    c.get(P.w).get(r).get(P.rb).op(Op.i32Mul, Op.i32Add).set(wr);
    if (spec.prepBlock) {
      c.get(wr).set(x.wb).get(P.tmp).set(x.tb);
      c.forLoop(b, () => c.i32(0), param(P.nb), 1, () => {
        spec.prepBlock!(x);
        c.inc(x.wb, spec.typeSize).inc(x.tb, spec.tmpPerBlock);
      });
    }
    c.forLoop(t, () => c.i32(0), param(P.T), 1, () => {
      c.f64(0).set(x.acc);
      c.get(wr).set(x.wb).get(P.tmp).set(x.tb);
      c.get(P.aq).get(t).get(P.K).op(Op.i32Mul, Op.i32Add).set(x.aqb);
      c.get(P.ad).get(t).get(P.nb).op(Op.i32Mul).i32(2).op(Op.i32Shl, Op.i32Add).set(x.adb);
      c.get(P.abs).get(t).get(P.K).op(Op.i32Mul).i32(2).op(Op.i32ShrU, Op.i32Add).set(x.absb); // K/16 int32 per token
      c.forLoop(b, () => c.i32(0), param(P.nb), 1, () => {
        spec.block(x);
        c.inc(x.wb, spec.typeSize).inc(x.aqb, spec.blockSize).inc(x.adb, 4).inc(x.absb, spec.blockSize / 4).inc(x.tb, spec.tmpPerBlock);
      });
      // out[t * nRows + r - r0] = f32(acc)
      c.get(P.out).get(t).get(nRows).op(Op.i32Mul).get(r).op(Op.i32Add).get(P.r0).op(Op.i32Sub).i32(2).op(Op.i32Shl, Op.i32Add);
      c.get(x.acc).op(Op.f32DemoteF64).mem(Mem.f32Store);
    });
  });
  return { name, params: new Array(N_PARAMS).fill(I32), results: [], code: c };
}

/** A kernel's exported name, its spec, and the per-row scratch it needs per block. */
export interface KernelInfo {
  name: string;
  typeSize: number;
  blockSize: number;
  tmpPerBlock: number;
}

const SPECS: Record<string, () => KernelSpec> = {
  q8_0: () => q8_0,
  q5_0: q5_0Spec,
  q4_k: q4KSpec,
  q6_k_single: () => q6KSpec(true),
  q6_k_batch: () => q6KSpec(false),
};
export type KernelName = keyof typeof SPECS & string;

/** Every kernel function of the module, and what the dispatcher needs to know about each. */
export function emitKernels(): { funcs: FuncDef[]; info: Map<string, KernelInfo> } {
  const funcs: FuncDef[] = [];
  const info = new Map<string, KernelInfo>();
  for (const [name, make] of Object.entries(SPECS)) {
    const spec = make();
    funcs.push(emitKernel(name, spec));
    info.set(name, { name, typeSize: spec.typeSize, blockSize: spec.blockSize, tmpPerBlock: spec.tmpPerBlock });
  }
  return { funcs, info };
}
