/**
 * WASM SIMD kernels for F32, F16 and BF16 weights (x float activations), with the float operations of
 * dot-float.ts in the same order, so the results are bit-identical:
 *
 * - dotF32 (F32 weights, and the last T % 4 tokens of any float type with T >= 4): four double accumulators
 *   s0..s3 over i mod 4, the tail added to s0, result (s0 + s1) + (s2 + s3). Here: two f64x2, [s0, s1] and
 *   [s2, s3].
 * - few tokens (T < 4) of F16 / BF16 weights: two accumulators (even / odd i), tail to s0, s0 + s1: one f64x2.
 * - dotTokens (four tokens at a time when T >= 4): one sequential double sum per token. Here: two f64x2 of
 *   token pairs, over activations the caller interleaved (4 tokens x 1 value per 16 bytes).
 *
 * Every product of two float32 values is exact in double, so f64x2 lanes reproduce the scalar sums exactly.
 * F16 / BF16 rows are first converted to float32 in the row scratch (F16 with SIMD bit arithmetic; NaN
 * payloads aside, the same values as the f16 table).
 *
 * With four tokens or more, FLOAT_ROWS rows go through the groups of four tokens together.
 *
 * Parameters as in kernels.ts: (w, rb, _, r0, r1, x, xi, _, T, K, out, tmp) with x the activations (T x K
 * float32), xi the interleaved groups of four tokens, tmp room for FLOAT_ROWS float32 rows.
 */
import { Code, F64, I32, Mem, Op, Simd as S, V128, type FuncDef } from "./emitter.ts";
import { F16_TABLE_ADDR } from "./layout.ts";

const HIGH_HALF = [8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7];

const P = { w: 0, rb: 1, r0: 3, r1: 4, x: 5, xi: 6, T: 8, K: 9, out: 10, tmp: 11 } as const;
const N_PARAMS = 12;

function i32x4(c: Code, v: number): void {
  const b = new Uint8Array(new Int32Array([v, v, v, v]).buffer);
  c.v128Const(b);
}

function f32x4(c: Code, v: number): void {
  const b = new Uint8Array(new Float32Array([v, v, v, v]).buffer);
  c.v128Const(b);
}

/** The (promoted to f64x2) low pair, then the high pair, of the f32x4 in local v: pushes one of them. */
function pair(c: Code, v: number, high: boolean): void {
  c.get(v);
  if (high) c.get(v).shuffle(HIGH_HALF);
  c.simd(S.f64x2PromoteLowF32x4);
}

/**
 * Converts 4 f16 (the u32 lanes of the v128 on the stack, high halves zero) to float32 bits, leaving them on
 * the stack; h and t are v128 scratch locals.
 */
function f16x4ToF32(c: Code, h: number, t: number): void {
  c.set(h);
  // zero and subnormal numbers: mantissa * 2^-24 (exact)
  c.get(h);
  i32x4(c, 0x3ff);
  c.simd(S.v128And).simd(S.f32x4ConvertI32x4S);
  f32x4(c, 2 ** -24);
  c.simd(S.f32x4Mul);
  // other numbers: ((h & 0x7fff) << 13) + (exponent 31 ? 0x70000000 : 0x38000000)
  c.get(h);
  i32x4(c, 0x7fff);
  c.simd(S.v128And).i32(13).simd(S.i32x4Shl);
  i32x4(c, 0x70000000);
  i32x4(c, 0x38000000);
  c.get(h);
  i32x4(c, 0x7c00);
  c.simd(S.v128And).tee(t);
  i32x4(c, 0x7c00);
  c.simd(S.i32x4Eq).simd(S.v128Bitselect).simd(S.i32x4Add);
  // pick by exponent 0, then the sign
  c.get(t);
  i32x4(c, 0);
  c.simd(S.i32x4Eq).simd(S.v128Bitselect);
  c.get(h);
  i32x4(c, 0x8000);
  c.simd(S.v128And).i32(16).simd(S.i32x4Shl).simd(S.v128Or);
}

/**
 * Emits: local `res` (f64) = dot of n float32 at (local a) and (local b) with accumulators as dotF32
 * (four = true) or the two-accumulator loop (four = false).
 */
function emitDot(c: Code, a: number, b: number, n: () => void, res: number, four: boolean, L: { i: number; end: number; A: number; B: number; va: number; vb: number; s0: number }): void {
  const { i, end, A, B, va, vb, s0 } = L;
  c.f64(0).simd(S.f64x2Splat).tee(A).set(B);
  // main loop over groups of 4
  n();
  c.i32(3).op(Op.i32Sub).set(end);
  c.forLoop(i, () => c.i32(0), () => c.get(end), 4, () => {
    c.get(a).get(i).i32(2).op(Op.i32Shl, Op.i32Add).simdMem(S.v128Load).set(va);
    c.get(b).get(i).i32(2).op(Op.i32Shl, Op.i32Add).simdMem(S.v128Load).set(vb);
    c.get(A);
    pair(c, va, false);
    pair(c, vb, false);
    c.simd(S.f64x2Mul).simd(S.f64x2Add).set(A);
    c.get(four ? B : A);
    pair(c, va, true);
    pair(c, vb, true);
    c.simd(S.f64x2Mul).simd(S.f64x2Add).set(four ? B : A);
  });
  if (!four) {
    // one more pair (i, i + 1) when at least two values are left
    c.get(i).i32(1).op(Op.i32Add);
    n();
    c.op(Op.i32LtS, Op.if, 0x40);
    c.get(A);
    c.get(a).get(i).i32(2).op(Op.i32Shl, Op.i32Add).simdMem(S.load64Zero).simd(S.f64x2PromoteLowF32x4);
    c.get(b).get(i).i32(2).op(Op.i32Shl, Op.i32Add).simdMem(S.load64Zero).simd(S.f64x2PromoteLowF32x4);
    c.simd(S.f64x2Mul).simd(S.f64x2Add).set(A);
    c.inc(i, 2);
    c.op(Op.end);
  }
  // the tail goes to s0
  c.get(A).lane(S.f64x2ExtractLane, 0).set(s0);
  const cont = () => c.get(i);
  c.forLoop(i, cont, n, 1, () => {
    c.get(s0);
    c.get(a).get(i).i32(2).op(Op.i32Shl, Op.i32Add).mem(Mem.f32Load).op(Op.f64PromoteF32);
    c.get(b).get(i).i32(2).op(Op.i32Shl, Op.i32Add).mem(Mem.f32Load).op(Op.f64PromoteF32);
    c.op(Op.f64Mul, Op.f64Add).set(s0);
  });
  c.get(s0).get(A).lane(S.f64x2ExtractLane, 1).op(Op.f64Add);
  if (four) c.get(B).lane(S.f64x2ExtractLane, 0).get(B).lane(S.f64x2ExtractLane, 1).op(Op.f64Add, Op.f64Add);
  c.set(res);
}

export type FloatKind = "f32" | "f16" | "bf16";

/** Rows that go through the groups of four tokens together (each interleaved activation vector loaded once for them). */
export const FLOAT_ROWS = 4;

/** One kernel for weights of this float type, any token count. */
export function emitFloatKernel(name: string, kind: FloatKind): FuncDef {
  const c = new Code(N_PARAMS);
  const r = c.local(I32), t = c.local(I32), tEnd = c.local(I32), xt = c.local(I32), xg = c.local(I32), rEnd = c.local(I32), t1 = c.local(I32);
  const rows = Array.from({ length: FLOAT_ROWS }, () => c.local(I32));
  const res = c.local(F64);
  const L = { i: c.local(I32), end: c.local(I32), A: c.local(V128), B: c.local(V128), va: c.local(V128), vb: c.local(V128), s0: c.local(F64) };
  const acc = Array.from({ length: FLOAT_ROWS }, () => [c.local(V128), c.local(V128)] as const);
  const lo = c.local(V128), hi = c.local(V128);
  const h = c.local(V128), tv = c.local(V128);
  const K = () => c.get(P.K);
  /** out[t * nRows + r + dr - r0] address */
  const outAddr = (tok: () => void, dr = 0) => {
    tok();
    c.get(P.r1).get(P.r0).op(Op.i32Sub, Op.i32Mul).get(r).op(Op.i32Add).get(P.r0).op(Op.i32Sub);
    if (dr) c.i32(dr).op(Op.i32Add);
    c.i32(2).op(Op.i32Shl).get(P.out).op(Op.i32Add);
  };
  /** local `row` = weight row r + dr as float32: in place (F32) or converted into tmp + 4 K dr */
  const rowAsF32 = (row: number, dr: number) => {
    c.get(P.w).get(r);
    if (dr) c.i32(dr).op(Op.i32Add);
    c.get(P.rb).op(Op.i32Mul, Op.i32Add).set(row);
    if (kind === "f32") return;
    const { i, end } = L;
    const tmp = () => {
      c.get(P.tmp);
      if (dr) K().i32(4 * dr).op(Op.i32Mul, Op.i32Add);
    };
    K();
    c.i32(7).op(Op.i32Sub).set(end);
    c.forLoop(i, () => c.i32(0), () => c.get(end), 8, () => {
      for (const high of [false, true]) {
        tmp();
        c.get(i).i32(2).op(Op.i32Shl, Op.i32Add).i32(high ? 16 : 0).op(Op.i32Add);
        c.get(row).get(i).i32(1).op(Op.i32Shl, Op.i32Add).simdMem(S.v128Load).simd(high ? S.i32x4ExtendHighI16x8U : S.i32x4ExtendLowI16x8U);
        if (kind === "bf16") c.i32(16).simd(S.i32x4Shl);
        else f16x4ToF32(c, h, tv);
        c.simdMem(S.v128Store);
      }
    });
    c.forLoop(i, () => c.get(i), K, 1, () => {
      tmp();
      c.get(i).i32(2).op(Op.i32Shl, Op.i32Add);
      c.get(row).get(i).i32(1).op(Op.i32Shl, Op.i32Add).mem(Mem.i32Load16U);
      if (kind === "bf16") c.i32(16).op(Op.i32Shl).mem(Mem.i32Store);
      else c.i32(2).op(Op.i32Shl).mem(Mem.f32Load, F16_TABLE_ADDR).mem(Mem.f32Store);
    });
    tmp();
    c.set(row);
  };
  /** groups of four tokens from t, each summed sequentially, for the rows in `rs` (interleaved activations: 16 bytes per value) */
  const groups = (rs: number[]) => {
    c.get(P.T).i32(3).op(Op.i32Sub).set(tEnd);
    c.forLoop(t, () => c.get(t), () => c.get(tEnd), 4, () => {
      const { i } = L;
      rs.forEach((_, k) => c.f64(0).simd(S.f64x2Splat).tee(acc[k]![0]).set(acc[k]![1]));
      c.get(P.xi).get(t).get(P.K).op(Op.i32Mul).i32(2).op(Op.i32Shl, Op.i32Add).set(xg);
      c.forLoop(i, () => c.i32(0), K, 1, () => {
        c.get(xg).get(i).i32(4).op(Op.i32Shl, Op.i32Add).simdMem(S.v128Load).set(L.va);
        pair(c, L.va, false);
        c.set(lo);
        pair(c, L.va, true);
        c.set(hi);
        rs.forEach((row, k) => {
          c.get(row).get(i).i32(2).op(Op.i32Shl, Op.i32Add).mem(Mem.f32Load).op(Op.f64PromoteF32).simd(S.f64x2Splat).set(L.vb);
          c.get(acc[k]![0]).get(L.vb).get(lo).simd(S.f64x2Mul).simd(S.f64x2Add).set(acc[k]![0]);
          c.get(acc[k]![1]).get(L.vb).get(hi).simd(S.f64x2Mul).simd(S.f64x2Add).set(acc[k]![1]);
        });
      });
      rs.forEach((_, dr) =>
        [0, 0, 1, 1].forEach((v, k) => {
          outAddr(() => c.get(t).i32(k).op(Op.i32Add), dr);
          c.get(acc[dr]![v]!).lane(S.f64x2ExtractLane, k % 2).op(Op.f32DemoteF64).mem(Mem.f32Store);
        }),
      );
    });
  };
  /** the tokens from t one at a time, as dotF32, for the row in local `row` (row r + dr) */
  const singles = (row: number, dr: number) => {
    c.forLoop(t, () => c.get(t), () => c.get(P.T), 1, () => {
      c.get(P.x).get(t).get(P.K).op(Op.i32Mul).i32(2).op(Op.i32Shl, Op.i32Add).set(xt);
      emitDot(c, row, xt, K, res, true, L);
      outAddr(() => c.get(t), dr);
      c.get(res).op(Op.f32DemoteF64).mem(Mem.f32Store);
    });
  };
  // four tokens or more: FLOAT_ROWS rows at a time while there are as many
  c.get(P.r0).set(r);
  c.get(P.r1).i32(FLOAT_ROWS - 1).op(Op.i32Sub).set(rEnd);
  c.get(P.T).i32(4).op(Op.i32GeS).ifElse(() => {
    c.whileLoop(() => c.get(r).get(rEnd).op(Op.i32LtS), () => {
      rows.forEach((row, dr) => rowAsF32(row, dr));
      c.i32(0).set(t);
      groups(rows);
      c.get(t).set(t1);
      rows.forEach((row, dr) => {
        c.get(t1).set(t);
        singles(row, dr);
      });
      c.inc(r, FLOAT_ROWS);
    });
  });
  const row = rows[0]!;
  c.forLoop(r, () => c.get(r), () => c.get(P.r1), 1, () => {
    rowAsF32(row, 0);
    c.i32(0).set(t);
    if (kind !== "f32") {
      // fewer than 4 tokens: the two-accumulator loop
      c.get(P.T).i32(4).op(Op.i32LtS, Op.if, 0x40);
      c.forLoop(t, () => c.i32(0), () => c.get(P.T), 1, () => {
        c.get(P.x).get(t).get(P.K).op(Op.i32Mul).i32(2).op(Op.i32Shl, Op.i32Add).set(xt);
        emitDot(c, row, xt, K, res, false, L);
        outAddr(() => c.get(t));
        c.get(res).op(Op.f32DemoteF64).mem(Mem.f32Store);
      });
      c.op(Op.end);
    }
    groups([row]);
    singles(row, 0);
  });
  return { name, params: new Array(N_PARAMS).fill(I32), results: [], code: c };
}
