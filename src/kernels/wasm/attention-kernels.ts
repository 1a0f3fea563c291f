/**
 * WASM SIMD kernels for attention over a float32 KV cache (their own small module over the shared memory,
 * emitted with ./emitter.ts), with the float operations of the TypeScript reference in ../attention.ts in
 * the same order, so the two give the same bits:
 *
 * - attn_scores_M (M queries at once): for keys j < n (rows k + j * kStride bytes), score[j] =
 *   f32((l0 + l1) + (l2 + l3)) * scale, where lane l accumulates q[d] * k[d] for d = l mod 4 in float32
 *   (f32x4), and the values past the last multiple of 4 go to lane 0. Two keys per pass.
 * - attn_mix_M: out[d] = sum over j < n of p[j] * v[j][d], accumulated in float32 in key order (f32x4 over
 *   d; the values past the last multiple of 4 one by one), from zero or from out's values (a sum over
 *   the keys cut in two parts gives the bits of one pass).
 * Taking the M queries of a grouped-query KV head, or of consecutive tokens, together loads each key and
 * value vector once for all M; each query's result does not depend on M.
 *
 * All addresses are byte offsets in the shared memory.
 */
import { Code, encodeModule, F32, F64, I32, Mem, Op, Simd, V128, type FuncDef } from "./emitter.ts";
import { emitExp } from "./exp.ts";
import { MAX_PAGES } from "./memory.ts";
import { SideModule } from "./side-module.ts";

/** opcodes this module needs beyond the emitter's tables */
const F32_ADD = 0x92;
const F32_MUL = 0x94;
const F32X4_SPLAT = 0x13;
const F32X4_ADD = 0xe4;
const F32_STORE: readonly [number, number] = [0x38, 2];
const F32_GT = 0x5e;
const F64_DIV = 0xa3;

const ZERO = new Uint8Array(16);

/** Pushes q.k for one key as f32 (acc is the key's f32x4 accumulator local, s0 a scalar f32 local). */
function finishDot(c: Code, acc: number, s0: number, q: number, kp: number, d: number, dk: number): void {
  c.get(acc).lane(Simd.f32x4ExtractLane, 0).set(s0);
  c.forLoop(d, () => c.get(d), () => c.get(dk), 1, () => {
    c.get(s0);
    c.get(q).get(d).i32(2).op(Op.i32Shl, Op.i32Add).mem(Mem.f32Load);
    c.get(kp).get(d).i32(2).op(Op.i32Shl, Op.i32Add).mem(Mem.f32Load);
    c.op(F32_MUL, F32_ADD).set(s0);
  });
  c.get(s0).get(acc).lane(Simd.f32x4ExtractLane, 1).op(F32_ADD);
  c.get(acc).lane(Simd.f32x4ExtractLane, 2).get(acc).lane(Simd.f32x4ExtractLane, 3).op(F32_ADD);
  c.op(F32_ADD);
}

/**
 * `attn_scores_<M>(q, qStride, k, kStride, n, dk, scale, out, outStride)`: the scores of M queries (query i
 * at q + i qStride) against keys j < n, query i's at out + i outStride + 4 j. Keys go two at a time, each
 * key vector loaded once for the M queries.
 */
function emitScores(M: number): FuncDef {
  const P = { q: 0, qStride: 1, k: 2, kStride: 3, n: 4, dk: 5, scale: 6, out: 7, outStride: 8 };
  const c = new Code(9);
  const j = c.local(I32), d = c.local(I32), dk16 = c.local(I32), ka = c.local(I32), kb = c.local(I32), nPairs = c.local(I32), o = c.local(I32);
  const qs = Array.from({ length: M }, () => c.local(I32));
  const acc = Array.from({ length: M }, () => [c.local(V128), c.local(V128)] as const);
  const kva = c.local(V128), kvb = c.local(V128), vq = c.local(V128);
  const s0 = c.local(F32);
  // bytes of the values up to the last multiple of 4
  c.get(P.dk).i32(-4).op(Op.i32And).i32(2).op(Op.i32Shl).set(dk16);
  c.get(P.n).i32(-2).op(Op.i32And).set(nPairs);
  qs.forEach((qi, i) => {
    c.get(P.q);
    if (i > 0) c.get(P.qStride).i32(i).op(Op.i32Mul, Op.i32Add);
    c.set(qi);
  });
  /** query i's score of key `key` (at kp, lane sums in accL) to out + i outStride + 4 key */
  const store = (key: () => void, i: number, accL: number, kp: number) => {
    c.get(P.out);
    if (i > 0) c.get(P.outStride).i32(i).op(Op.i32Mul, Op.i32Add);
    key();
    c.i32(2).op(Op.i32Shl, Op.i32Add);
    c.get(dk16).i32(2).op(Op.i32ShrU).set(d);
    finishDot(c, accL, s0, qs[i]!, kp, d, P.dk);
    c.get(P.scale).op(F32_MUL).mem(F32_STORE);
  };
  /** key `key` at ka (and key + 1 at kb when `two`) for every query: lane sums over the first dk16 bytes, then the scores */
  const keys = (two: boolean, key: () => void) => {
    for (const a of acc) {
      c.v128Const(ZERO).set(a[0]);
      if (two) c.v128Const(ZERO).set(a[1]);
    }
    c.forLoop(o, () => c.i32(0), () => c.get(dk16), 16, () => {
      c.get(ka).get(o).op(Op.i32Add).simdMem(Simd.v128Load).set(kva);
      if (two) c.get(kb).get(o).op(Op.i32Add).simdMem(Simd.v128Load).set(kvb);
      qs.forEach((qi, i) => {
        c.get(qi).get(o).op(Op.i32Add).simdMem(Simd.v128Load).set(vq);
        c.get(acc[i]![0]).get(vq).get(kva).simd(Simd.f32x4Mul).simd(F32X4_ADD).set(acc[i]![0]);
        if (two) c.get(acc[i]![1]).get(vq).get(kvb).simd(Simd.f32x4Mul).simd(F32X4_ADD).set(acc[i]![1]);
      });
    });
    acc.forEach((a, i) => {
      store(key, i, a[0], ka);
      if (two) store(() => c.get(j).i32(1).op(Op.i32Add), i, a[1], kb);
    });
  };
  c.forLoop(j, () => c.i32(0), () => c.get(nPairs), 2, () => {
    c.get(P.k).get(j).get(P.kStride).op(Op.i32Mul, Op.i32Add).tee(ka).get(P.kStride).op(Op.i32Add).set(kb);
    keys(true, () => c.get(j));
  });
  // the last key of an odd count
  c.get(nPairs).get(P.n).op(Op.i32LtS);
  c.ifElse(() => {
    c.get(P.k).get(nPairs).get(P.kStride).op(Op.i32Mul, Op.i32Add).set(ka);
    keys(false, () => c.get(nPairs));
  });
  return { name: `attn_scores_${M}`, params: [I32, I32, I32, I32, I32, I32, F32, I32, I32], results: [], code: c };
}

/**
 * `attn_mix_<M>(p, pStride, v, vStride, n, dv, out, outStride, init)`: for M queries, out_i[d] = (init ?
 * out_i[d] : 0) + sum over j < n of p_i[j] * v[j][d] in key order (p_i at p + i pStride, out_i at out + i
 * outStride): W vectors of d per pass (one where fewer are left, then the last dv % 4 values one by one),
 * each value vector loaded once for the M queries.
 */
function emitMix(M: number): FuncDef {
  const P = { p: 0, pStride: 1, v: 2, vStride: 3, n: 4, dv: 5, out: 6, outStride: 7, init: 8 };
  const W = M <= 2 ? 4 : 2;
  const c = new Code(9);
  const j = c.local(I32), d = c.local(I32), dv4 = c.local(I32), dvW = c.local(I32), vp = c.local(I32);
  const ps = Array.from({ length: M }, () => c.local(I32));
  const os = Array.from({ length: M }, () => c.local(I32));
  const a = Array.from({ length: M }, () => Array.from({ length: W }, () => c.local(V128)));
  const vv = Array.from({ length: W }, () => c.local(V128));
  const pj = c.local(V128);
  const s = c.local(F32);
  c.get(P.dv).i32(-4).op(Op.i32And).set(dv4);
  c.get(P.dv).i32(-4 * W).op(Op.i32And).set(dvW);
  for (let i = 0; i < M; i++) {
    for (const [arr, base, stride] of [[ps, P.p, P.pStride], [os, P.out, P.outStride]] as const) {
      c.get(base);
      if (i > 0) c.get(stride).i32(i).op(Op.i32Mul, Op.i32Add);
      c.set(arr[i]!);
    }
  }
  /** passes of `width` vectors from d (local) while d < limit */
  const blocks = (width: number, limit: number) => {
    c.whileLoop(
      () => c.get(d).get(limit).op(Op.i32LtS),
      () => {
        for (let i = 0; i < M; i++)
          for (let w = 0; w < width; w++) {
            c.get(P.init).ifElse(() => c.get(os[i]!).get(d).i32(2).op(Op.i32Shl, Op.i32Add).simdMem(Simd.v128Load, 16 * w), () => c.v128Const(ZERO), V128);
            c.set(a[i]![w]!);
          }
        c.get(P.v).get(d).i32(2).op(Op.i32Shl, Op.i32Add).set(vp);
        c.forLoop(j, () => c.i32(0), () => c.get(P.n).i32(2).op(Op.i32Shl), 4, () => {
          for (let w = 0; w < width; w++) c.get(vp).simdMem(Simd.v128Load, 16 * w).set(vv[w]!);
          for (let i = 0; i < M; i++) {
            c.get(ps[i]!).get(j).op(Op.i32Add).mem(Mem.f32Load).simd(F32X4_SPLAT).set(pj);
            for (let w = 0; w < width; w++) c.get(a[i]![w]!).get(pj).get(vv[w]!).simd(Simd.f32x4Mul).simd(F32X4_ADD).set(a[i]![w]!);
          }
          c.inc(vp, { local: P.vStride });
        });
        for (let i = 0; i < M; i++)
          for (let w = 0; w < width; w++) c.get(os[i]!).get(d).i32(2).op(Op.i32Shl, Op.i32Add).get(a[i]![w]!).simdMem(Simd.v128Store, 16 * w);
        c.inc(d, 4 * width);
      },
    );
  };
  c.i32(0).set(d);
  blocks(W, dvW);
  blocks(1, dv4);
  // the last dv % 4 values one by one, query by query
  c.whileLoop(
    () => c.get(d).get(P.dv).op(Op.i32LtS),
    () => {
      for (let i = 0; i < M; i++) {
        c.get(P.init).ifElse(() => c.get(os[i]!).get(d).i32(2).op(Op.i32Shl, Op.i32Add).mem(Mem.f32Load), () => c.f64(0).op(Op.f32DemoteF64), F32);
        c.set(s);
        c.get(P.v).get(d).i32(2).op(Op.i32Shl, Op.i32Add).set(vp);
        c.forLoop(j, () => c.i32(0), () => c.get(P.n).i32(2).op(Op.i32Shl), 4, () => {
          c.get(s);
          c.get(ps[i]!).get(j).op(Op.i32Add).mem(Mem.f32Load);
          c.get(vp).mem(Mem.f32Load).op(F32_MUL, F32_ADD).set(s);
          c.inc(vp, { local: P.vStride });
        });
        c.get(os[i]!).get(d).i32(2).op(Op.i32Shl, Op.i32Add).get(s).mem(F32_STORE);
      }
      c.inc(d, 1);
    },
  );
  return { name: `attn_mix_${M}`, params: new Array(9).fill(I32), results: [], code: c };
}

/**
 * `attn_softmax(p, n, hasSink, sink)`: the softmax of the n float32 at p in place, as softmaxInPlace
 * (../softmax.ts) computes it, bit for bit: float32 maximum (with the sink logit when hasSink), float32
 * exps of the double differences (exp_f64, the bits of Math.exp), their double sum (plus the sink's exp),
 * times the float32 inverse.
 */
function emitSoftmax(): FuncDef {
  const P = { p: 0, n: 1, hasSink: 2, sink: 3 };
  const c = new Code(4);
  const i = c.local(I32), end = c.local(I32), e = c.local(F32), max = c.local(F32), inv = c.local(F32);
  const sum = c.local(F64);
  const at = () => c.get(P.p).get(i).op(Op.i32Add);
  /** f32(exp_f64(f64(value on the stack) - f64(max))) */
  const expMinusMax = () => c.op(Op.f64PromoteF32).get(max).op(Op.f64PromoteF32, Op.f64Sub).call("exp_f64").op(Op.f32DemoteF64);
  c.get(P.n).i32(2).op(Op.i32Shl).set(end);
  c.f64(-Infinity).op(Op.f32DemoteF64).set(max);
  c.forLoop(i, () => c.i32(0), () => c.get(end), 4, () => {
    at();
    c.mem(Mem.f32Load).tee(e).get(max).op(F32_GT).ifElse(() => c.get(e).set(max));
  });
  c.get(P.hasSink).get(P.sink).get(max).op(F32_GT, Op.i32And).ifElse(() => c.get(P.sink).set(max));
  c.f64(0).set(sum);
  c.forLoop(i, () => c.i32(0), () => c.get(end), 4, () => {
    at();
    at();
    c.mem(Mem.f32Load);
    expMinusMax();
    c.tee(e).mem(F32_STORE);
    c.get(sum).get(e).op(Op.f64PromoteF32, Op.f64Add).set(sum);
  });
  c.get(P.hasSink).ifElse(() => {
    c.get(sum).get(P.sink);
    expMinusMax();
    c.op(Op.f64PromoteF32, Op.f64Add).set(sum);
  });
  c.f64(1).get(sum).op(F64_DIV, Op.f32DemoteF64).set(inv);
  // times inv: four at a time, then one by one
  c.get(P.n).i32(-4).op(Op.i32And).i32(2).op(Op.i32Shl).set(end);
  c.forLoop(i, () => c.i32(0), () => c.get(end), 16, () => {
    at();
    at();
    c.simdMem(Simd.v128Load).get(inv).simd(F32X4_SPLAT).simd(Simd.f32x4Mul).simdMem(Simd.v128Store);
  });
  c.forLoop(i, () => c.get(i), () => c.get(P.n).i32(2).op(Op.i32Shl), 4, () => {
    at();
    at();
    c.mem(Mem.f32Load).get(inv).op(F32_MUL).mem(F32_STORE);
  });
  return { name: "attn_softmax", params: [I32, I32, I32, F32], results: [], code: c };
}

/** Queries the kernels take at once: attn_scores_M and attn_mix_M exist for M = 1 .. MAX_QUERIES. */
export const MAX_QUERIES = 4;
const QUERY_COUNTS = Array.from({ length: MAX_QUERIES }, (_, i) => i + 1);

export type ScoresFn = (q: number, qStride: number, k: number, kStride: number, n: number, dk: number, scale: number, out: number, outStride: number) => void;
export type SoftmaxFn = (p: number, n: number, hasSink: number, sink: number) => void;
export type MixFn = (p: number, pStride: number, v: number, vStride: number, n: number, dv: number, out: number, outStride: number, init: number) => void;

/** The module's bytes, generated here and now. */
export function attentionModuleBytes(): Uint8Array<ArrayBuffer> {
  return encodeModule([...QUERY_COUNTS.map(emitScores), ...QUERY_COUNTS.map(emitMix), emitSoftmax(), emitExp()], 1, MAX_PAGES);
}

/** the module with its per-thread instance (exported for ./shared-modules.ts) */
export const attentionModule = new SideModule(attentionModuleBytes, (e) => ({
  scores: QUERY_COUNTS.map((m) => e[`attn_scores_${m}`] as ScoresFn),
  mix: QUERY_COUNTS.map((m) => e[`attn_mix_${m}`] as MixFn),
  softmax: e.attn_softmax as SoftmaxFn,
}));

/** This thread's attention kernels over the shared memory, or undefined when WASM is off or unavailable. */
export function attentionKernels(): ReturnType<typeof attentionModule.kernels> {
  return attentionModule.kernels();
}

/** This thread's scratch bytes in the shared memory for attention (grown on demand). */
export function attentionScratch(bytes: number): number | undefined {
  return attentionModule.scratchAddr(bytes);
}
