/**
 * The WebAssembly SIMD kernels for batches of tokens (prompt processing), emitted with ./emitter.ts.
 *
 * A batch kernel unpacks TILE_ROWS weight rows at a time into a tile in the thread's scratch memory
 * (./tile-types.ts) and runs every staged group of tokens (./tile-stage.ts) over the tile, so unpacking
 * costs little per token. A register block of R rows x g tokens goes through the blocks of the rows:
 * - Q4_K, Q5_K, Q6_K (`emitDotK`): one i32x4 accumulator per (row, token) gathers the `i32x4.dot_i16x8_s`
 *   products of the block; at its end the accumulators of a row are reduced into one i32x4 whose lane t
 *   is token t's integer sum;
 * - with relaxed SIMD (./relaxed.ts; `emitDotKRelaxed`, layouts in ./relaxed-tile-types.ts), Q4_K, Q5_K,
 *   Q6_K keep their quants unsigned int8 in the tile: `i16x8.relaxed_dot_i8x16_i7x16_s` multiplies 16 of
 *   them by 16 activations at once, the scale is applied per group to the int16 pair sums;
 * - Q8_0, Q4_0, Q5_0 (`emitDotQ8`): tokens in lanes: a weight value pair is splatted and dotted with the
 *   pair's values of 4 tokens, so lane t of an accumulator is token t's sum with no reduction (a block of
 *   32 values is too short to pay for one).
 * The float part is then computed two tokens at a time in f64x2 lanes.
 *
 * The integer sums run in loops of one step of 8 values (Q8_0: 2 steps of 2) per iteration: V8's TurboFan
 * schedules a basic block's loads ahead of its arithmetic, so an unrolled block would keep all its loaded
 * vectors live at once and spill them.
 *
 * Numerics are those of the TypeScript batch kernels (dot-quant.ts), bit for bit: integer sums are exact
 * (in any order), and each f64x2 lane computes the same f64 expression in the same order as the scalar code:
 * - Q8_0, Q4_0, Q5_0: acc += (dw * da) * isum
 * - Q4_K, Q5_K:       acc += da * (d * isum - dmin * msum)
 * - Q6_K:             acc += da * (d * isum)
 * summed over the blocks of the row in order from acc = 0, rounded once to float32. A row's results do not
 * depend on which rows or tokens it is computed with.
 */
import { Code, I32, Mem, Op, Simd, V128, type FuncDef } from "./emitter.ts";
import { TILE_TYPES, type TileType } from "./tile-types.ts";
import { RELAXED_TILE_TYPES } from "./relaxed-tile-types.ts";
import { UNPACK_HI32, UNPACK_HI64, UNPACK_LO32, UNPACK_LO64, emitStaging, groupTokens, i32Lanes, stagedBlock } from "./tile-stage.ts";

export { stagedBytes } from "./tile-stage.ts";

/** Rows unpacked into a tile together (and computed together); a range's last odd row goes alone. */
export const TILE_ROWS = 2;

/** The relaxed-SIMD variant of batch kernel `name` (./relaxed.ts): its name in the module. */
export const relaxedTileName = (name: string): string => `${name}_r`;

/** Bytes of the tile for rows of nb blocks (kernel `name`, or its relaxed-SIMD variant). */
export function tileBytes(name: string, nb: number): number {
  const tt = TILE_TYPES[name] ?? RELAXED_TILE_TYPES[name.replace(/_r$/, "")]!;
  return TILE_ROWS * nb * tt.slot;
}

const SWAP64 = i32Lanes([2, 3, 0, 1]);
const SWAP32 = i32Lanes([1, 0, 3, 2]);
const ZERO16 = new Array(16).fill(0);

/**
 * Pushes an i32x4 whose lane t (t < vs.length <= 4) is the sum of the 4 lanes of local vs[t] (other lanes:
 * unspecified). Integer sums: exact in any order.
 */
function reduceLanes(c: Code, vs: number[], tmp: [number, number]): void {
  const [p, q] = tmp;
  const pairSum = (x: number, y?: number) => {
    // [x0 + x2, y0 + y2, x1 + x3, y1 + y3]
    const getY = () => (y === undefined ? c.v128Const(ZERO16) : c.get(y));
    c.get(x);
    getY();
    c.shuffle(UNPACK_LO32).get(x);
    getY();
    c.shuffle(UNPACK_HI32).simd(Simd.i32x4Add);
  };
  if (vs.length === 1) {
    c.get(vs[0]!).get(vs[0]!).get(vs[0]!).shuffle(SWAP64).simd(Simd.i32x4Add).tee(p).get(p).get(p).shuffle(SWAP32).simd(Simd.i32x4Add);
  } else if (vs.length === 2) {
    pairSum(vs[0]!, vs[1]!);
    c.tee(p).get(p).get(p).shuffle(SWAP64).simd(Simd.i32x4Add);
  } else {
    pairSum(vs[0]!, vs[1]!);
    c.set(p);
    pairSum(vs[2]!, vs[3]);
    c.set(q);
    c.get(p).get(q).shuffle(UNPACK_LO64).get(p).get(q).shuffle(UNPACK_HI64).simd(Simd.i32x4Add);
  }
}

/** Pushes lanes 2p, 2p + 1 of the i32x4 in local v as f64x2. */
function lanePairAsF64(c: Code, v: number, p: number): void {
  if (p === 1) c.get(v).get(v).shuffle(SWAP64);
  else c.get(v);
  c.simd(Simd.f64x2ConvertLowI32x4S);
}

/** Dot-function parameters */
const D = { tile: 0, act: 1, nb: 2, out: 3, outStride: 4 } as const;

/** A dot function under construction: its code, loop locals and the float accumulators (f64x2, 2 tokens each). */
interface DotFn {
  c: Code;
  /** the block counter, weight and activation pointers of the integer loop, its counter */
  b: number;
  wp: number;
  ap: number;
  k: number;
  facc: number[][];
}

function dotFn(R: number, g: number): DotFn {
  const c = new Code(5);
  const f = { c, b: c.local(I32), wp: c.local(I32), ap: c.local(I32), k: c.local(I32), facc: [] as number[][] };
  f.facc = Array.from({ length: R }, () => Array.from({ length: (g + 1) >> 1 }, () => c.local(V128)));
  for (const row of f.facc) for (const v of row) c.v128Const(ZERO16).set(v);
  return f;
}

/**
 * The loop over the blocks: `block` emits a block's work (D.tile and D.act at the block), then both
 * advance; finally out[t * outStride + 4 r] (bytes) = f32(result of row r, token t) for t < g.
 */
function blockLoop(f: DotFn, tileStride: number, actStride: number, g: number, block: () => void): void {
  const { c } = f;
  c.forLoop(f.b, () => c.i32(0), () => c.get(D.nb), 1, () => {
    block();
    c.inc(D.tile, tileStride).inc(D.act, actStride);
  });
  f.facc.forEach((row, r) => {
    for (let t = 0; t < g; t++) {
      c.get(D.out);
      if (t > 0) c.get(D.outStride).i32(t).op(Op.i32Mul, Op.i32Add);
      c.get(row[t >> 1]!).lane(Simd.f64x2ExtractLane, t & 1).op(Op.f32DemoteF64).mem(Mem.f32Store, 4 * r);
    }
  });
}

/**
 * The integer loop of a block: `steps` times `step(first)` from wp = D.tile, ap = D.act, advancing them by
 * wStep, aStep per step; the first step (which sets the accumulators rather than adding to them) comes
 * before the loop.
 */
function integerLoop(f: DotFn, steps: number, unroll: number, wStep: number, aStep: number, step: (u: number, first: boolean) => void): void {
  const { c } = f;
  const body = (first: boolean) => {
    for (let u = 0; u < unroll; u++) step(u, first && u === 0);
    c.inc(f.wp, wStep * unroll).inc(f.ap, aStep * unroll);
  };
  c.get(D.tile).set(f.wp).get(D.act).set(f.ap);
  body(true);
  c.forLoop(f.k, () => c.i32(unroll), () => c.i32(steps), unroll, () => body(false));
}

/** acc (= if first, else +=) dot(w, a) */
function dotAcc(c: Code, acc: number, w: number, a: number, first: boolean): void {
  if (!first) c.get(acc);
  c.get(w).get(a).simd(Simd.i32x4DotI16x8S);
  if (!first) c.simd(Simd.i32x4Add);
  c.set(acc);
}

/**
 * The parts of a K-quant dot function around its integer loop: `acc[r][t]`, one i32x4 accumulator per
 * (row, token) that the loop fills; `finish()`, after the loop: reduces them, subtracts the offset sums
 * (relaxed Q6_K) and computes the mins' sums (Q4_K, Q5_K), then the float part, row by row:
 * acc += da * (d * isum [- dmin * msum]), each scale loaded once.
 */
function kDotParts(f: DotFn, tt: TileType, R: number, g: number): { acc: number[][]; finish: () => void } {
  const { c } = f;
  const acc = Array.from({ length: R }, () => Array.from({ length: g }, () => c.local(V128)));
  const nQuads = Math.ceil(g / 4);
  /** sums[r][i]: lane j = integer sum of row r, token 4 i + j; msums: the same for the min (offset) sums */
  const sums = Array.from({ length: R }, () => Array.from({ length: nQuads }, () => c.local(V128)));
  const msums = Array.from({ length: nQuads }, () => c.local(V128));
  const tmp: [number, number] = [c.local(V128), c.local(V128)];
  const d = c.local(V128), dmin = c.local(V128), mins = [c.local(V128), c.local(V128)];
  const { bsOff, daOff } = stagedBlock(256, g);
  const reduceAll = (vs: number[], quads: number[]) => quads.forEach((q, i) => {
    reduceLanes(c, vs.slice(4 * i, 4 * i + 4), tmp);
    c.set(q);
  });
  /** msums = for each token, the dot of the 16 int16 at slot offset `off` of row r with its 16 block sums (in row 0's accumulators, reduced already) */
  const minSums = (r: number, off: number) => {
    mins.forEach((m, h) => c.get(D.tile).simdMem(Simd.v128Load, r * tt.slot + off + 16 * h).set(m));
    for (let t = 0; t < g; t++) {
      mins.forEach((m, h) => c.get(m).get(D.act).simdMem(Simd.v128Load, bsOff + 32 * t + 16 * h).simd(Simd.i32x4DotI16x8S));
      c.simd(Simd.i32x4Add).set(acc[0]![t]!);
    }
    reduceAll(acc[0]!, msums);
  };
  const finish = () => {
    for (let r = 0; r < R; r++) reduceAll(acc[r]!, sums[r]!);
    for (let r = 0; r < R; r++) {
      const offsetOff = tt.relaxed?.offsetOff;
      if (offsetOff !== undefined) {
        minSums(r, offsetOff);
        sums[r]!.forEach((s, q) => c.get(s).get(msums[q]!).simd(Simd.i32x4Sub).set(s));
      }
      if (tt.mins) minSums(r, tt.mins.off);
      c.get(D.tile).simdMem(Simd.load64Splat, r * tt.slot + tt.dOff).set(d);
      if (tt.mins) c.get(D.tile).simdMem(Simd.load64Splat, r * tt.slot + tt.mins.dminOff).set(dmin);
      f.facc[r]!.forEach((fa, p) => {
        c.get(fa);
        c.get(D.act).simdMem(Simd.v128Load, daOff + 16 * p);
        c.get(d);
        lanePairAsF64(c, sums[r]![p >> 1]!, p & 1);
        c.simd(Simd.f64x2Mul);
        if (tt.mins) {
          c.get(dmin);
          lanePairAsF64(c, msums[p >> 1]!, p & 1);
          c.simd(Simd.f64x2Mul).simd(Simd.f64x2Sub);
        }
        c.simd(Simd.f64x2Mul).simd(Simd.f64x2Add).set(fa);
      });
    }
  };
  return { acc, finish };
}

/** `<name>_dot_<R>x<g>` for Q4_K, Q5_K, Q6_K: rows 0..R-1 of the tile times the staged group of g tokens. */
function emitDotK(name: string, tt: TileType, R: number, g: number): FuncDef {
  const f = dotFn(R, g);
  const { c } = f;
  const { acc, finish } = kDotParts(f, tt, R, g);
  const w = Array.from({ length: R }, () => c.local(V128));
  const a = c.local(V128);
  blockLoop(f, R * tt.slot, stagedBlock(256, g).stride, g, () => {
    integerLoop(f, 32, 1, 16, 8, (u, first) => {
      w.forEach((wr, r) => c.get(f.wp).simdMem(Simd.v128Load, r * tt.slot + 16 * u).set(wr));
      for (let t = 0; t < g; t++) {
        c.get(f.ap).simdMem(Simd.load8x8S, 256 * t + 8 * u).set(a);
        for (let r = 0; r < R; r++) dotAcc(c, acc[r]![t]!, w[r]!, a, first);
      }
    });
    finish();
  });
  return { name: `${name}_dot_${R}x${g}`, params: new Array(5).fill(I32), results: [], code: c };
}

/**
 * `<name>_dot_<R>x<g>` for the relaxed-SIMD layouts (./relaxed-tile-types.ts), activations staged by
 * `stage_r`: per 32 values, `i16x8.relaxed_dot_i8x16_i7x16_s`(activations, unsigned quants) of each of
 * the two vectors, their sum (int16 lanes of 4 products, at most 4 * 63 * 128 < 32768 in magnitude: no
 * overflow, so exact), and `i32x4.dot_i16x8_s` with the step's scale vector adds them into the (row,
 * token) accumulator.
 */
function emitDotKRelaxed(name: string, tt: TileType, R: number, g: number): FuncDef {
  const rx = tt.relaxed!;
  const f = dotFn(R, g);
  const { c } = f;
  const { acc, finish } = kDotParts(f, tt, R, g);
  const w = Array.from({ length: R }, () => [c.local(V128), c.local(V128)]);
  const sc = Array.from({ length: R }, () => c.local(V128));
  const a = [c.local(V128), c.local(V128)];
  const sp = c.local(I32);
  blockLoop(f, R * tt.slot, stagedBlock(256, g).stride, g, () => {
    for (const row of acc) for (const v of row) c.v128Const(ZERO16).set(v);
    c.get(D.tile).set(f.wp).get(D.act).set(f.ap).get(D.tile).i32(rx.scalesOff).op(Op.i32Add).set(sp);
    c.forLoop(f.k, () => c.i32(0), () => c.i32(8), 1, () => {
      for (let r = 0; r < R; r++) {
        w[r]!.forEach((wv, v) => c.get(f.wp).simdMem(Simd.v128Load, r * tt.slot + 16 * v).set(wv));
        c.get(sp).simdMem(Simd.v128Load, r * tt.slot).set(sc[r]!);
      }
      for (let t = 0; t < g; t++) {
        a.forEach((av, v) => c.get(f.ap).simdMem(Simd.v128Load, 256 * t + 16 * v).set(av));
        for (let r = 0; r < R; r++) {
          c.get(acc[r]![t]!);
          c.get(a[0]!).get(w[r]![0]!).simd(Simd.i16x8RelaxedDotI8x16I7x16S);
          c.get(a[1]!).get(w[r]![1]!).simd(Simd.i16x8RelaxedDotI8x16I7x16S).simd(Simd.i16x8Add);
          c.get(sc[r]!).simd(Simd.i32x4DotI16x8S).simd(Simd.i32x4Add).set(acc[r]![t]!);
        }
      }
      c.inc(f.wp, 32).inc(f.ap, 32).inc(sp, 16);
    });
    finish();
  });
  return { name: `${name}_dot_${R}x${g}`, params: new Array(5).fill(I32), results: [], code: c };
}

/** `<name>_dot_<R>x<g>` for Q8_0, Q4_0, Q5_0 (tokens in lanes, see the file's comment). */
function emitDotQ8(name: string, tt: TileType, R: number, g: number): FuncDef {
  const f = dotFn(R, g);
  const { c } = f;
  const Q = Math.ceil(g / 4);
  const acc = Array.from({ length: R }, () => Array.from({ length: Q }, () => c.local(V128)));
  const w = Array.from({ length: R }, () => c.local(V128));
  const a = c.local(V128), da = c.local(V128);
  const dw = Array.from({ length: R }, () => c.local(V128));
  const { daOff, stride } = stagedBlock(32, g);
  blockLoop(f, R * tt.slot, stride, g, () => {
    // 16 value pairs: weight pair j of row r (int16 at 4 j) splatted, dotted with the quads' pair j
    integerLoop(f, 16, 2, 4, 16 * Q, (u, first) => {
      w.forEach((wr, r) => c.get(f.wp).simdMem(Simd.load32Splat, r * tt.slot + 4 * u).set(wr));
      for (let q = 0; q < Q; q++) {
        c.get(f.ap).simdMem(Simd.v128Load, 16 * (u * Q + q)).set(a);
        for (let r = 0; r < R; r++) dotAcc(c, acc[r]![q]!, w[r]!, a, first);
      }
    });
    // acc += (dw * da) * isum; each scale loaded once
    dw.forEach((d, r) => c.get(D.tile).simdMem(Simd.load64Splat, r * tt.slot + tt.dOff).set(d));
    for (let p = 0; p < f.facc[0]!.length; p++) {
      c.get(D.act).simdMem(Simd.v128Load, daOff + 16 * p).set(da);
      f.facc.forEach((row, r) => {
        c.get(row[p]!).get(dw[r]!).get(da).simd(Simd.f64x2Mul);
        lanePairAsF64(c, acc[r]![p >> 1]!, p & 1);
        c.simd(Simd.f64x2Mul).simd(Simd.f64x2Add).set(row[p]!);
      });
    }
  });
  return { name: `${name}_dot_${R}x${g}`, params: new Array(5).fill(I32), results: [], code: c };
}

/** `<name>_decode(w, dst, nb, stride)`: unpacks nb weight blocks from w into slots at dst, dst + stride, ... */
function emitDecode(name: string, tt: TileType): FuncDef {
  const c = new Code(4);
  const b = c.local(I32);
  c.forLoop(b, () => c.i32(0), () => c.get(2), 1, () => {
    tt.decode(c, 0, 1);
    c.inc(0, tt.typeSize).inc(1, { local: 3 });
  });
  return { name: `${name}_decode`, params: new Array(4).fill(I32), results: [], code: c };
}

/** Tile-kernel parameters */
const P = { w: 0, rb: 1, nb: 2, r0: 3, r1: 4, act: 5, T: 6, out: 7, tile: 8 } as const;

/**
 * `<name>_tile(w, rb, nb, r0, r1, act, T, out, tile)`: out[t * (r1 - r0) + r - r0] (float32) = dot(weight
 * row r, token t) for r in [r0, r1), t < T, with the activations staged at act (./tile-stage.ts) and a
 * tile's worth of scratch at `tile`.
 */
function emitTile(name: string, tt: TileType): FuncDef {
  const c = new Code(9);
  const r = c.local(I32), j = c.local(I32), nFull = c.local(I32), tail = c.local(I32), groupBytes = c.local(I32), outStride = c.local(I32);
  const G = groupTokens(tt.blockSize);
  c.get(P.T).i32(G).op(Op.i32DivU).set(nFull);
  c.get(P.T).i32(G).op(Op.i32RemU).set(tail);
  c.get(P.nb).i32(stagedBlock(tt.blockSize, G).stride).op(Op.i32Mul).set(groupBytes);
  c.get(P.r1).get(P.r0).op(Op.i32Sub).i32(2).op(Op.i32Shl).set(outStride);
  /** calls the dot function for R rows and g tokens on group `grp` */
  const callDot = (R: number, g: number, grp: number) => {
    c.get(P.tile).get(P.act).get(grp).get(groupBytes).op(Op.i32Mul, Op.i32Add).get(P.nb);
    // out + 4 * (grp * G * nRows + r - r0)
    c.get(P.out).get(grp).i32(G).op(Op.i32Mul).get(P.r1).get(P.r0).op(Op.i32Sub).op(Op.i32Mul).get(r).op(Op.i32Add).get(P.r0).op(Op.i32Sub).i32(2).op(Op.i32Shl, Op.i32Add);
    c.get(outStride).call(`${name}_dot_${R}x${g}`);
  };
  const rowBlock = (R: number) => {
    for (let i = 0; i < R; i++) {
      c.get(P.w).get(r).i32(i).op(Op.i32Add).get(P.rb).op(Op.i32Mul, Op.i32Add);
      c.get(P.tile).i32(i * tt.slot).op(Op.i32Add).get(P.nb).i32(R * tt.slot).call(`${name}_decode`);
    }
    c.forLoop(j, () => c.i32(0), () => c.get(nFull), 1, () => callDot(R, G, j));
    for (let g = 1; g < G; g++) c.get(tail).i32(g).op(Op.i32Eq).ifElse(() => callDot(R, g, nFull));
    c.inc(r, R);
  };
  c.get(P.r0).set(r);
  c.whileLoop(() => c.get(r).i32(TILE_ROWS).op(Op.i32Add).get(P.r1).op(Op.i32LeS), () => rowBlock(TILE_ROWS));
  c.whileLoop(() => c.get(r).get(P.r1).op(Op.i32LtS), () => rowBlock(1));
  return { name: `${name}_tile`, params: new Array(9).fill(I32), results: [], code: c };
}

/** A tile kernel's exported name and what the dispatcher needs to know about it. */
export interface TileKernelInfo {
  name: string;
  typeSize: number;
  blockSize: number;
}

/**
 * Every function of the batch kernels (exported entry points: `stage`, `stage_t` and `<name>_tile`); with
 * `relaxed` (the engine has relaxed SIMD, ./relaxed.ts), also the relaxed-SIMD variants `<name>_r_tile`
 * of Q4_K, Q5_K and Q6_K, listed in the map under relaxedTileName(name).
 */
export function emitTileKernels(relaxed = false): { funcs: FuncDef[]; info: Map<string, TileKernelInfo> } {
  const funcs: FuncDef[] = emitStaging(relaxed);
  const info = new Map<string, TileKernelInfo>();
  const add = (name: string, tt: TileType, dot: typeof emitDotK) => {
    funcs.push(emitTile(name, tt), emitDecode(name, tt));
    for (const R of [TILE_ROWS, 1]) {
      for (let g = 1; g <= groupTokens(tt.blockSize); g++) funcs.push(dot(name, tt, R, g));
    }
    info.set(name, { name: `${name}_tile`, typeSize: tt.typeSize, blockSize: tt.blockSize });
  };
  for (const [name, tt] of Object.entries(TILE_TYPES)) add(name, tt, tt.blockSize === 32 ? emitDotQ8 : emitDotK);
  if (relaxed) for (const [name, tt] of Object.entries(RELAXED_TILE_TYPES)) add(relaxedTileName(name), tt, emitDotKRelaxed);
  return { funcs, info };
}
