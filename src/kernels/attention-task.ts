/**
 * One attention call over a KV cache as a flat object of numbers and typed arrays, which the worker pool
 * passes to its threads as is; the kernels (./attention.ts, ./flash-attention.ts) run it for a range of
 * query heads. A leaf module, so both kernels share it without importing each other.
 */

/** One attention call, as a flat object of numbers and typed arrays (the pool passes it to workers as is). */
export interface AttentionTask {
  /** queries, token t head h at t * qRow + h * dk */
  q: Float32Array;
  qRow: number;
  /** the layer's cache: position j's keys at j * kRow (KV head g at + g * dk), values at j * vRow (+ g * dv) */
  k: Float32Array;
  v: Float32Array;
  kRow: number;
  vRow: number;
  /** output, token t head h at t * oRow + h * dv */
  out: Float32Array;
  oRow: number;
  nTokens: number;
  /** position of the batch's first token (its keys are in the cache already) */
  pos0: number;
  nHead: number;
  nHeadKv: number;
  dk: number;
  dv: number;
  /** multiplier of q . k (rounded to float32 before use) */
  scale: number;
  /** sliding window (0: none): a query at position p sees keys p - window + 1 .. p */
  window: number;
  /** one sink logit per query head, or empty */
  sinks: Float32Array;
  /**
   * 1: the query and the softmax weights are rounded to F16 before their products (ggml's matmuls with an
   * F16 cache and flash attention off); 0: float32 throughout
   */
  roundF16: number;
  /**
   * FLASH_NONE: float32 attention; FLASH_F32_LANES / FLASH_AVX512FP16_LANES: llama.cpp's flash attention
   * over an F16 cache, with the F16 vector arithmetic of that build (./flash-attention.ts)
   */
  flash: number;
}

export const FLASH_NONE = 0;
export const FLASH_F32_LANES = 1;
export const FLASH_AVX512FP16_LANES = 2;

/** first key position a query at position p sees */
export function firstKey(p: number, window: number | undefined): number {
  return window && window > 0 ? Math.max(0, p - window + 1) : 0;
}
