/**
 * WASM SIMD kernels for attention over a float32 KV cache (their own small module over the shared memory,
 * emitted with ./emitter.ts), with the float operations of the TypeScript reference in ../attention.ts in
 * the same order, so the two give the same bits:
 *
 * - attn_scores(q, k, kStride, n, dk, scale, out): for keys j < n (rows k + j * kStride bytes),
 *   out[j] = f32((l0 + l1) + (l2 + l3)) * scale, where lane l accumulates q[d] * k[d] for d = l mod 4 in
 *   float32 (f32x4), and the values past the last multiple of 4 go to lane 0. Two keys per pass.
 * - attn_mix(p, v, vStride, n, dv, out): out[d] = sum over j < n of p[j] * v[j][d], accumulated in float32
 *   in key order (f32x4 over d, four vectors per pass; the values past the last multiple of 4 one by one).
 *
 * All addresses are byte offsets in the shared memory.
 */
import { Code, encodeModule, F32, I32, Mem, Op, Simd, V128, type FuncDef } from "./emitter.ts";
import { MAX_PAGES } from "./memory.ts";
import { SideModule } from "./side-module.ts";

/** opcodes this module needs beyond the emitter's tables */
const F32_ADD = 0x92;
const F32_MUL = 0x94;
const F32X4_SPLAT = 0x13;
const F32X4_ADD = 0xe4;
const F32_STORE: readonly [number, number] = [0x38, 2];

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

function emitScores(): FuncDef {
  const P = { q: 0, k: 1, kStride: 2, n: 3, dk: 4, scale: 5, out: 6 };
  const c = new Code(7);
  const j = c.local(I32), d = c.local(I32), dk4 = c.local(I32), ka = c.local(I32), kb = c.local(I32), nPairs = c.local(I32);
  const accA = c.local(V128), accB = c.local(V128), vq = c.local(V128);
  const s0 = c.local(F32);
  c.get(P.dk).i32(-4).op(Op.i32And).set(dk4);
  c.get(P.n).i32(-2).op(Op.i32And).set(nPairs);
  const store = (key: () => void, acc: number, kp: number) => {
    c.get(P.out);
    key();
    c.i32(2).op(Op.i32Shl, Op.i32Add);
    c.get(dk4).set(d);
    finishDot(c, acc, s0, P.q, kp, d, P.dk);
    c.get(P.scale).op(F32_MUL).mem(F32_STORE);
  };
  // two keys per pass
  c.forLoop(j, () => c.i32(0), () => c.get(nPairs), 2, () => {
    c.get(P.k).get(j).get(P.kStride).op(Op.i32Mul, Op.i32Add).tee(ka).get(P.kStride).op(Op.i32Add).set(kb);
    c.v128Const(ZERO).tee(accA).set(accB);
    c.forLoop(d, () => c.i32(0), () => c.get(dk4), 4, () => {
      c.get(P.q).get(d).i32(2).op(Op.i32Shl, Op.i32Add).simdMem(Simd.v128Load).set(vq);
      c.get(accA).get(vq).get(ka).get(d).i32(2).op(Op.i32Shl, Op.i32Add).simdMem(Simd.v128Load).simd(Simd.f32x4Mul).simd(F32X4_ADD).set(accA);
      c.get(accB).get(vq).get(kb).get(d).i32(2).op(Op.i32Shl, Op.i32Add).simdMem(Simd.v128Load).simd(Simd.f32x4Mul).simd(F32X4_ADD).set(accB);
    });
    store(() => c.get(j), accA, ka);
    store(() => c.get(j).i32(1).op(Op.i32Add), accB, kb);
  });
  // the last key of an odd count
  c.get(nPairs).get(P.n).op(Op.i32LtS);
  c.ifElse(() => {
    c.get(P.k).get(nPairs).get(P.kStride).op(Op.i32Mul, Op.i32Add).set(ka);
    c.v128Const(ZERO).set(accA);
    c.forLoop(d, () => c.i32(0), () => c.get(dk4), 4, () => {
      c.get(accA);
      c.get(P.q).get(d).i32(2).op(Op.i32Shl, Op.i32Add).simdMem(Simd.v128Load);
      c.get(ka).get(d).i32(2).op(Op.i32Shl, Op.i32Add).simdMem(Simd.v128Load);
      c.simd(Simd.f32x4Mul).simd(F32X4_ADD).set(accA);
    });
    store(() => c.get(nPairs), accA, ka);
  });
  return { name: "attn_scores", params: [I32, I32, I32, I32, I32, F32, I32], results: [], code: c };
}

function emitMix(): FuncDef {
  const P = { p: 0, v: 1, vStride: 2, n: 3, dv: 4, out: 5 };
  const c = new Code(6);
  const j = c.local(I32), d = c.local(I32), dv4 = c.local(I32), dv16 = c.local(I32), vp = c.local(I32);
  const a = [c.local(V128), c.local(V128), c.local(V128), c.local(V128)];
  const vpj = c.local(V128);
  const s = c.local(F32);
  c.get(P.dv).i32(-4).op(Op.i32And).set(dv4);
  c.get(P.dv).i32(-16).op(Op.i32And).set(dv16);
  /** blocks of `width` vectors from d (local) while d < limit */
  const blocks = (width: number, limit: number) => {
    c.whileLoop(
      () => c.get(d).get(limit).op(Op.i32LtS),
      () => {
        for (let i = 0; i < width; i++) c.v128Const(ZERO).set(a[i]!);
        c.get(P.v).get(d).i32(2).op(Op.i32Shl, Op.i32Add).set(vp);
        c.forLoop(j, () => c.i32(0), () => c.get(P.n), 1, () => {
          c.get(P.p).get(j).i32(2).op(Op.i32Shl, Op.i32Add).mem(Mem.f32Load).simd(F32X4_SPLAT).set(vpj);
          for (let i = 0; i < width; i++)
            c.get(a[i]!).get(vpj).get(vp).simdMem(Simd.v128Load, 16 * i).simd(Simd.f32x4Mul).simd(F32X4_ADD).set(a[i]!);
          c.inc(vp, { local: P.vStride });
        });
        for (let i = 0; i < width; i++) c.get(P.out).get(d).i32(2).op(Op.i32Shl, Op.i32Add).get(a[i]!).simdMem(Simd.v128Store, 16 * i);
        c.inc(d, 4 * width);
      },
    );
  };
  c.i32(0).set(d);
  blocks(4, dv16);
  blocks(1, dv4);
  // the last dv % 4 values one by one
  c.whileLoop(
    () => c.get(d).get(P.dv).op(Op.i32LtS),
    () => {
      c.f64(0).op(Op.f32DemoteF64).set(s);
      c.get(P.v).get(d).i32(2).op(Op.i32Shl, Op.i32Add).set(vp);
      c.forLoop(j, () => c.i32(0), () => c.get(P.n), 1, () => {
        c.get(s);
        c.get(P.p).get(j).i32(2).op(Op.i32Shl, Op.i32Add).mem(Mem.f32Load);
        c.get(vp).mem(Mem.f32Load).op(F32_MUL, F32_ADD).set(s);
        c.inc(vp, { local: P.vStride });
      });
      c.get(P.out).get(d).i32(2).op(Op.i32Shl, Op.i32Add).get(s).mem(F32_STORE);
      c.inc(d, 1);
    },
  );
  return { name: "attn_mix", params: [I32, I32, I32, I32, I32, I32], results: [], code: c };
}

export type ScoresFn = (q: number, k: number, kStride: number, n: number, dk: number, scale: number, out: number) => void;
export type MixFn = (p: number, v: number, vStride: number, n: number, dv: number, out: number) => void;

/** The module's bytes, generated here and now. */
export function attentionModuleBytes(): Uint8Array<ArrayBuffer> {
  return encodeModule([emitScores(), emitMix()], 1, MAX_PAGES);
}

/** the module with its per-thread instance (exported for ./shared-modules.ts) */
export const attentionModule = new SideModule(attentionModuleBytes, (e) => ({ scores: e.attn_scores as ScoresFn, mix: e.attn_mix as MixFn }));

/** This thread's attention kernels over the shared memory, or undefined when WASM is off or unavailable. */
export function attentionKernels(): ReturnType<typeof attentionModule.kernels> {
  return attentionModule.kernels();
}

/** This thread's scratch bytes in the shared memory for attention (grown on demand). */
export function attentionScratch(bytes: number): number | undefined {
  return attentionModule.scratchAddr(bytes);
}
