/**
 * Activations prepared for a matrix product, the llama.cpp way: each activation row is converted once to
 * the weight type's `vec_dot_type` (F32: as is; F16/BF16: rounded to F16/BF16; Q4_0, Q5_0, Q8_0, IQ4_NL,
 * MXFP4: Q8_0; Q4_1, Q5_1: Q8_1; Q2_K..Q6_K, IQ4_XS: Q8_K), then every weight row is dotted with it.
 *
 * `Activations` is a flat object of numbers and typed arrays (SharedArrayBuffer-backed when allocated
 * here) so the worker pool can hand it to other threads without copying.
 *
 * Q8_0 and Q8_K rows are quantized by the WASM SIMD kernels (./wasm/quantize-kernels.ts, bit-identical)
 * when WASM is on; the TypeScript quantizers are the reference and the fallback.
 */
import { GGMLType, typeName } from "../tensor/types.ts";
import { blockCodec } from "../tensor/decode.ts";
import { roundToBf16, roundToF16 } from "../tensor/f16.ts";
import { quantizeQ8Blocks, quantizeQ8KBlocks } from "../tensor/quantize-act.ts";
import { quantizeQ8KWasm, quantizeQ8Wasm } from "./wasm/quantize-kernels.ts";
import { kernelName } from "./wasm/runtime.ts";
import { TsmoeError } from "../errors.ts";
import type { Activations } from "./tensors.ts";

export type { Activations };

/** The activation format llama.cpp's CPU backend multiplies weights of type wtype with. */
export function vecDotType(wtype: GGMLType): GGMLType {
  switch (wtype) {
    case GGMLType.F32:
    case GGMLType.F16:
    case GGMLType.BF16:
      return wtype;
  }
  const c = blockCodec(wtype);
  if (!c) throw new TsmoeError(`matmul: weight type ${typeName(wtype)} is not supported`);
  return c.family === "q8_0" ? GGMLType.Q8_0 : c.family === "q8_1" ? GGMLType.Q8_1 : GGMLType.Q8_K;
}

type ViewCtor<V> = { new (buffer: ArrayBufferLike, byteOffset: number, length: number): V; BYTES_PER_ELEMENT: number };

/** n elements over `prev`'s shared buffer when it is big enough, else over a new SharedArrayBuffer. */
function sharedView<V extends ArrayBufferView>(Ctor: ViewCtor<V>, prev: V | undefined, n: number): V {
  const bytes = n * Ctor.BYTES_PER_ELEMENT;
  if (prev && prev.buffer instanceof SharedArrayBuffer && prev.buffer.byteLength - prev.byteOffset >= bytes) {
    return new Ctor(prev.buffer, prev.byteOffset, n);
  }
  return new Ctor(new SharedArrayBuffer(Math.max(bytes, 8)), 0, n);
}

// over a SharedArrayBuffer, as the filled fields are: the pool passes them to workers without a copy
const EMPTY = new SharedArrayBuffer(0);
const EMPTY_F32 = new Float32Array(EMPTY);
const EMPTY_I8 = new Int8Array(EMPTY);
const EMPTY_I32 = new Int32Array(EMPTY);
const EMPTY_F64 = new Float64Array(EMPTY);

/** Packs token pairs: pk[p * ne0 + i] = qs[2p * ne0 + i] * 2^21 + qs[(2p + 1) * ne0 + i]. */
function packPairs(qs: Int8Array, nTokens: number, ne0: number, pk: Float64Array): void {
  for (let p = 0; p < nTokens >> 1; p++) {
    const a = 2 * p * ne0;
    const b = a + ne0;
    const o = p * ne0;
    for (let i = 0; i < ne0; i++) pk[o + i] = qs[a + i]! * 2097152 + qs[b + i]!;
  }
}

/** The packed token pairs of nTokens rows of quants, in a new (unshared) array. */
export function packedPairs(qs: Int8Array, nTokens: number, ne0: number): Float64Array {
  const pk = new Float64Array((nTokens >> 1) * ne0);
  packPairs(qs, nTokens, ne0, pk);
  return pk;
}

/**
 * Converts nTokens rows of ne0 floats (x, token-major) to wtype's vec_dot_type. `reuse`: activations from
 * an earlier call whose buffers may be reused (they are overwritten).
 */
export function quantizeActivations(
  wtype: GGMLType,
  x: Float32Array,
  nTokens: number,
  ne0: number,
  reuse?: Activations,
): Activations {
  const dotType = vecDotType(wtype);
  const n = nTokens * ne0;
  if (x.length < n) throw new TsmoeError(`matmul: ${x.length} input values for ${nTokens} tokens of ${ne0}`);
  // only buffers this module allocated for the same format are reused (F32 activations are the caller's x)
  const prev = reuse && reuse.dotType === dotType && dotType !== GGMLType.F32 ? reuse : undefined;
  const act: Activations = { wtype, dotType, nTokens, ne0, f: EMPTY_F32, qs: EMPTY_I8, d: EMPTY_F32, s: EMPTY_F32, bsums: EMPTY_I32, pk: EMPTY_F64 };
  switch (dotType) {
    case GGMLType.F32:
      act.f = x.subarray(0, n);
      return act;
    case GGMLType.F16:
    case GGMLType.BF16: {
      const f = sharedView(Float32Array, prev?.f, n);
      const round = dotType === GGMLType.F16 ? roundToF16 : roundToBf16;
      for (let i = 0; i < n; i++) f[i] = round(x[i]!);
      act.f = f;
      return act;
    }
  }
  const blockSize = dotType === GGMLType.Q8_K ? 256 : 32;
  if (ne0 % blockSize !== 0) {
    throw new TsmoeError(`matmul: row length ${ne0} is not a multiple of ${typeName(wtype)}'s block size`);
  }
  const nb = ne0 / blockSize;
  act.qs = sharedView(Int8Array, prev?.qs, n);
  act.d = sharedView(Float32Array, prev?.d, nTokens * nb);
  let wasm = false;
  if (dotType === GGMLType.Q8_K) {
    act.bsums = sharedView(Int32Array, prev?.bsums, n / 16);
    // token rows are contiguous and whole blocks, so all of them are quantized as one run of blocks
    wasm = quantizeQ8KWasm(x, 0, n, act.qs, 0, act.d, 0, act.bsums);
    if (!wasm) for (let t = 0; t < nTokens; t++) quantizeQ8KBlocks(x, t * ne0, ne0, act.qs, t * ne0, act.d, t * nb, act.bsums);
  } else {
    if (dotType === GGMLType.Q8_1) act.s = sharedView(Float32Array, prev?.s, nTokens * nb);
    const s = dotType === GGMLType.Q8_1 ? act.s : undefined;
    wasm = !s && quantizeQ8Wasm(x, 0, n, act.qs, 0, act.d, 0);
    if (!wasm) for (let t = 0; t < nTokens; t++) quantizeQ8Blocks(x, t * ne0, ne0, act.qs, t * ne0, act.d, t * nb, s);
  }
  // the packed pairs only speed up the TypeScript batch kernels (which give the same bits without them):
  // not made here when WASM runs and has a kernel for the weight type (the TypeScript kernels make them
  // if they run after all, e.g. for weights outside the WASM memory)
  if (nTokens >= 2 && !(wasm && kernelName(wtype, nTokens) !== undefined)) {
    act.pk = sharedView(Float64Array, prev?.pk, (nTokens >> 1) * ne0);
    packPairs(act.qs, nTokens, ne0, act.pk);
  }
  return act;
}
