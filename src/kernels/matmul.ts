/**
 * Matrix products with GGUF weights, computed the way llama.cpp's CPU backend does: the activations are
 * converted once to the weight type's vec_dot_type (`quantizeActivations`), then each output row is an
 * integer-exact block dot product (`matmulRange`). The two steps are separate so that a worker pool can
 * quantize once and split the output rows between threads.
 */
import { GGMLType, rowBytes, typeName } from "../tensor/types.ts";
import { dequantizeRow } from "../tensor/dequantize.ts";
import { TsmoeError } from "../errors.ts";
import type { Weight } from "./tensors.ts";
import { quantizeActivations, type Activations } from "./activations.ts";
import { matmulFloatRange } from "./dot-float.ts";
import { matmulQuantRange } from "./dot-quant.ts";
import { wasmMatmulRange } from "./wasm/runtime.ts";

export { quantizeActivations, vecDotType, type Activations } from "./activations.ts";

export type { Weight };

function isFloat(type: GGMLType): boolean {
  return type === GGMLType.F32 || type === GGMLType.F16 || type === GGMLType.BF16;
}

/**
 * out[t * outStride + r] = dot(row r of w, activation row t) for rowStart <= r < rowEnd and every token t
 * of `act` (prepared by quantizeActivations for w.type). Runs the WebAssembly SIMD kernel when there is an
 * adopted one for the type and the weights live in the WASM memory (see ./wasm/), else the TypeScript
 * kernels; both give bit-identical results, for any split of the rows.
 */
export function matmulRange(
  w: Weight,
  act: Activations,
  out: Float32Array,
  outStride: number,
  rowStart: number,
  rowEnd: number,
): void {
  checkRange(w, act, out, outStride, rowStart, rowEnd);
  if (wasmMatmulRange(w, act, out, outStride, rowStart, rowEnd)) return;
  if (isFloat(w.type)) matmulFloatRange(w, act, out, outStride, rowStart, rowEnd);
  else matmulQuantRange(w, act, out, outStride, rowStart, rowEnd);
}

/** matmulRange with the plain-TypeScript kernels only: the reference the WASM kernels are tested against. */
export function matmulTsRange(
  w: Weight,
  act: Activations,
  out: Float32Array,
  outStride: number,
  rowStart: number,
  rowEnd: number,
): void {
  checkRange(w, act, out, outStride, rowStart, rowEnd);
  if (isFloat(w.type)) matmulFloatRange(w, act, out, outStride, rowStart, rowEnd);
  else matmulQuantRange(w, act, out, outStride, rowStart, rowEnd);
}

function checkRange(w: Weight, act: Activations, out: Float32Array, outStride: number, rowStart: number, rowEnd: number): void {
  if (act.wtype !== w.type || act.ne0 !== w.ne0) {
    throw new TsmoeError(
      `matmul: activations prepared for ${typeName(act.wtype)} rows of ${act.ne0}, weight is ${typeName(w.type)} with rows of ${w.ne0}`,
    );
  }
  if (rowStart < 0 || rowEnd > w.ne1 || rowStart > rowEnd) throw new TsmoeError(`matmul: rows [${rowStart}, ${rowEnd}) outside [0, ${w.ne1})`);
  if (w.data.byteLength < w.ne1 * rowBytes(w.type, w.ne0)) {
    throw new TsmoeError(`matmul: ${typeName(w.type)} weight [${w.ne0} x ${w.ne1}] needs ${w.ne1 * rowBytes(w.type, w.ne0)} bytes, has ${w.data.byteLength}`);
  }
  if (act.nTokens > 0 && out.length < (act.nTokens - 1) * outStride + rowEnd) throw new TsmoeError(`matmul: output buffer too small`);
}

/** Activations of the last `matmul` call per weight type: their buffers are reused by the next call. */
const scratchActs = new Map<GGMLType, Activations>();

/** out[t * w.ne1 + r] = sum_i w[r][i] * x[t * w.ne0 + i] for t < nTokens, r < w.ne1 */
export function matmul(w: Weight, x: Float32Array, nTokens: number, out: Float32Array): void {
  const act = quantizeActivations(w.type, x, nTokens, w.ne0, scratchActs.get(w.type));
  scratchActs.set(w.type, act);
  matmulRange(w, act, out, w.ne1, 0, w.ne1);
}

/** Dequantizes the rows rowIds of w into out (row i at out[i * w.ne0]): e.g. a token embedding lookup. */
export function getRowsF32(w: Weight, rowIds: ArrayLike<number>, out: Float32Array): void {
  const rb = rowBytes(w.type, w.ne0);
  for (let i = 0; i < rowIds.length; i++) {
    const id = rowIds[i]!;
    if (!(id >= 0 && id < w.ne1 && Number.isInteger(id))) throw new TsmoeError(`row ${id} out of range [0, ${w.ne1})`);
    dequantizeRow(w.type, w.data, id * rb, out, i * w.ne0, w.ne0);
  }
}
