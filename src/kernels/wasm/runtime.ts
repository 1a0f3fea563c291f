/**
 * Runs the WASM kernels: compiles the emitted module once per process (worker threads get the main
 * thread's, see ./shared-modules.ts), instantiates it per thread over the shared
 * memory (./memory.ts), copies the activations into this thread's scratch area of that memory, calls the
 * kernel for a row range and copies the results out. Single tokens of Q4_K/Q5_K/Q6_K weights go through
 * the decode kernels (./decode-kernels.ts), and so do batches of 2 to 4 tokens of them (DECODE_OF); other
 * single tokens (and small batches of some types) go through the row kernels (./kernels.ts,
 * ./kgroup-kernels.ts, ./float-kernels.ts), batches of block-quantized types (but Q4_1, Q5_1) through the
 * batch kernels (./tile-kernels.ts); the
 * decode and batch kernels' activations are staged once per product and thread.
 * `wasmMatmulRange` returns false (and does nothing) whenever the WASM path does not apply, so the caller
 * falls back to the TypeScript kernels.
 */
import { GGMLType } from "../../tensor/types.ts";
import type { Activations, Weight } from "../tensors.ts";
import { encodeModule } from "./emitter.ts";
import { Wasm, type WasmMemory, type WasmModule } from "./webassembly.ts";
import { emitKernels, type KernelInfo } from "./kernels.ts";
import { emitKGroupKernels } from "./kgroup-kernels.ts";
import { emitTileKernels, relaxedTileName, stagedBytes, tileBytes, type TileKernelInfo } from "./tile-kernels.ts";
import { relaxedSimd } from "./relaxed.ts";
import { FLOAT_ROWS, emitFloatKernel } from "./float-kernels.ts";
import { DECODE_SCRATCH, type DecodeKernelInfo, MAX_DECODE_TOKENS, decodeKernelFor, decodeStagedBytes, emitDecodeKernels, relaxedDecodeName, stageDecodeActivations } from "./decode-kernels.ts";
import { MXFP4_DECODE_KERNEL, MXFP4_SCRATCH, emitMxfp4DecodeKernel, mxfp4StagedBytes, stageMxfp4Activations } from "./mxfp4-kernels.ts";
import { MAX_PAGES, arenaCount, arenaMemory, arenaOf, disableWasm, wasmAlloc, wasmDisabled, wasmMemory } from "./memory.ts";

type KernelFn = (w: number, rb: number, nb: number, r0: number, r1: number, aq: number, ad: number, abs: number, T: number, K: number, out: number, tmp: number) => void;
type TileFn = (w: number, rb: number, nb: number, r0: number, r1: number, act: number, T: number, out: number, tile: number) => void;
type DecodeFn = (w: number, rb: number, nb: number, r0: number, r1: number, act: number, ad: number, bs: number, out: number, tmp: number) => void;
type Mxfp4Fn = (w: number, rb: number, nb: number, r0: number, r1: number, act: number, out: number, tmp: number) => void;
type StageFn = (q: number, d: number, bsums: number, T: number, K: number, nb: number, dst: number) => void;
type StageTFn = (q: number, d: number, T: number, K: number, nb: number, dst: number) => void;

interface Runtime {
  /** the arena (./memory.ts) these instances work in */
  arena: number;
  memory: WasmMemory;
  kernels: Map<string, { fn: KernelFn; info: KernelInfo }>;
  tiles: Map<string, { fn: TileFn; info: TileKernelInfo }>;
  decode: Map<string, { fn: DecodeFn; info: DecodeKernelInfo }>;
  mxfp4: Mxfp4Fn;
  stage: StageFn;
  stageT: StageTFn;
  /** the staging of the relaxed-SIMD batch kernels, if the module has them */
  stageR: StageFn | undefined;
  /** this thread's scratch area in the arena (activations, outputs, per-row scratch) */
  scratch: { addr: number; size: number };
  /**
   * The activations last copied into the scratch area: a pool thread computes several row chunks of one
   * job with the same Activations object, which is copied once (quantizeActivations makes a new object for
   * every product, and nothing changes an Activations object's arrays afterwards).
   */
  copiedAct: Activations | undefined;
  /**
   * How copiedAct was copied: "rows" (as it is), "tile" (staged for the tile kernels as well) or "decode16"
   * / "decode32" (staged for the decode kernels, activation sums per 16 or 32 values; "r": for the relaxed-SIMD ones),
   * "mxfp4" (staged for the MXFP4 one-token kernel)
   */
  copiedAs: "rows" | "tile" | "tile_r" | "decode16" | "decode32" | "decode16r" | "decode32r" | "mxfp4";
}

export interface Compiled {
  module: WasmModule;
  info: Map<string, KernelInfo>;
  tileInfo: Map<string, TileKernelInfo>;
  decodeInfo: Map<string, DecodeKernelInfo>;
}

let moduleCache: Compiled | undefined;
/** this thread's runtimes, by arena */
const runtimes: (Runtime | undefined)[] = [];
let failed = false;

/** The module's bytes, generated here and now. */
export function kernelModuleBytes(): Uint8Array<ArrayBuffer> {
  return encodeModule(allKernels().funcs, 1, MAX_PAGES);
}

/**
 * Every kernel: the block-quantized row kernels of ./kernels.ts, the float ones of ./float-kernels.ts, the
 * batch (tile) kernels of ./tile-kernels.ts and the single-token K-quant ones of ./decode-kernels.ts.
 */
function allKernels(): ReturnType<typeof emitKernels> & { tileInfo: Map<string, TileKernelInfo>; decodeInfo: Map<string, DecodeKernelInfo> } {
  const { funcs, info } = emitKernels();
  const kGroup = emitKGroupKernels();
  funcs.push(...kGroup.funcs);
  for (const [name, i] of kGroup.info) info.set(name, i);
  for (const [name, typeSize] of [["f32", 4], ["f16", 2], ["bf16", 2]] as const) {
    funcs.push(emitFloatKernel(name, name));
    // one "block" per value; the per-row scratch holds FLOAT_ROWS rows as float32
    info.set(name, { name, typeSize, blockSize: 1, tmpPerBlock: 4 * FLOAT_ROWS });
  }
  const tiles = emitTileKernels(relaxedSimd().available);
  funcs.push(...tiles.funcs);
  const decode = emitDecodeKernels(relaxedSimd().available);
  funcs.push(...decode.funcs, emitMxfp4DecodeKernel());
  return { funcs, info, tileInfo: tiles.info, decodeInfo: decode.info };
}

/** The compiled kernel module and its kernels' descriptions (compiled now if need be), to hand to worker threads. */
export function compiledKernels(): Compiled | undefined {
  if (failed || !Wasm) return undefined;
  try {
    return compile();
  } catch {
    return undefined;
  }
}

/** Uses a kernel module another thread compiled (see compiledKernels) instead of emitting and compiling it here. */
export function adoptCompiledKernels(c: Compiled): void {
  moduleCache ??= c;
}

function compile(): Compiled {
  if (!moduleCache) {
    const { funcs, info, tileInfo, decodeInfo } = allKernels();
    moduleCache = { module: new Wasm!.Module(encodeModule(funcs, 1, MAX_PAGES)), info, tileInfo, decodeInfo };
  }
  return moduleCache;
}

/**
 * This thread's kernels over arena `arena` (default: the primary memory), instantiated on first use, or
 * undefined when WASM is off or unavailable.
 */
export function wasmRuntime(arena = 0): Runtime | undefined {
  if (failed) return undefined;
  const memory = arena === 0 ? wasmMemory() : arenaMemory(arena);
  if (!memory || wasmDisabled()) return undefined;
  const have = runtimes[arena];
  if (have && have.memory === memory) return have;
  try {
    const { module, info, tileInfo, decodeInfo } = compile();
    const inst = new Wasm!.Instance(module, { env: { memory } });
    const kernels = new Map<string, { fn: KernelFn; info: KernelInfo }>();
    for (const [name, i] of info) kernels.set(name, { fn: inst.exports[name] as KernelFn, info: i });
    const tiles = new Map<string, { fn: TileFn; info: TileKernelInfo }>();
    for (const [name, i] of tileInfo) tiles.set(name, { fn: inst.exports[i.name] as TileFn, info: i });
    const decode = new Map<string, { fn: DecodeFn; info: DecodeKernelInfo }>();
    for (const [name, i] of decodeInfo) decode.set(name, { fn: inst.exports[name] as DecodeFn, info: i });
    const rt: Runtime = {
      arena,
      memory,
      kernels,
      tiles,
      decode,
      mxfp4: inst.exports[MXFP4_DECODE_KERNEL] as Mxfp4Fn,
      stage: inst.exports.stage as StageFn,
      stageT: inst.exports.stage_t as StageTFn,
      stageR: inst.exports.stage_r as StageFn | undefined,
      scratch: { addr: 0, size: 0 },
      copiedAct: undefined,
      copiedAs: "rows",
    };
    runtimes[arena] = rt;
    return rt;
  } catch {
    // no fixed-width SIMD in this engine: TypeScript kernels only
    failed = true;
    disableWasm();
    return undefined;
  }
}

/** Instantiates the kernels over every arena this thread has (worker threads, before their first job). */
export function wasmRuntimes(): void {
  for (let a = 0; a < arenaCount(); a++) wasmRuntime(a);
}

/** The runtime of the arena the weight bytes lie in, or undefined (the TypeScript kernels then). */
function runtimeFor(data: Uint8Array): Runtime | undefined {
  if (wasmDisabled()) return undefined;
  const arena = arenaOf(data.buffer);
  return arena === undefined ? undefined : wasmRuntime(arena);
}

/** Kernel per weight type: all of them beat the TypeScript kernels in bench/wasm-kernels.ts. */
const KERNEL_OF: Partial<Record<GGMLType, string>> = {
  [GGMLType.F32]: "f32",
  [GGMLType.F16]: "f16",
  [GGMLType.BF16]: "bf16",
  [GGMLType.Q8_0]: "q8_0",
  [GGMLType.Q4_0]: "q4_0",
  [GGMLType.Q5_0]: "q5_0",
  [GGMLType.Q4_K]: "q4_k",
  [GGMLType.Q5_K]: "q5_k",
  [GGMLType.IQ4_NL]: "iq4_nl",
  [GGMLType.MXFP4]: "mxfp4",
  [GGMLType.Q2_K]: "q2_k",
  [GGMLType.Q4_1]: "q4_1",
  [GGMLType.Q5_1]: "q5_1",
};

/**
 * Types with one kernel for one token and another for several: their one-token and batch TypeScript
 * kernels round their scales in different orders ((da * d) * isum, da * (d * isum)).
 */
const SPLIT_KERNEL_OF: Partial<Record<GGMLType, string>> = {
  [GGMLType.Q6_K]: "q6_k",
  [GGMLType.Q3_K]: "q3_k",
  [GGMLType.IQ4_XS]: "iq4_xs",
};

/** The kernel for weights of this type and this many tokens, if there is one (and it is adopted). */
export function kernelName(type: GGMLType, nTokens: number): string | undefined {
  const split = SPLIT_KERNEL_OF[type];
  if (split) return nTokens === 1 ? `${split}_single` : `${split}_batch`;
  return KERNEL_OF[type];
}

/**
 * Batch (tile) kernel per weight type, and the fewest tokens it is used for (below, the row kernels are
 * as fast: unpacking a tile does not pay for itself; measured with bench/wasm-kernels.ts).
 */
const TILE_OF: Partial<Record<GGMLType, { name: string; minTokens: number }>> = {
  [GGMLType.Q8_0]: { name: "q8_0", minTokens: 4 },
  [GGMLType.Q4_0]: { name: "q4_0", minTokens: 3 },
  [GGMLType.Q5_0]: { name: "q5_0", minTokens: 3 },
  [GGMLType.IQ4_NL]: { name: "iq4_nl", minTokens: 3 },
  [GGMLType.MXFP4]: { name: "mxfp4", minTokens: 3 },
  [GGMLType.Q4_K]: { name: "q4_k", minTokens: 2 },
  [GGMLType.Q5_K]: { name: "q5_k", minTokens: 2 },
  [GGMLType.Q6_K]: { name: "q6_k", minTokens: 2 },
  [GGMLType.IQ4_XS]: { name: "iq4_xs", minTokens: 2 },
  [GGMLType.Q3_K]: { name: "q3_k", minTokens: 2 },
  [GGMLType.Q2_K]: { name: "q2_k", minTokens: 2 },
};

/** The batch (tile) kernel for weights of this type and this many tokens, if it is the one to use. */
export function tileKernelName(type: GGMLType, nTokens: number): string | undefined {
  const k = TILE_OF[type];
  return k && nTokens >= k.minTokens && !decodeKernelName(type, nTokens) ? k.name : undefined;
}

/**
 * Decode kernels per weight type (./decode-kernels.ts), and the most tokens they are used for: one token
 * (faster than the row kernels), and the batches where they were at least 1.1x the speed of the tile
 * kernels (paired medians, single thread, weights streamed from memory, shapes 2048 x 768, 768 x 2048,
 * 2048 x 2048): 2 tokens 1.2x to 1.45x, 3 tokens 1.1x to 1.35x, 4 tokens Q5_K 1.1x to 1.2x (Q4_K 1.0x to
 * 1.1x, Q6_K 0.85x to 1.0x).
 */
const DECODE_OF: Partial<Record<GGMLType, { name: string; maxTokens: number }>> = {
  [GGMLType.Q4_K]: { name: "q4_k", maxTokens: 3 },
  [GGMLType.Q5_K]: { name: "q5_k", maxTokens: 4 },
  [GGMLType.Q6_K]: { name: "q6_k", maxTokens: 3 },
};

/**
 * The decode kernel for weights of this type and this many tokens, if it is the one to use (`any`: if
 * there is one, used or not).
 */
export function decodeKernelName(type: GGMLType, nTokens: number, any = false): string | undefined {
  if (type === GGMLType.MXFP4) return nTokens === 1 ? MXFP4_DECODE_KERNEL : undefined;
  const k = DECODE_OF[type];
  if (!k || nTokens < 1 || nTokens > (any ? MAX_DECODE_TOKENS : k.maxTokens)) return undefined;
  return decodeKernelFor(k.name, nTokens);
}

/** Which WASM kernels wasmMatmulRange may use: the usual choice, or (tests, benchmarks) only one kind. */
export type KernelChoice = "auto" | "rows" | "tile" | "decode";

function scratchAddr(rt: Runtime, n: number): number | undefined {
  if (rt.scratch.size < n) {
    const size = Math.max(n, 2 * rt.scratch.size, 1 << 16);
    const addr = wasmAlloc(size, rt.arena);
    if (addr === undefined) {
      reportNoScratch(rt.arena, size);
      return undefined;
    }
    rt.scratch = { addr, size };
    rt.copiedAct = undefined;
  }
  return rt.scratch.addr;
}

let scratchWarned = false;

/** A product that falls back to the TypeScript kernels for want of scratch space says so on stderr, once. */
function reportNoScratch(arena: number, bytes: number): void {
  if (scratchWarned) return;
  scratchWarned = true;
  process.stderr.write(`tsmoe: warning: no room for ${bytes} bytes of kernel scratch in WebAssembly memory ${arena}: some products run on the slower TypeScript kernels\n`);
}

const align64 = (n: number) => Math.ceil(n / 64) * 64;

/**
 * out[t * outStride + r] = dot(row r of w, activation row t) for r in [rowStart, rowEnd), computed by the
 * WASM kernel; false when the WASM path does not apply (no kernel for the type, weights outside the WASM
 * memory, WASM off), in which case nothing was written. Arguments are checked by the caller (matmulRange).
 */
export function wasmMatmulRange(w: Weight, act: Activations, out: Float32Array, outStride: number, rowStart: number, rowEnd: number, choice: KernelChoice = "auto"): boolean {
  const decodeName = choice === "auto" || choice === "decode" ? decodeKernelName(w.type, act.nTokens, choice === "decode") : undefined;
  if (decodeName !== undefined) return decodeMatmulRange(decodeName, w, act, out, outStride, rowStart, rowEnd);
  if (choice === "decode") return false;
  const tileName = choice === "rows" ? undefined : choice === "tile" ? TILE_OF[w.type]?.name : tileKernelName(w.type, act.nTokens);
  if (tileName !== undefined) return tileMatmulRange(tileName, w, act, out, outStride, rowStart, rowEnd);
  const name = choice === "tile" ? undefined : kernelName(w.type, act.nTokens);
  if (name === undefined) return false;
  const rt = runtimeFor(w.data);
  const k = rt?.kernels.get(name);
  if (!rt || !k) return false;
  const T = act.nTokens;
  const K = w.ne0;
  const nRows = rowEnd - rowStart;
  if (T === 0 || nRows === 0) return true;
  const { typeSize, blockSize, tmpPerBlock } = k.info;
  const nb = K / blockSize;
  const isFloat = blockSize === 1;
  // F16/BF16 at an odd address: the TypeScript kernels take another path (other sums) for few tokens
  if (typeSize === 2 && w.data.byteOffset % 2 !== 0) return false;
  // scratch layout: quants (float: values), scales (float: values of 4-token groups interleaved), block sums
  // (Q8_K; Q8_1: the block sums s), per-row scratch, output
  const nGrouped = isFloat ? 4 * Math.floor(T / 4) : 0;
  const qsBytes = align64(isFloat ? T * K * 4 : T * K);
  const dBytes = align64(isFloat ? nGrouped * K * 4 : T * nb * 4);
  const bsBytes = act.bsums.length > 0 ? align64(T * (K / 16) * 4) : act.s.length > 0 ? align64(T * nb * 4) : 0;
  const tmpBytes = align64(nb * tmpPerBlock);
  const base = scratchAddr(rt, qsBytes + dBytes + bsBytes + tmpBytes + T * nRows * 4);
  if (base === undefined) return false;
  const buf = rt.memory.buffer;
  const aq = base, ad = aq + qsBytes, abs = ad + dBytes, tmp = abs + bsBytes, o = tmp + tmpBytes;
  if (rt.copiedAct !== act || rt.copiedAs !== "rows") {
    if (isFloat) stageFloat(act.f, T, K, new Float32Array(buf, aq, T * K), new Float32Array(buf, ad, nGrouped * K));
    else {
      new Int8Array(buf, aq, T * K).set(act.qs.subarray(0, T * K));
      new Float32Array(buf, ad, T * nb).set(act.d.subarray(0, T * nb));
      if (act.bsums.length > 0) new Int32Array(buf, abs, T * (K / 16)).set(act.bsums.subarray(0, T * (K / 16)));
      else if (act.s.length > 0) new Float32Array(buf, abs, T * nb).set(act.s.subarray(0, T * nb));
    }
    rt.copiedAct = act;
    rt.copiedAs = "rows";
  }
  k.fn(w.data.byteOffset, nb * typeSize, nb, rowStart, rowEnd, aq, ad, abs, T, K, o, tmp);
  copyOut(new Float32Array(buf, o, T * nRows), out, outStride, rowStart, T, nRows);
  return true;
}

/**
 * wasmMatmulRange for one token or a few with the decode kernel `name` (./decode-kernels.ts): the
 * activations are staged in this thread's scratch area once per Activations object, then the kernel
 * computes the rows.
 */
function decodeMatmulRange(name: string, w: Weight, act: Activations, out: Float32Array, outStride: number, rowStart: number, rowEnd: number): boolean {
  if (name === MXFP4_DECODE_KERNEL) return mxfp4MatmulRange(w, act, out, rowStart, rowEnd);
  const rt = runtimeFor(w.data);
  // the relaxed-SIMD variant when relaxed SIMD is on (same results, ./relaxed.ts)
  const k = (relaxedSimd().on ? rt?.decode.get(relaxedDecodeName(name)) : undefined) ?? rt?.decode.get(name);
  if (!rt || !k) return false;
  const K = w.ne0;
  const nRows = rowEnd - rowStart;
  if (nRows === 0) return true;
  const { typeSize, sumsPer, tokens: T, relaxed } = k.info;
  const nb = K / 256;
  // scratch layout: staged quants, scales, sums; kernel scratch; output
  const sz = decodeStagedBytes(K, sumsPer, T, relaxed);
  const qBytes = align64(sz.quants), dBytes = align64(sz.scales), sBytes = align64(sz.sums);
  const base = scratchAddr(rt, qBytes + dBytes + sBytes + DECODE_SCRATCH + T * nRows * 4);
  if (base === undefined) return false;
  const buf = rt.memory.buffer;
  const aq = base, ad = aq + qBytes, bs = ad + dBytes, tmp = bs + sBytes, o = tmp + DECODE_SCRATCH;
  const as = `${sumsPer === 16 ? "decode16" : "decode32"}${relaxed ? "r" : ""}` as const;
  if (rt.copiedAct !== act || rt.copiedAs !== as) {
    const quants = relaxed ? new Int8Array(buf, aq, T * K) : new Int16Array(buf, aq, T * K), scales = new Float32Array(buf, ad, T * nb), sums = new Int16Array(buf, bs, (T * K) / sumsPer);
    for (let t = 0; t < T; t++) {
      stageDecodeActivations(act.qs.subarray(t * K), act.d.subarray(t * nb), act.bsums.subarray((t * K) / 16), K, sumsPer, quants, scales, sums, t, T);
    }
    rt.copiedAct = act;
    rt.copiedAs = as;
  }
  k.fn(w.data.byteOffset, nb * typeSize, nb, rowStart, rowEnd, aq, ad, bs, o, tmp);
  copyOut(new Float32Array(buf, o, T * nRows), out, outStride, rowStart, T, nRows);
  return true;
}

/** decodeMatmulRange for one token of MXFP4 weights (./mxfp4-kernels.ts). */
function mxfp4MatmulRange(w: Weight, act: Activations, out: Float32Array, rowStart: number, rowEnd: number): boolean {
  const rt = runtimeFor(w.data);
  if (!rt) return false;
  const K = w.ne0;
  const nRows = rowEnd - rowStart;
  if (nRows === 0) return true;
  const nb = K / 32;
  const sBytes = align64(mxfp4StagedBytes(K));
  const base = scratchAddr(rt, sBytes + MXFP4_SCRATCH + nRows * 4);
  if (base === undefined) return false;
  const buf = rt.memory.buffer;
  const tmp = base + sBytes, o = tmp + MXFP4_SCRATCH;
  if (rt.copiedAct !== act || rt.copiedAs !== "mxfp4") {
    stageMxfp4Activations(act.qs, act.d, K, buf, base);
    rt.copiedAct = act;
    rt.copiedAs = "mxfp4";
  }
  rt.mxfp4(w.data.byteOffset, nb * 17, nb, rowStart, rowEnd, base, o, tmp);
  out.set(new Float32Array(buf, o, nRows), rowStart);
  return true;
}

/** out[t * outStride + rowStart + i] = res[t * nRows + i] */
function copyOut(res: Float32Array, out: Float32Array, outStride: number, rowStart: number, T: number, nRows: number): void {
  if (T === 1) out.set(res, rowStart);
  else for (let t = 0; t < T; t++) out.set(res.subarray(t * nRows, (t + 1) * nRows), t * outStride + rowStart);
}

/**
 * wasmMatmulRange with the tile kernel `name` (./tile-kernels.ts): the activations are copied into this
 * thread's scratch area and staged there once per Activations object, then the kernel computes the rows.
 */
function tileMatmulRange(name: string, w: Weight, act: Activations, out: Float32Array, outStride: number, rowStart: number, rowEnd: number): boolean {
  const rt = runtimeFor(w.data);
  // the relaxed-SIMD variant where there is one and relaxed SIMD is on (same results, ./relaxed.ts)
  const relaxed = relaxedSimd().on ? rt?.tiles.get(relaxedTileName(name)) : undefined;
  const k = relaxed ?? rt?.tiles.get(name);
  if (!rt || !k) return false;
  const T = act.nTokens;
  const K = w.ne0;
  const nRows = rowEnd - rowStart;
  if (T === 0 || nRows === 0) return true;
  const { typeSize, blockSize } = k.info;
  const nb = K / blockSize;
  // scratch layout: raw quants, scales, block sums (Q8_K); staged activations; tile; output. Q8_0
  // activations are staged 4 tokens at a time: their raw copies are padded with zero tokens.
  const Tp = blockSize === 32 ? Math.ceil(T / 4) * 4 : T;
  const qsBytes = align64(Tp * K);
  const dBytes = align64(Tp * nb * 4);
  const bsBytes = blockSize === 256 ? align64(T * (K / 16) * 4) : 0;
  const stBytes = align64(stagedBytes(blockSize, T, nb));
  const tlBytes = align64(tileBytes(relaxed ? relaxedTileName(name) : name, nb));
  const base = scratchAddr(rt, qsBytes + dBytes + bsBytes + stBytes + tlBytes + T * nRows * 4);
  if (base === undefined) return false;
  const buf = rt.memory.buffer;
  const aq = base, ad = aq + qsBytes, abs = ad + dBytes, st = abs + bsBytes, tile = st + stBytes, o = tile + tlBytes;
  const as = relaxed ? "tile_r" : "tile";
  if (rt.copiedAct !== act || rt.copiedAs !== as) {
    const q = new Int8Array(buf, aq, Tp * K);
    q.set(act.qs.subarray(0, T * K));
    q.fill(0, T * K);
    const d = new Float32Array(buf, ad, Tp * nb);
    d.set(act.d.subarray(0, T * nb));
    d.fill(0, T * nb);
    if (blockSize === 32) rt.stageT(aq, ad, T, K, nb, st);
    else {
      new Int32Array(buf, abs, T * (K / 16)).set(act.bsums.subarray(0, T * (K / 16)));
      (relaxed ? rt.stageR! : rt.stage)(aq, ad, abs, T, K, nb, st);
    }
    rt.copiedAct = act;
    rt.copiedAs = as;
  }
  k.fn(w.data.byteOffset, nb * typeSize, nb, rowStart, rowEnd, st, T, o, tile);
  copyOut(new Float32Array(buf, o, T * nRows), out, outStride, rowStart, T, nRows);
  return true;
}

/** Float activations: as they are, and the first nGrouped tokens as groups of 4 interleaved value by value. */
function stageFloat(f: Float32Array, T: number, K: number, plain: Float32Array, grouped: Float32Array): void {
  plain.set(f.subarray(0, T * K));
  for (let g = 0; 4 * g + 3 < T; g++) {
    const o = 4 * g * K;
    for (let j = 0; j < 4; j++) {
      const src = o + j * K;
      for (let i = 0; i < K; i++) grouped[o + 4 * i + j] = f[src + i]!;
    }
  }
}
