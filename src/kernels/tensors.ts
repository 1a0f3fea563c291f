/**
 * The two operand types of the kernels, in a leaf module (it imports only the type enum) so that
 * matmul.ts, the kernels it dispatches to (dot-*.ts, wasm/runtime.ts) and the backends share them
 * without importing each other.
 */
import type { GGMLType } from "../tensor/types.ts";

/** A 2-D weight: ne1 rows of ne0 values, rows contiguous (a 3-D expert tensor gives one Weight per expert). */
export interface Weight {
  type: GGMLType;
  ne0: number;
  ne1: number;
  data: Uint8Array;
}

/** An activation batch prepared for the dot products with one weight type (see ./activations.ts). */
export interface Activations {
  /** weight type these activations were prepared for */
  wtype: GGMLType;
  /** the format they are in: F32, F16, BF16, Q8_0, Q8_1 or Q8_K */
  dotType: GGMLType;
  nTokens: number;
  /** values per token row */
  ne0: number;
  /** F32/F16/BF16: the (rounded) values, nTokens * ne0; empty otherwise */
  f: Float32Array;
  /** Q8_*: the quants, nTokens * ne0; empty otherwise */
  qs: Int8Array;
  /** Q8_*: one scale per block (32 values for Q8_0/Q8_1, 256 for Q8_K), token-major */
  d: Float32Array;
  /** Q8_1: the block sums s = d * sum(q) (as f16 values), per block */
  s: Float32Array;
  /** Q8_K: sums of the quants over groups of 16, nTokens * ne0 / 16 */
  bsums: Int32Array;
  /**
   * Q8_*: token pairs packed for the TypeScript kernels, pk[p * ne0 + i] = qs[2p][i] * 2^21 + qs[2p+1][i]
   * for p < floor(nTokens / 2); empty for fewer than 2 tokens, and where a WASM kernel is expected to run
   */
  pk: Float64Array;
}
