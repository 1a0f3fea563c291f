/**
 * Matrix products with GGUF weights. INITIAL VERSION: F32 weights only; the tensor-types work replaces
 * this with quantized kernels behind the same signatures.
 */
import { GGMLType, typeName } from "../tensor/types.ts";
import { TsmoeError } from "../errors.ts";

/** A 2-D weight: ne1 rows of ne0 values, rows contiguous (a 3-D expert tensor gives one Weight per expert). */
export interface Weight {
  type: GGMLType;
  ne0: number;
  ne1: number;
  data: Uint8Array;
}

/** out[t * w.ne1 + r] = sum_i w[r][i] * x[t * w.ne0 + i] for t < nTokens, r < w.ne1 */
export function matmul(w: Weight, x: Float32Array, nTokens: number, out: Float32Array): void {
  if (w.type !== GGMLType.F32) throw new TsmoeError(`matmul: weight type ${typeName(w.type)} not supported yet`);
  const W = new Float32Array(w.data.buffer, w.data.byteOffset, w.ne0 * w.ne1);
  const K = w.ne0;
  for (let t = 0; t < nTokens; t++) {
    const xo = t * K;
    for (let r = 0; r < w.ne1; r++) {
      const wo = r * K;
      let s = 0;
      for (let i = 0; i < K; i++) s += W[wo + i] * x[xo + i];
      out[t * w.ne1 + r] = s;
    }
  }
}
