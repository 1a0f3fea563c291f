/**
 * llama.cpp's default CPU attention (flash attention on, F16 KV cache), for agreeing with llama.cpp's
 * default context. This matters for quantized models: their activations are quantized before every
 * matmul, which turns a one-ulp difference in the attention output into a whole quantization step now
 * and then.
 *
 * ggml_compute_forward_flash_attn_ext_f16 has two kernels (ggml-cpu/ops.cpp):
 *  - batches of fewer than 64 queries (and decoding): one query at a time; the query is rounded to F16,
 *    q.k is an F16 dot product, the softmax is online, and the weighted V sum is accumulated in F16.
 *    Reproduced here operation for operation (bit-exact with llama.cpp on most fixtures);
 *  - batches of 64 queries or more: tiles of 64 x 64 with float32 accumulation, which equals float32
 *    attention over the F16-rounded cache up to summation order (`attend`). (Reproducing its exact order
 *    and vector exp was tried: it did not make the results bit-exact, so the simple form stays.)
 * The cache holds F16-rounded values (KvCache with f16).
 */
import { roundToF16 } from "../tensor/f16.ts";
import { attend, firstKey, type AttentionOptions, type AttentionShape, type KvCache } from "./attention.ts";

/** query tile (GGML_FA_TILE_Q): batches with at least this many queries use the tiled kernel */
export const FA_TILE_Q = 64;

const f32 = Math.fround;

/** Attention as llama.cpp's default CPU context computes it (see the file comment). */
export function attendFlashF16(
  cache: KvCache,
  il: number,
  shape: AttentionShape,
  q: Float32Array,
  nTokens: number,
  pos0: number,
  out: Float32Array,
  scores: Float32Array,
  opts: AttentionOptions = {},
): void {
  if (nTokens >= FA_TILE_Q) attend(cache, il, shape, q, nTokens, pos0, out, scores, opts);
  else attendFlashVec(cache, il, shape, q, nTokens, pos0, out, opts);
}

/** The one-query kernel (ggml_compute_forward_flash_attn_ext_f16_one_chunk) for one batch. */
function attendFlashVec(
  cache: KvCache,
  il: number,
  shape: AttentionShape,
  q: Float32Array,
  nTokens: number,
  pos0: number,
  out: Float32Array,
  opts: AttentionOptions,
): void {
  const { nHead, nHeadKv, headDimK: dk, headDimV: dv, scale } = shape;
  const group = nHead / nHeadKv;
  const K = cache.k[il];
  const V = cache.v[il];
  const kRow = cache.kRow;
  const vRow = cache.vRow;
  const q16 = new Float32Array(dk);
  for (let t = 0; t < nTokens; t++) {
    const nKeys = pos0 + t + 1;
    for (let h = 0; h < nHead; h++) {
      const g = Math.floor(h / group);
      const qo = t * nHead * dk + h * dk;
      for (let d = 0; d < dk; d++) q16[d] = roundToF16(q[qo + d]);
      const oo = t * nHead * dv + h * dv;
      out.fill(0, oo, oo + dv); // the F16 accumulator (values stay F16-exact)
      let S = 0;
      let M = -Infinity;
      for (let j = firstKey(pos0 + t, opts.window); j < nKeys; j++) {
        const kj = j * kRow + g * dk;
        let dot = 0;
        for (let d = 0; d < dk; d++) dot += q16[d] * K[kj + d];
        const s = f32(f32(dot) * scale);
        let ms = 1;
        let vs = 1;
        if (s > M) {
          const mOld = M;
          M = s;
          ms = f32(Math.exp(mOld - M));
          for (let d = 0; d < dv; d++) out[oo + d] = roundToF16(out[oo + d] * ms);
        } else {
          vs = f32(Math.exp(s - M));
        }
        const vj = j * vRow + g * dv;
        for (let d = 0; d < dv; d++) out[oo + d] = roundToF16(out[oo + d] + V[vj + d] * vs);
        S = f32(f32(S * ms) + vs);
      }
      if (opts.sinks) {
        // the sink joins the online softmax after the keys, on the F32 accumulator
        const s = opts.sinks[h];
        let ms = 1;
        let vs = 1;
        if (s > M) {
          ms = f32(Math.exp(M - s));
          M = s;
          for (let d = 0; d < dv; d++) out[oo + d] *= ms;
        } else vs = f32(Math.exp(s - M));
        S = f32(f32(S * ms) + vs);
      }
      const inv = S === 0 ? 0 : f32(1 / S);
      for (let d = 0; d < dv; d++) out[oo + d] *= inv;
    }
  }
}
