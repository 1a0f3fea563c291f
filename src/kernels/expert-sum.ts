/**
 * The last step of a MoE layer (llama.cpp's build_moe_ffn): each token's expert outputs, each multiplied
 * by its routing weight (rounded to float32 as a tensor would hold it), added in routing order. Kept next
 * to the kernels because the worker pool applies it to the output columns whose down products are done
 * (src/pool/job.ts), so it runs in parallel with them; any split of the columns gives the same bits.
 */

/** What `sumExpertRows` reads and writes; every array may be shared with worker threads. */
export interface ExpertSum {
  /** the experts' outputs: one row of `width` values per (token, slot) pair */
  ye: Float32Array;
  /** values per output row (the model's embedding width) */
  width: number;
  nTokens: number;
  /** row stride of rowOf and weights */
  maxK: number;
  /** experts token t uses (0: its output row is zeros) */
  counts: Int32Array;
  /** row of ye holding the output of token t's slot s: rowOf[t * maxK + s] */
  rowOf: Int32Array;
  /** routing weight of token t's slot s: weights[t * maxK + s] */
  weights: Float32Array;
  /** nTokens rows of width */
  out: Float32Array;
}

const f32 = Math.fround;

/**
 * out[t * width + c] = w_0 * y_0[c] + w_1 * y_1[c] + ... for c0 <= c < c1, every token t of s, over t's
 * slots in order (each product rounded to float32, as is each partial sum).
 */
export function sumExpertRows(s: ExpertSum, c0: number, c1: number): void {
  const { ye, width, maxK, counts, rowOf, weights, out } = s;
  for (let t = 0; t < s.nTokens; t++) {
    const o = t * width;
    const k = counts[t]!;
    if (k === 0) out.fill(0, o + c0, o + c1);
    for (let slot = 0; slot < k; slot++) {
      const yo = rowOf[t * maxK + slot]! * width;
      const wt = weights[t * maxK + slot]!;
      if (slot === 0) for (let j = c0; j < c1; j++) out[o + j] = ye[yo + j]! * wt;
      else for (let j = c0; j < c1; j++) out[o + j] += f32(ye[yo + j]! * wt);
    }
  }
}
