/**
 * `exp_f64(x)`: the exponential with the bits of V8's Math.exp, for WASM kernels that replace JavaScript
 * loops calling Math.exp (softmax). V8 computes Math.exp with its port of fdlibm's __ieee754_exp
 * (v8/src/base/ieee754.cc); this is the same algorithm with the same double operations in the same order
 * (WebAssembly has no fused multiply-add, and neither does that C code as V8 builds it), so the results are
 * equal bit for bit (test/wasm-exp.test.ts checks it against Math.exp over the whole range):
 *
 *   reduce x = k ln2 + r (|r| <= 0.5 ln2; ln2 split into a high part whose product with k is exact and a low
 *   part), c = r - r^2 (P1 + r^2 (P2 + r^2 (P3 + r^2 (P4 + r^2 P5)))), exp(r) = 1 - ((r c) / (c - 2) - r),
 *   or with k != 0, y = 1 - ((lo - (r c) / (2 - c)) - hi), times 2^k built from its bits;
 *   |x| < 2^-28: 1 + x; overflow +Infinity, underflow +0, exp(1) = E exactly, NaN stays NaN.
 */
import { Code, F64, I32, Op, type FuncDef } from "./emitter.ts";

/** opcodes beyond the emitter's tables */
const O = {
  i64Const: 0x42, i64Shl: 0x86, i64ShrU: 0x88, i32WrapI64: 0xa7, i32TruncF64S: 0xaa, i64ExtendI32U: 0xad,
  i64ReinterpretF64: 0xbd, f64ReinterpretI64: 0xbf, f64Eq: 0x61, f64Lt: 0x63, f64Gt: 0x64, f64Div: 0xa3,
} as const;

const LN2_HI = 6.9314718036912381649e-1;
const LN2_LO = 1.90821492927058770002e-10;
const INV_LN2 = 1.442695040888963387;
const P = [1.66666666666666019037e-1, -2.77777777770155933842e-3, 6.61375632143793436117e-5, -1.65339022054652515390e-6, 4.13813679705723846039e-8];
const O_THRESHOLD = 7.09782712893383973096e2;
const U_THRESHOLD = -7.45133219101941108420e2;
const TWO_M1000 = 9.33263618503218878990e-302;
const TWO_1023 = 8.988465674311579539e307;

/** The function `exp_f64` (f64) -> f64. */
export function emitExp(): FuncDef {
  const c = new Code(1);
  const x = 0;
  const hx = c.local(I32), xsb = c.local(I32), k = c.local(I32), lx = c.local(I32);
  const hi = c.local(F64), lo = c.local(F64), t = c.local(F64), cc = c.local(F64), y = c.local(F64), twopk = c.local(F64);
  const ret = (push: () => void) => {
    push();
    c.op(Op.return);
  };
  /** pushes a if xsb = 0, else b */
  const bySign = (a: number, b: number) => c.f64(a).f64(b).get(xsb).op(Op.i32Eqz, Op.select);
  // high word, sign, |high word|
  c.get(x).op(O.i64ReinterpretF64).op(O.i64Const, 32).op(O.i64ShrU, O.i32WrapI64).tee(hx);
  c.i32(31).op(Op.i32ShrU).set(xsb);
  c.get(hx).i32(0x7fffffff).op(Op.i32And).set(hx);
  // |x| >= 709.78...: NaN, infinities, overflow, underflow
  c.get(hx).i32(0x40862e42).op(Op.i32GeS).ifElse(() => {
    c.get(hx).i32(0x7ff00000).op(Op.i32GeS).ifElse(() => {
      c.get(x).op(O.i64ReinterpretF64, O.i32WrapI64).set(lx);
      c.get(hx).i32(0xfffff).op(Op.i32And).get(lx).op(Op.i32Or).ifElse(() => ret(() => c.get(x).get(x).op(Op.f64Add)));
      ret(() => c.get(x).f64(0).get(xsb).op(Op.i32Eqz, Op.select));
    });
    c.get(x).f64(O_THRESHOLD).op(O.f64Gt).ifElse(() => ret(() => c.f64(Infinity)));
    c.get(x).f64(U_THRESHOLD).op(O.f64Lt).ifElse(() => ret(() => c.f64(0)));
  });
  c.i32(0).set(k);
  c.f64(0).set(hi);
  c.f64(0).set(lo);
  c.get(hx).i32(0x3fd62e42).op(Op.i32GtS).ifElse(
    () => {
      // |x| > 0.5 ln2: reduce
      c.get(hx).i32(0x3ff0a2b2).op(Op.i32LtS).ifElse(
        () => {
          c.get(x).f64(1).op(O.f64Eq).ifElse(() => ret(() => c.f64(Math.E)));
          c.get(x);
          bySign(LN2_HI, -LN2_HI);
          c.op(Op.f64Sub).set(hi);
          bySign(LN2_LO, -LN2_LO);
          c.set(lo);
          c.i32(1).get(xsb).op(Op.i32Sub).get(xsb).op(Op.i32Sub).set(k);
        },
        () => {
          c.f64(INV_LN2).get(x).op(Op.f64Mul);
          bySign(0.5, -0.5);
          c.op(Op.f64Add, O.i32TruncF64S).tee(k).op(Op.f64ConvertI32S).set(t);
          c.get(x).get(t).f64(LN2_HI).op(Op.f64Mul, Op.f64Sub).set(hi);
          c.get(t).f64(LN2_LO).op(Op.f64Mul).set(lo);
        },
      );
      c.get(hi).get(lo).op(Op.f64Sub).set(x);
    },
    () => {
      // |x| < 2^-28: 1 + x
      c.get(hx).i32(0x3e300000).op(Op.i32LtS).ifElse(() => ret(() => c.f64(1).get(x).op(Op.f64Add)));
    },
  );
  c.get(x).get(x).op(Op.f64Mul).set(t);
  // 2^k (2^(k + 1000) below k = -1021) from its high word
  c.i32(0x3ff00000).get(k).get(k).i32(1000).op(Op.i32Add).get(k).i32(-1021).op(Op.i32GeS, Op.select).i32(20).op(Op.i32Shl, Op.i32Add);
  c.op(O.i64ExtendI32U).op(O.i64Const, 32).op(O.i64Shl, O.f64ReinterpretI64).set(twopk);
  // c = x - t (P1 + t (P2 + t (P3 + t (P4 + t P5))))
  c.get(x).get(t);
  c.f64(P[0]!).get(t).f64(P[1]!).get(t).f64(P[2]!).get(t).f64(P[3]!).get(t).f64(P[4]!);
  c.op(Op.f64Mul, Op.f64Add, Op.f64Mul, Op.f64Add, Op.f64Mul, Op.f64Add, Op.f64Mul, Op.f64Add, Op.f64Mul, Op.f64Sub).set(cc);
  c.get(k).op(Op.i32Eqz).ifElse(() => ret(() => c.f64(1).get(x).get(cc).op(Op.f64Mul).get(cc).f64(2).op(Op.f64Sub, O.f64Div).get(x).op(Op.f64Sub, Op.f64Sub)));
  // y = 1 - ((lo - (x c) / (2 - c)) - hi)
  c.f64(1).get(lo).get(x).get(cc).op(Op.f64Mul).f64(2).get(cc).op(Op.f64Sub, O.f64Div, Op.f64Sub).get(hi).op(Op.f64Sub, Op.f64Sub).set(y);
  c.get(k).i32(-1021).op(Op.i32GeS).ifElse(() => {
    c.get(k).i32(1024).op(Op.i32Eq).ifElse(() => ret(() => c.get(y).f64(2).op(Op.f64Mul).f64(TWO_1023).op(Op.f64Mul)));
    ret(() => c.get(y).get(twopk).op(Op.f64Mul));
  });
  c.get(y).get(twopk).op(Op.f64Mul).f64(TWO_M1000).op(Op.f64Mul);
  return { name: "exp_f64", params: [F64], results: [F64], code: c };
}
