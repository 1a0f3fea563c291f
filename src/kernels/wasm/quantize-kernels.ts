/**
 * WASM SIMD activation quantizers (their own small module over the shared memory, emitted with
 * ./emitter.ts) giving the same bytes and floats as the TypeScript references in
 * ../../tensor/quantize-act.ts (same float32 operations, round-half-even via f32x4.nearest):
 *
 * - q8_0(x, nBlocks, qs, d): blocks of 32 floats; amax = max |x| (NaN ignored, as `a > amax` does),
 *   d[b] = f32(amax / 127) rounded to the nearest f16 value, id = 127 / amax, or 0 when that is not finite
 *   (amax = 0, or so small that 127 / amax overflows: the reference then stores 0 for every value),
 *   q = saturate(nearest(x * id)). Four blocks per pass share one f32x4 of maxima, scales and multipliers;
 *   the last nBlocks % 4 blocks go one by one.
 * - q8_k(x, nBlocks, qs, d, bsums): blocks of 256; all zeros when amax = 0; else max = the first value with
 *   |x| = amax, iscale = -127 / max, q = saturate(nearest(iscale * x)) with -inf (and NaN) giving 0 as an
 *   Int8Array store of the reference does, d[b] = 1 / iscale, bsums = int32 sums of q per 16 values.
 *
 * All addresses are byte offsets in the shared memory. `quantizeQ8Wasm` / `quantizeQ8KWasm` copy a
 * caller's arrays through this thread's scratch area (views kept from call to call), or read and write
 * them in place when they live in the WASM memory.
 */
import { Code, encodeModule, F32, I32, Mem, Op, Simd, V128, type FuncDef } from "./emitter.ts";
import { isWasmBuffer, MAX_PAGES } from "./memory.ts";
import { SideModule } from "./side-module.ts";

const ZERO = new Uint8Array(16);
const SWAP_HALVES = [8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7];
const SWAP_PAIRS = [4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11];

/** pushes the f32 constant v */
function f32c(c: Code, v: number): Code {
  return c.f64(v).op(Op.f32DemoteF64);
}

/**
 * acc = pmax(acc, |x[at + 16 i]|) for i < n: pmax keeps acc when the value is NaN, so NaN is ignored
 * (a chain through acc measured faster than a tree here).
 */
function maxAbs(c: Code, acc: number, at: number, n: number, offset = 0): void {
  for (let i = 0; i < n; i++) c.get(acc).get(at).simdMem(Simd.v128Load, offset + 16 * i).simd(Simd.f32x4Abs).simd(Simd.f32x4Pmax).set(acc);
}

/** the largest lane of the NaN-free f32x4 local v, as f32 */
function hmax(c: Code, v: number): void {
  c.get(v).get(v).get(v).shuffle(SWAP_HALVES).simd(Simd.f32x4Max).set(v);
  c.get(v).get(v).get(v).shuffle(SWAP_PAIRS).simd(Simd.f32x4Max).lane(Simd.f32x4ExtractLane, 0);
}

/**
 * Pushes the i8x16 quants of the 16 floats at x + off: saturate(nearest(x * scale)); with `negInf`
 * (a local holding splat(-inf)) lanes whose rounded product is -inf or NaN become 0.
 */
function quant16(c: Code, x: number, off: number, scale: number, p: number, negInf?: number): void {
  for (let i = 0; i < 4; i++) {
    c.get(x).simdMem(Simd.v128Load, off + 16 * i).get(scale).simd(Simd.f32x4Mul).simd(Simd.f32x4Nearest);
    if (negInf === undefined) c.simd(Simd.i32x4TruncSatF32x4S);
    else c.tee(p).simd(Simd.i32x4TruncSatF32x4S).get(p).get(negInf).simd(Simd.f32x4Gt).simd(Simd.v128And);
    if (i % 2 === 1) c.simd(Simd.i16x8NarrowI32x4S);
  }
  c.simd(Simd.i8x16NarrowI16x8S);
}

/**
 * Pushes the f32 local v (>= 0, not NaN) rounded to the nearest f16 value (ties to even, as f32ToF16Bits):
 * below 2^-14 (f16 subnormals) (v + 0.5) - 0.5 rounds to a multiple of 2^-24; above, the f32 bits are
 * rounded to 10 mantissa bits, and results of 2^16 or more (past the largest f16) become infinity.
 */
function roundF16(c: Code, v: number, bitsTmp: number, r: number): void {
  c.get(v);
  f32c(c, 0.5).op(Op.f32Add);
  f32c(c, 0.5).op(Op.f32Sub);
  c.get(v).op(Op.i32ReinterpretF32).tee(bitsTmp).i32(0xfff).op(Op.i32Add);
  c.get(bitsTmp).i32(13).op(Op.i32ShrU).i32(1).op(Op.i32And, Op.i32Add);
  c.i32(~0x1fff).op(Op.i32And, Op.f32ReinterpretI32).tee(r);
  f32c(c, Infinity).get(r);
  f32c(c, 65536).op(Op.f32Lt, Op.select);
  c.get(v);
  f32c(c, 2 ** -14).op(Op.f32Lt, Op.select);
}

/** v128 bytes of four f32 (or, with `int`, i32) lanes equal to v */
function splat4(v: number, int = false): Uint8Array {
  return new Uint8Array((int ? new Int32Array([v, v, v, v]) : new Float32Array([v, v, v, v])).buffer);
}

/** byte lanes picking f32 lanes `lanes` of the two shuffle operands (0..3 the first, 4..7 the second) */
function pick(lanes: number[]): number[] {
  return lanes.flatMap((l) => [4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3]);
}

/** roundF16 on the four lanes of the f32x4 local v (>= 0, not NaN); leaves the f32x4 */
function roundF16x4(c: Code, v: number, t: number): void {
  c.v128Const(splat4(Infinity));
  c.get(v).v128Const(splat4(0xfff, true)).simd(Simd.i32x4Add);
  c.get(v).i32(13).simd(Simd.i32x4ShrU).v128Const(splat4(1, true)).simd(Simd.v128And).simd(Simd.i32x4Add);
  c.v128Const(splat4(~0x1fff, true)).simd(Simd.v128And).tee(t);
  c.get(t).v128Const(splat4(65536)).simd(Simd.f32x4Ge).simd(Simd.v128Bitselect).set(t);
  c.get(v).v128Const(splat4(0.5)).simd(Simd.f32x4Add).v128Const(splat4(0.5)).simd(Simd.f32x4Sub);
  c.get(t);
  c.get(v).v128Const(splat4(2 ** -14)).simd(Simd.f32x4Lt).simd(Simd.v128Bitselect);
}

function emitQ8_0(): FuncDef {
  const P = { x: 0, nBlocks: 1, qs: 2, d: 3 };
  const c = new Code(4);
  const b = c.local(I32), bitsTmp = c.local(I32), nb4 = c.local(I32);
  const acc = c.local(V128), vid = c.local(V128), p = c.local(V128);
  const a4 = [c.local(V128), c.local(V128), c.local(V128), c.local(V128)];
  const u = c.local(V128), t = c.local(V128), id4 = c.local(V128);
  const amax = c.local(F32), id = c.local(F32), dd = c.local(F32), r = c.local(F32);
  /** the 32 quants of the block at x + 128 i with multiplier vector vid, stored at qs + 32 i */
  const quantBlock = (i: number) => {
    c.get(P.qs);
    quant16(c, P.x, 128 * i, vid, p);
    c.simdMem(Simd.v128Store, 32 * i);
    c.get(P.qs);
    quant16(c, P.x, 128 * i + 64, vid, p);
    c.simdMem(Simd.v128Store, 32 * i + 16);
  };
  // four blocks per pass: their four maxima, scales and multipliers in one f32x4 each
  c.get(P.nBlocks).i32(-4).op(Op.i32And).set(nb4);
  c.forLoop(b, () => c.i32(0), () => c.get(nb4), 4, () => {
    for (let i = 0; i < 4; i++) {
      c.v128Const(ZERO).set(a4[i]!);
      maxAbs(c, a4[i]!, P.x, 8, 128 * i);
    }
    c.get(a4[0]!).get(a4[1]!).shuffle(pick([0, 1, 4, 5])).get(a4[0]!).get(a4[1]!).shuffle(pick([2, 3, 6, 7])).simd(Simd.f32x4Max).set(t);
    c.get(a4[2]!).get(a4[3]!).shuffle(pick([0, 1, 4, 5])).get(a4[2]!).get(a4[3]!).shuffle(pick([2, 3, 6, 7])).simd(Simd.f32x4Max).set(u);
    c.get(t).get(u).shuffle(pick([0, 2, 4, 6])).get(t).get(u).shuffle(pick([1, 3, 5, 7])).simd(Simd.f32x4Max).set(u);
    c.get(u).v128Const(splat4(127)).simd(Simd.f32x4Div).set(acc);
    c.get(P.d);
    roundF16x4(c, acc, t);
    c.simdMem(Simd.v128Store);
    c.v128Const(splat4(127)).get(u).simd(Simd.f32x4Div).tee(id4);
    c.get(id4).v128Const(splat4(Infinity)).simd(Simd.f32x4Lt).simd(Simd.v128And).set(id4);
    for (let i = 0; i < 4; i++) {
      c.get(id4).get(id4).shuffle(pick([i, i, i, i])).set(vid);
      quantBlock(i);
    }
    c.inc(P.x, 512).inc(P.qs, 128).inc(P.d, 16);
  });
  // the last nBlocks % 4 blocks one by one
  c.forLoop(b, () => c.get(nb4), () => c.get(P.nBlocks), 1, () => {
    c.v128Const(ZERO).set(acc);
    maxAbs(c, acc, P.x, 8);
    hmax(c, acc);
    c.set(amax);
    c.get(amax);
    f32c(c, 127).op(Op.f32Div).set(dd);
    c.get(P.d);
    roundF16(c, dd, bitsTmp, r);
    c.mem(Mem.f32Store);
    f32c(c, 127).get(amax).op(Op.f32Div).tee(id);
    f32c(c, 0).get(id);
    f32c(c, Infinity).op(Op.f32Lt, Op.select).simd(Simd.f32x4Splat).set(vid);
    quantBlock(0);
    c.inc(P.x, 128).inc(P.qs, 32).inc(P.d, 4);
  });
  return { name: "q8_0", params: [I32, I32, I32, I32], results: [], code: c };
}

function emitQ8K(): FuncDef {
  const P = { x: 0, nBlocks: 1, qs: 2, d: 3, bsums: 4 };
  const c = new Code(5);
  const b = c.local(I32), j = c.local(I32), g = c.local(I32), m = c.local(I32);
  const acc = c.local(V128), acc2 = c.local(V128), va = c.local(V128), vs = c.local(V128), p = c.local(V128), negInf = c.local(V128), q = c.local(V128);
  const amax = c.local(F32), iscale = c.local(F32);
  f32c(c, -Infinity).simd(Simd.f32x4Splat).set(negInf);
  /** pushes the i32 bitmask of lanes of the vector at x + j with |v| = amax */
  const matches = () => c.get(P.x).get(j).op(Op.i32Add).simdMem(Simd.v128Load).simd(Simd.f32x4Abs).get(va).simd(Simd.f32x4Eq).simd(Simd.i32x4Bitmask);
  c.forLoop(b, () => c.i32(0), () => c.get(P.nBlocks), 1, () => {
    c.v128Const(ZERO).tee(acc).set(acc2);
    c.forLoop(j, () => c.i32(0), () => c.i32(1024), 128, () => {
      c.get(P.x).get(j).op(Op.i32Add).set(m);
      maxAbs(c, acc, m, 4);
      c.get(m).i32(64).op(Op.i32Add).set(m);
      maxAbs(c, acc2, m, 4);
    });
    c.get(acc).get(acc2).simd(Simd.f32x4Max).set(acc);
    hmax(c, acc);
    c.tee(amax);
    f32c(c, 0).op(Op.f32Eq);
    c.ifElse(
      () => {
        for (let i = 0; i < 16; i++) c.get(P.qs).v128Const(ZERO).simdMem(Simd.v128Store, 16 * i);
        for (let i = 0; i < 4; i++) c.get(P.bsums).v128Const(ZERO).simdMem(Simd.v128Store, 16 * i);
        c.get(P.d);
        f32c(c, 0).mem(Mem.f32Store);
      },
      () => {
        // the first value of largest magnitude: max = x[j/4 + ctz(mask)]
        c.get(amax).simd(Simd.f32x4Splat).set(va);
        c.i32(0).set(j);
        c.whileLoop(() => matches().op(Op.i32Eqz), () => c.inc(j, 16));
        f32c(c, -127);
        c.get(P.x).get(j).op(Op.i32Add);
        matches().op(Op.i32Ctz).i32(2).op(Op.i32Shl, Op.i32Add).mem(Mem.f32Load);
        c.op(Op.f32Div).tee(iscale).simd(Simd.f32x4Splat).set(vs);
        c.forLoop(g, () => c.i32(0), () => c.i32(16), 1, () => {
          c.get(P.x).get(g).i32(6).op(Op.i32Shl, Op.i32Add).set(m);
          c.get(P.qs).get(g).i32(4).op(Op.i32Shl, Op.i32Add);
          quant16(c, m, 0, vs, p, negInf);
          c.tee(q).simdMem(Simd.v128Store);
          c.get(P.bsums).get(g).i32(2).op(Op.i32Shl, Op.i32Add);
          c.get(q).simd(Simd.i16x8ExtaddPairwiseI8x16S).simd(Simd.i32x4ExtaddPairwiseI16x8S).sumI32x4();
          c.mem(Mem.i32Store);
        });
        c.get(P.d);
        f32c(c, 1).get(iscale).op(Op.f32Div).mem(Mem.f32Store);
      },
    );
    c.inc(P.x, 1024).inc(P.qs, 256).inc(P.d, 4).inc(P.bsums, 64);
  });
  return { name: "q8_k", params: [I32, I32, I32, I32, I32], results: [], code: c };
}

type Q8Fn = (x: number, nBlocks: number, qs: number, d: number) => void;
type Q8KFn = (x: number, nBlocks: number, qs: number, d: number, bsums: number) => void;

/** The module's bytes, generated here and now. */
export function quantizeModuleBytes(): Uint8Array<ArrayBuffer> {
  return encodeModule([emitQ8_0(), emitQ8K()], 1, MAX_PAGES);
}

/** the module with its per-thread instance (exported for ./shared-modules.ts) */
export const quantizeModule = new SideModule(quantizeModuleBytes, (e) => ({ q8_0: e.q8_0 as Q8Fn, q8_k: e.q8_k as Q8KFn }));

/** This thread's quantize kernels over the shared memory, or undefined when WASM is off or unavailable. */
export function quantizeKernels(): ReturnType<typeof quantizeModule.kernels> {
  return quantizeModule.kernels();
}

let runs = 0;
/** How many times this thread ran a quantize kernel (tests check that the WASM path is taken). */
export function quantizeWasmRuns(): number {
  return runs;
}

/** This thread's scratch bytes in the shared memory (grown on demand). */
function quantizeScratch(bytes: number): number | undefined {
  return quantizeModule.scratchAddr(bytes);
}

/** This thread's staging area for n values in the scratch memory: views of the kernels' inputs and outputs. */
interface Staging {
  buffer: ArrayBufferLike;
  n: number;
  base: number;
  x: Float32Array;
  qs: Int8Array;
  d: Float32Array;
  bsums: Int32Array;
}
let staging: Staging | undefined;

/** Staging for n values (a multiple of 256 for Q8_K, 32 otherwise): x (4n bytes), qs (n), d (n / 8), bsums (n / 4). */
function stage(k: NonNullable<ReturnType<typeof quantizeKernels>>, n: number): Staging | undefined {
  const base = quantizeScratch(6 * n + n / 8);
  if (base === undefined) return undefined;
  const buf = k.memory.buffer;
  if (staging && staging.buffer === buf && staging.n === n && staging.base === base) return staging;
  const qs = base + 4 * n, d = qs + n, bsums = d + n / 8;
  staging = {
    buffer: buf,
    n,
    base,
    x: new Float32Array(buf, base, n),
    qs: new Int8Array(buf, qs, n),
    d: new Float32Array(buf, d, n / 32),
    bsums: new Int32Array(buf, bsums, n / 16),
  };
  return staging;
}

/** The WASM address of x[xo..xo+n): x itself when it lives in the memory, else its copy in the staging area. */
function inputAddr(st: Staging, x: Float32Array, xo: number, n: number): number {
  if (isWasmBuffer(x.buffer)) return x.byteOffset + 4 * xo;
  st.x.set(n === x.length && xo === 0 ? x : x.subarray(xo, xo + n));
  return st.x.byteOffset;
}

/** Where the kernel writes an output: straight into out[o..] when it lives in the memory, else the staging view. */
function outputAddr(out: Int8Array | Float32Array | Int32Array, o: number, staged: ArrayBufferView): number {
  return isWasmBuffer(out.buffer) ? out.byteOffset + o * out.BYTES_PER_ELEMENT : staged.byteOffset;
}

/** Copies the staged output into out[o..] unless the kernel wrote there directly. */
function copyOut<V extends Int8Array | Float32Array | Int32Array>(out: V, o: number, staged: V, len: number, addr: number): void {
  if (addr === staged.byteOffset) out.set(len === staged.length ? staged : (staged.subarray(0, len) as V), o);
}

/** Values per kernel call at most (a multiple of 256), so the scratch area stays small (about 400 KB). */
const CHUNK = 65536;

/**
 * Q8_0 with the WASM kernel (same results as quantizeQ8Blocks without s): n values (a multiple of 32) of
 * x from xo into qs[qo..), d[bo..). Returns false when the kernels are unavailable (the caller then runs
 * the TypeScript quantizer).
 */
export function quantizeQ8Wasm(x: Float32Array, xo: number, n: number, qs: Int8Array, qo: number, d: Float32Array, bo: number): boolean {
  const k = quantizeKernels();
  if (!k) return false;
  for (let o = 0; o < n; o += CHUNK) {
    const m = Math.min(CHUNK, n - o);
    const st = stage(k, m);
    if (!st) return false;
    const aq = outputAddr(qs, qo + o, st.qs), ad = outputAddr(d, bo + o / 32, st.d);
    runs++;
    k.q8_0(inputAddr(st, x, xo + o, m), m / 32, aq, ad);
    copyOut(qs, qo + o, st.qs, m, aq);
    copyOut(d, bo + o / 32, st.d, m / 32, ad);
  }
  return true;
}

/**
 * Q8_K with the WASM kernel (same results as quantizeQ8KBlocks): n values (a multiple of 256) of x from xo
 * into qs[qo..), d[bo..), bsums[bo * 16..). Returns false when the kernels are unavailable (the caller then
 * runs the TypeScript quantizer).
 */
export function quantizeQ8KWasm(x: Float32Array, xo: number, n: number, qs: Int8Array, qo: number, d: Float32Array, bo: number, bsums: Int32Array): boolean {
  const k = quantizeKernels();
  if (!k) return false;
  for (let o = 0; o < n; o += CHUNK) {
    const m = Math.min(CHUNK, n - o);
    const st = stage(k, m);
    if (!st) return false;
    const b = bo + o / 256;
    const aq = outputAddr(qs, qo + o, st.qs), ad = outputAddr(d, b, st.d), ab = outputAddr(bsums, b * 16, st.bsums);
    runs++;
    k.q8_k(inputAddr(st, x, xo + o, m), m / 256, aq, ad, ab);
    copyOut(qs, qo + o, st.qs, m, aq);
    copyOut(d, b, st.d, m / 256, ad);
    copyOut(bsums, b * 16, st.bsums, m / 16, ab);
  }
  return true;
}
