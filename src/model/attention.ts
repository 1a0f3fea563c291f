/**
 * Self-attention over a KV cache (llama.cpp's build_attn with a unified KV cache, flash attention off):
 * the batch's K and V rows are appended to the cache, then every query head attends causally to all
 * cached positions up to its own, with grouped-query attention (query head h reads KV head
 * h / (nHead / nHeadKv)). Scores are q.k * scale, softmaxed in float32 like ggml_soft_max_ext.
 *
 * Cache layout per layer: one row per position, K rows of nHeadKv * headDimK values, V rows of
 * nHeadKv * headDimV values. `f16` rounds what is stored to half precision (llama.cpp's default F16 cache).
 *
 * `attendFlashF16` reproduces llama.cpp's default CPU attention (flash attention on, F16 cache): batches of
 * 64 queries or more take the tiled kernel (F32 queries against the F16-rounded cache: `attend` on an f16
 * cache), smaller batches the one-query-at-a-time kernel, which rounds the query to F16 and accumulates
 * the weighted V sum in F16 with an online softmax. Matching it matters for quantized models, whose
 * activation quantization amplifies tiny differences.
 */
import { roundToF16 } from "../tensor/f16.ts";

/** llama.cpp's flash-attention query tile: batches with at least this many queries use the tiled kernel */
export const FA_TILE_Q = 64;
import { softmaxInPlace } from "./ops.ts";

export interface AttentionShape {
  nHead: number;
  nHeadKv: number;
  headDimK: number;
  headDimV: number;
  /** multiplier of q.k (1/sqrt(headDimK) unless the model says otherwise) */
  scale: number;
}

/** Optional attention features (gpt-oss): per-head sink logits and a sliding window. */
export interface AttentionOptions {
  /** one sink logit per query head: joins the softmax denominator, contributes no value (attn_sinks) */
  sinks?: Float32Array;
  /** sliding window: a query at position p sees keys p - window + 1 .. p (0 = no window) */
  window?: number;
}

/** first key position a query at position p sees */
function firstKey(p: number, window: number | undefined): number {
  return window && window > 0 ? Math.max(0, p - window + 1) : 0;
}

export class KvCache {
  readonly k: Float32Array[] = [];
  readonly v: Float32Array[] = [];
  readonly kRow: number;
  readonly vRow: number;

  constructor(
    readonly nLayer: number,
    readonly nCtx: number,
    shape: AttentionShape,
    readonly f16 = false,
  ) {
    this.kRow = shape.nHeadKv * shape.headDimK;
    this.vRow = shape.nHeadKv * shape.headDimV;
    for (let il = 0; il < nLayer; il++) {
      this.k.push(new Float32Array(nCtx * this.kRow));
      this.v.push(new Float32Array(nCtx * this.vRow));
    }
  }

  /** Stores nTokens rows of K and V for layer il at positions pos0.. */
  store(il: number, pos0: number, nTokens: number, k: Float32Array, v: Float32Array): void {
    const kc = this.k[il];
    const vc = this.v[il];
    const kn = nTokens * this.kRow;
    const vn = nTokens * this.vRow;
    if (this.f16) {
      const ko = pos0 * this.kRow;
      const vo = pos0 * this.vRow;
      for (let i = 0; i < kn; i++) kc[ko + i] = roundToF16(k[i]);
      for (let i = 0; i < vn; i++) vc[vo + i] = roundToF16(v[i]);
    } else {
      kc.set(k.subarray(0, kn), pos0 * this.kRow);
      vc.set(v.subarray(0, vn), pos0 * this.vRow);
    }
  }
}

/**
 * out[t, h, :] = sum_j softmax_j(scale * q[t,h] . K[j,g]) V[j,g] over cached positions j <= pos0 + t,
 * for the nTokens queries of a batch starting at position pos0 (their K/V already stored).
 * `scores` must hold at least pos0 + nTokens floats.
 */
export function attend(
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
  const { nHead, nHeadKv, headDimK: dk, headDimV: dv, scale } = shape;
  const group = nHead / nHeadKv;
  const K = cache.k[il];
  const V = cache.v[il];
  const kRow = cache.kRow;
  const vRow = cache.vRow;
  const qRow = nHead * dk;
  const oRow = nHead * dv;
  for (let t = 0; t < nTokens; t++) {
    const nKeys = pos0 + t + 1;
    const j0 = firstKey(pos0 + t, opts.window);
    for (let h = 0; h < nHead; h++) {
      const g = Math.floor(h / group);
      const qo = t * qRow + h * dk;
      const ko = g * dk;
      for (let j = j0; j < nKeys; j++) {
        const kj = j * kRow + ko;
        let s = 0;
        for (let d = 0; d < dk; d++) s += q[qo + d] * K[kj + d];
        scores[j - j0] = Math.fround(s) * scale;
      }
      softmaxInPlace(scores, nKeys - j0, opts.sinks?.[h]);
      const oo = t * oRow + h * dv;
      out.fill(0, oo, oo + dv);
      const vo = g * dv;
      for (let j = j0; j < nKeys; j++) {
        const p = scores[j - j0];
        const vj = j * vRow + vo;
        for (let d = 0; d < dv; d++) out[oo + d] += p * V[vj + d];
      }
    }
  }
}

/** Attention as llama.cpp's default CPU context computes it (flash attention, F16 cache): see the file comment. */
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
  if (nTokens >= FA_TILE_Q) {
    attend(cache, il, shape, q, nTokens, pos0, out, scores, opts);
    return;
  }
  const f32 = Math.fround;
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
