/**
 * Self-attention over a KV cache (llama.cpp's build_attn with a unified KV cache, flash attention off):
 * the batch's K and V rows are appended to the cache, then every query head attends causally to all
 * cached positions up to its own, with grouped-query attention (query head h reads KV head
 * h / (nHead / nHeadKv)). Scores are q.k * scale, softmaxed in float32 like ggml_soft_max_ext.
 *
 * Cache layout per layer: one row per position, K rows of nHeadKv * headDimK values, V rows of
 * nHeadKv * headDimV values, allocated as positions are used (up to the session's context size). `f16` rounds what is stored to half precision (llama.cpp's default F16 cache).
 *
 * llama.cpp's default attention (flash attention, F16 cache) is in ./flash-attention.ts.
 */
import { roundToF16 } from "../tensor/f16.ts";
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
export function firstKey(p: number, window: number | undefined): number {
  return window && window > 0 ? Math.max(0, p - window + 1) : 0;
}

/** Cache rows allocated at first, and the growth factor when more are needed (up to nCtx). */
const INITIAL_ROWS = 256;

export class KvCache {
  /** per layer: K / V rows of the positions stored so far (capacity grows on demand up to nCtx) */
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
    const rows = Math.min(nCtx, INITIAL_ROWS);
    for (let il = 0; il < nLayer; il++) {
      this.k.push(new Float32Array(rows * this.kRow));
      this.v.push(new Float32Array(rows * this.vRow));
    }
  }

  /** Makes room for `rows` positions in layer il (doubling, capped at nCtx), keeping what is stored. */
  private reserve(il: number, rows: number): void {
    const have = this.k[il].length / this.kRow;
    if (rows <= have) return;
    const cap = Math.min(this.nCtx, Math.max(rows, 2 * have));
    const k = new Float32Array(cap * this.kRow);
    const v = new Float32Array(cap * this.vRow);
    k.set(this.k[il]);
    v.set(this.v[il]);
    this.k[il] = k;
    this.v[il] = v;
  }

  /** Stores nTokens rows of K and V for layer il at positions pos0.. */
  store(il: number, pos0: number, nTokens: number, k: Float32Array, v: Float32Array): void {
    this.reserve(il, pos0 + nTokens);
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
  const acc = new Float64Array(dv);
  for (let t = 0; t < nTokens; t++) {
    const nKeys = pos0 + t + 1;
    const j0 = firstKey(pos0 + t, opts.window);
    for (let h = 0; h < nHead; h++) {
      const g = Math.floor(h / group);
      const qo = t * qRow + h * dk;
      const ko = g * dk;
      // scores: q . k, four partial sums for instruction-level parallelism
      for (let j = j0; j < nKeys; j++) {
        const kj = j * kRow + ko;
        let s0 = 0;
        let s1 = 0;
        let s2 = 0;
        let s3 = 0;
        let d = 0;
        for (; d + 3 < dk; d += 4) {
          s0 += q[qo + d] * K[kj + d];
          s1 += q[qo + d + 1] * K[kj + d + 1];
          s2 += q[qo + d + 2] * K[kj + d + 2];
          s3 += q[qo + d + 3] * K[kj + d + 3];
        }
        for (; d < dk; d++) s0 += q[qo + d] * K[kj + d];
        scores[j - j0] = Math.fround(s0 + s1 + (s2 + s3)) * scale;
      }
      softmaxInPlace(scores, nKeys - j0, opts.sinks?.[h]);
      // out = sum_j p_j v_j, two keys per pass over the accumulator
      acc.fill(0);
      const vo = g * dv;
      let j = j0;
      for (; j + 1 < nKeys; j += 2) {
        const p0 = scores[j - j0];
        const p1 = scores[j + 1 - j0];
        const v0 = j * vRow + vo;
        const v1 = v0 + vRow;
        for (let d = 0; d < dv; d++) acc[d] += p0 * V[v0 + d] + p1 * V[v1 + d];
      }
      if (j < nKeys) {
        const p = scores[j - j0];
        const v0 = j * vRow + vo;
        for (let d = 0; d < dv; d++) acc[d] += p * V[v0 + d];
      }
      const oo = t * oRow + h * dv;
      for (let d = 0; d < dv; d++) out[oo + d] = acc[d];
    }
  }
}
