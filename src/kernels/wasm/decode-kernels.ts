/**
 * Single-token (decode) WebAssembly SIMD kernels for Q4_K, Q5_K and Q6_K weights, emitted with
 * ./emitter.ts. One token is dotted with every weight row, so the weight unpacking is paid per row and
 * the activations are shared by all rows: the runtime stages them once per product (see
 * `stageDecodeActivations`) as int16, each group of 16 values reordered to its 8 even-indexed values
 * then its 8 odd-indexed ones. That order matches weights read as i16x8 lanes: the low byte of every lane
 * is an even value, the high byte an odd one, so a 16-byte load splits into even and odd vectors with
 * 16-bit masks and shifts (cheap on every SIMD unit, unlike 8-bit shifts and sign extensions).
 *
 * Integer part, exact: quants (unsigned: Q4_K 0..15, Q5_K 0..31, Q6_K 0..63 before its -32) times
 * activations (-128..127) in i16 (`i16x8.mul`), at most two or four products summed per lane (|sum| <=
 * 32256), then `i32x4.dot_i16x8_s` with the splatted 6-bit / int8 sub-block scale. Q6_K's -32 is applied
 * once per block as -32 * sum_g scale_g * bsum_g (bsum_g: the activation sum of group g of 16), which is
 * the same integer. Float part, the expressions of dot-fused.ts in its order:
 *
 * - Q4_K, Q5_K: acc += da * (d * isum - dmin * msum)
 * - Q6_K:       acc += (da * d) * isum
 *
 * acc a double summed over the blocks of the row in order, rounded once to float32.
 *
 * Speed: a block's body is unrolled, cut into steps of 16 or 32 values each ending with a store of the
 * integer accumulator (`addScaled`): V8 issues all the loads of a straight-line block first, which keeps
 * every loaded vector live and spills; loads are not moved above a store. The i16x8 masks are loaded from
 * memory once per call (V8 rebuilds a literal constant at every use). Measured with bench/wasm-kernels.ts.
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
  /** DECODE_SCRATCH bytes of scratch: a block's scales as int16 at 0, the accumulator's store at 32, the i16x8 constants from 64 */
  tmp: 9,
} as const;
const N_PARAMS = 10;

/** Bytes of kernel scratch (param tmp) a decode kernel needs. */
export const DECODE_SCRATCH = 128;

/** Locals of the row/block loops a block body uses. */
interface Ctx {
  c: Code;
  /** weight block */
  wb: number;
  /** staged activations of the block */
  ab: number;
  /** the block's activation scale (address) */
  dp: number;
  /** the block's staged activation sums (address) */
  bp: number;
  /** the f64 accumulator of the row */
  acc: number;
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

/** Byte offset in the kernel scratch (param tmp) of the i16x8 constants, 16 bytes each. */
const CONSTANTS_AT = 64;

/**
 * A v128 local set to an i16x8 constant, once, before the row loop. Stored to the scratch memory and
 * loaded back: V8 would rematerialize a literal constant at every use inside the loops (three
 * instructions), a loaded value stays in a register.
 */
function constant16(c: Code, v: number, init: (() => void)[]): number {
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

/**
 * Pushes even * act[off .. off + 7] + odd * act[off + 8 .. off + 15] (i16x8; the activations at address
 * (local a) + 2 off): `even` and `odd` push the quants of the 8 even and the 8 odd values as i16x8.
 */
function mulPairs(c: Code, a: number, off: number, even: () => void, odd: () => void): void {
  even();
  c.get(a).simdMem(Simd.v128Load, 2 * off).simd(Simd.i16x8Mul);
  odd();
  c.get(a).simdMem(Simd.v128Load, 2 * off + 16).simd(Simd.i16x8Mul);
  c.simd(Simd.i16x8Add);
}

/** mulPairs of the i16x8 lanes on the stack, each holding two byte quants (even value low, odd high); v: a scratch local. */
function mulBytePairs(c: Code, a: number, off: number, v: number, m00ff: number): void {
  c.set(v);
  mulPairs(c, a, off, () => c.get(v).get(m00ff).simd(Simd.v128And), () => c.get(v).i32(8).simd(Simd.i16x8ShrU));
}

/**
 * vacc += dot(i16x8 on the stack, the i16 at address (local s) + off splatted). vacc is also stored at
 * tmp + 32, a store the loads that follow are ordered after: V8 would otherwise issue the loads of a whole
 * loop body first and keep every loaded vector live (spilling them).
 */
function addScaled(c: Code, s: number, off: number, vacc: number): void {
  c.get(s).simdMem(Simd.load16Splat, off).simd(Simd.i32x4DotI16x8S).get(vacc).simd(Simd.i32x4Add).set(vacc);
  c.get(P.tmp).get(vacc).simdMem(Simd.v128Store, 32);
}

/**
 * Q4_K and Q5_K (`five`: the fifth bit of every quant from the 32 qh bytes at 16, quants at 48). For
 * j = 0..3: the 32 quant bytes of sub-blocks 2j (low nibbles) and 2j + 1 (high nibbles).
 */
function q4KDecode(five: boolean): (init: (() => void)[], c: Code) => DecodeSpec {
  return (init, c) => {
    const [m00ff, m0f0f, m1010] = five ? [0x00ff, 0x0f0f, 0x1010].map((v) => constant16(c, v, init)) : [-1, -1, -1];
    const m000f = five ? -1 : constant16(c, 0x000f, init);
    const sm = c.local(V128), vacc = c.local(V128), msum = c.local(V128), xs = [c.local(V128), c.local(V128)], v = c.local(V128), qh = [c.local(V128), c.local(V128)];
    const a = c.local(I32), b = c.local(I32), cw = c.local(I32);
    const qsOff = five ? 48 : 16;
    /**
     * Pushes the products for the nibbles (`high`) of local xs[k], with their fifth bits: bit `bit` of
     * qh[k]'s bytes (Q5_K), times the activations at (local ab) + 2 off.
     */
    const quantProducts = (high: boolean, k: number, bit: number, ab: number, off: number) => {
      const x = xs[k]!;
      if (!five) {
        // Q4_K: even values' nibbles straight from the 16-bit lanes
        if (high) mulPairs(c, ab, off, () => c.get(x).i32(4).simd(Simd.i16x8ShrU).get(m000f).simd(Simd.v128And), () => c.get(x).i32(12).simd(Simd.i16x8ShrU));
        else mulPairs(c, ab, off, () => c.get(x).get(m000f).simd(Simd.v128And), () => c.get(x).i32(8).simd(Simd.i16x8ShrU).get(m000f).simd(Simd.v128And));
        return;
      }
      c.get(x);
      if (high) c.i32(4).simd(Simd.i16x8ShrU);
      c.get(m0f0f).simd(Simd.v128And);
      c.get(qh[k]!);
      if (bit < 4) c.i32(4 - bit).simd(Simd.i16x8Shl);
      else if (bit > 4) c.i32(bit - 4).simd(Simd.i16x8ShrU);
      c.get(m1010).simd(Simd.v128And).simd(Simd.v128Or);
      mulBytePairs(c, ab, off, v, m00ff);
    };
    /**
     * Adds sub-blocks 2j (low nibbles: values 64j + 16k + 0..15, k = 0, 1) and 2j + 1 (high nibbles:
     * values 64j + 32 + 16k ..) to vacc: quant bytes at wb + qsOff + 32j.
     */
    const subBlocks = (wb: number, ab: number, j: number) => {
      for (let k = 0; k < 2; k++) c.get(wb).simdMem(Simd.v128Load, qsOff + 32 * j + 16 * k).set(xs[k]!);
      for (const high of [false, true]) {
        for (let k = 0; k < 2; k++) {
          quantProducts(high, k, 2 * j + (high ? 1 : 0), ab, 64 * j + (high ? 32 : 0) + 16 * k);
          if (k === 1) c.simd(Simd.i16x8Add);
        }
        addScaled(c, P.tmp, 4 * j + (high ? 2 : 0), vacc);
      }
    };
    return {
      typeSize: five ? 176 : 144,
      bsBytes: 16,
      block({ wb, ab, dp, bp, acc }) {
        kScalesMins(c, wb, { a, b, cw }, sm);
        // the 8 scales as int16 in tmp; msum lanes: mins times the activation sums of their sub-blocks
        c.get(P.tmp).get(sm).simd(Simd.i16x8ExtendLowI8x16U).simdMem(Simd.v128Store, 0);
        c.get(sm).simd(Simd.i16x8ExtendHighI8x16U).get(bp).simdMem(Simd.v128Load, 0).simd(Simd.i32x4DotI16x8S).set(msum);
        if (five) for (let k = 0; k < 2; k++) c.get(wb).simdMem(Simd.v128Load, 16 + 16 * k).set(qh[k]!);
        c.v128Const(new Array(16).fill(0)).set(vacc);
        for (let j = 0; j < 4; j++) subBlocks(wb, ab, j);
        // isum = sum of vacc's lanes, msum = sum of msum's lanes: one reduction for both
        c.get(vacc).get(msum).shuffle(i32Lanes([0, 4, 1, 5])).get(vacc).get(msum).shuffle(i32Lanes([2, 6, 3, 7])).simd(Simd.i32x4Add).tee(v);
        c.get(v).get(v).shuffle(i32Lanes([2, 3, 0, 1])).simd(Simd.i32x4Add).set(v);
        // acc += da * (d * isum - dmin * msum)
        c.get(acc);
        f32AsF64(c, dp);
        f16AsF64(c, wb, 0);
        c.get(v).lane(Simd.i32x4ExtractLane, 0).op(Op.f64ConvertI32S, Op.f64Mul);
        f16AsF64(c, wb, 2);
        c.get(v).lane(Simd.i32x4ExtractLane, 1).op(Op.f64ConvertI32S, Op.f64Mul, Op.f64Sub, Op.f64Mul, Op.f64Add).set(acc);
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
 * and qh + 32 h + 16 x make the quants of values 128 h + 32 p + 16 x + 0..15, p = 0..3, whose scale is
 * scales[8 h + 2 p + x].
 */
function q6KDecode(init: (() => void)[], c: Code): DecodeSpec {
  const m00ff = constant16(c, 0x00ff, init), m0f0f = constant16(c, 0x0f0f, init), m3030 = constant16(c, 0x3030, init);
  const vacc = c.local(V128), l0 = c.local(V128), l1 = c.local(V128), qh = c.local(V128), v = c.local(V128), sc = c.local(V128);
  return {
    typeSize: 210,
    bsBytes: 32,
    block({ wb, ab, dp, bp, acc }) {
      // scales as int16 in tmp; vacc starts at -32 * sum_g scale_g * bsum_g
      c.get(wb).simdMem(Simd.v128Load, Q6K_SCALES).set(sc);
      c.get(P.tmp).get(sc).simd(Simd.i16x8ExtendLowI8x16S).simdMem(Simd.v128Store, 0);
      c.get(P.tmp).get(sc).simd(Simd.i16x8ExtendHighI8x16S).simdMem(Simd.v128Store, 16);
      c.v128Const(new Array(16).fill(0));
      c.get(P.tmp).simdMem(Simd.v128Load, 0).get(bp).simdMem(Simd.v128Load, 0).simd(Simd.i32x4DotI16x8S);
      c.get(P.tmp).simdMem(Simd.v128Load, 16).get(bp).simdMem(Simd.v128Load, 16).simd(Simd.i32x4DotI16x8S);
      c.simd(Simd.i32x4Add).i32(5).simd(Simd.i32x4Shl).simd(Simd.i32x4Sub).set(vacc);
      for (let k = 0; k < 4; k++) {
        const h = k >> 1, x = k & 1;
        c.get(wb).simdMem(Simd.v128Load, 64 * h + 16 * x).set(l0);
        c.get(wb).simdMem(Simd.v128Load, 64 * h + 32 + 16 * x).set(l1);
        c.get(wb).simdMem(Simd.v128Load, Q6K_QH + 16 * k).set(qh);
        for (let p = 0; p < 4; p++) {
          // (nibble | two high bits << 4), unsigned 0..63
          c.get(p % 2 === 0 ? l0 : l1);
          if (p >= 2) c.i32(4).simd(Simd.i16x8ShrU);
          c.get(m0f0f).simd(Simd.v128And);
          c.get(qh);
          const shift = 4 - 2 * p;
          if (shift > 0) c.i32(shift).simd(Simd.i16x8Shl);
          else if (shift < 0) c.i32(-shift).simd(Simd.i16x8ShrU);
          c.get(m3030).simd(Simd.v128And).simd(Simd.v128Or);
          mulBytePairs(c, ab, 128 * h + 32 * p + 16 * x, v, m00ff);
          addScaled(c, P.tmp, 2 * (8 * h + 2 * p + x), vacc);
        }
      }
      // acc += (da * d) * isum
      c.get(acc);
      f32AsF64(c, dp);
      f16AsF64(c, wb, Q6K_D);
      c.op(Op.f64Mul).get(vacc).sumI32x4().op(Op.f64ConvertI32S, Op.f64Mul, Op.f64Add).set(acc);
    },
  };
}

/** The row and block loops around a block body. */
function emitDecodeKernel(name: string, make: (init: (() => void)[], c: Code) => DecodeSpec): { def: FuncDef; spec: DecodeSpec } {
  const c = new Code(N_PARAMS);
  const r = c.local(I32), blk = c.local(I32);
  const x: Ctx = { c, wb: c.local(I32), ab: c.local(I32), dp: c.local(I32), bp: c.local(I32), acc: c.local(F64) };
  const init: (() => void)[] = [];
  const spec = make(init, c);
  for (const f of init) f();
  c.forLoop(r, () => c.get(P.r0), () => c.get(P.r1), 1, () => {
    c.get(P.w).get(r).get(P.rb).op(Op.i32Mul, Op.i32Add).set(x.wb);
    c.get(P.act).set(x.ab).get(P.ad).set(x.dp).get(P.bs).set(x.bp);
    c.f64(0).set(x.acc);
    c.forLoop(blk, () => c.i32(0), () => c.get(P.nb), 1, () => {
      spec.block(x);
      c.inc(x.wb, spec.typeSize).inc(x.ab, 512).inc(x.dp, 4).inc(x.bp, spec.bsBytes);
    });
    c.get(P.out).get(r).get(P.r0).op(Op.i32Sub).i32(2).op(Op.i32Shl, Op.i32Add).get(x.acc).op(Op.f32DemoteF64).mem(Mem.f32Store);
  });
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
 * Stages one token's Q8_K activations for the decode kernels: quants as int16, each group of 16 reordered
 * to evens then odds; scales as they are; sums of the quants per sumsPer values as int16 (|sum| <= 4096).
 */
export function stageDecodeActivations(qs: Int8Array, d: Float32Array, bsums: Int32Array, K: number, sumsPer: 16 | 32, quants: Int16Array, scales: Float32Array, sums: Int16Array): void {
  for (let g = 0; g < K; g += 16) {
    for (let i = 0; i < 8; i++) {
      quants[g + i] = qs[g + 2 * i]!;
      quants[g + 8 + i] = qs[g + 2 * i + 1]!;
    }
  }
  scales.set(d.subarray(0, K / 256));
  const n = K / sumsPer;
  const per = sumsPer / 16;
  for (let i = 0; i < n; i++) sums[i] = per === 1 ? bsums[i]! : bsums[2 * i]! + bsums[2 * i + 1]!;
}
