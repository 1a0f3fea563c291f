/**
 * llama.cpp's default CPU attention (flash attention on, F16 KV cache), for agreeing with llama.cpp's
 * default context. This matters for quantized models: their activations are quantized before every
 * matmul, which turns a one-ulp difference in the attention output into a whole quantization step now
 * and then.
 *
 * ggml_compute_forward_flash_attn_ext_f16 has two kernels (ggml-cpu/ops.cpp):
 *  - batches of fewer than 64 queries (and decoding): one query at a time; the query is rounded to F16,
 *    q.k is an F16 dot product (ggml_vec_dot_f16), the softmax is online, and the weighted V sum is
 *    accumulated in an F16 vector (ggml_vec_scale_f16 / ggml_vec_mad_f16). Reproduced here operation for
 *    operation, in float32 where the C code is: expf of a float32 difference, and the running sum
 *    S = S*ms + vs contracted into one fused multiply-add as GCC compiles it (both seen in the goldens:
 *    with them deepseek2's Q4_K_M s16 goldens agree bit for bit up to position 12 instead of 10);
 *  - batches of 64 queries or more: tiles of 64 x 64 with float32 accumulation, which equals float32
 *    attention over the F16-rounded cache up to summation order (`attend`). (Reproducing its exact order
 *    and vector exp was tried: it did not make the results bit-exact, so the simple form stays.)
 * The cache holds F16-rounded values (KvCache with f16).
 *
 * How ggml computes those F16 vector operations depends on the CPU it was built for (FlashF16Lanes):
 *  - "f32" (the default): F16 values widened to float32 lanes, products fused-multiply-added in float32
 *    and rounded to F16 when stored (x86 AVX/AVX2/AVX-512F builds, e.g. node-llama-cpp's on a CPU
 *    without AVX512-FP16). q.k is summed here in double, which equals float32 lanes up to their order;
 *  - "avx512fp16": llama.cpp built natively for a CPU with AVX512-FP16 (Intel Sapphire Rapids and later)
 *    computes in half precision: per block of 128 values (GGML_F16_STEP, 4 vectors of 32 lanes), q.k
 *    products are fused-multiply-added into F16 lanes and those reduced in F16 (vector 0 + 2, 1 + 3,
 *    0 + 1, then 32 lanes halved down to one), the weights exp(s - M) are rounded to F16 before the
 *    V multiply-add, and the rescale multiplies by an F16 factor. The tail past the last full block
 *    (all of a 64-dim head) is the scalar code, as with "f32". Only heads of 128 or more dimensions see
 *    a difference, e.g. DeepSeek's multi-head latent attention (key 160 / value 128 dims in the
 *    fixture); the goldens of ../shared/fixtures were made on such a CPU (with "avx512fp16" the first
 *    positions of deepseek2's s16 goldens agree to float32 rounding, with "f32" they are ~5e-3 apart).
 * (ARM builds with FP16 vector arithmetic compute in half precision too, with other block sizes: not
 * reproduced.)
 */
import { f32Bits, f32FromBits, roundToF16 } from "../tensor/f16.ts";
import { FLASH_AVX512FP16_LANES, firstKey, type AttentionTask } from "./attention-task.ts";

/** query tile (GGML_FA_TILE_Q): batches with at least this many queries use the tiled kernel */
export const FA_TILE_Q = 64;

/** the F16 vector arithmetic of the llama.cpp build to reproduce (see above) */
export type FlashF16Lanes = "f32" | "avx512fp16";

export const FLASH_F16_LANES: readonly FlashF16Lanes[] = ["f32", "avx512fp16"];

const f32 = Math.fround;
/** a * b + c rounded once to float32 (a C compiler contracts such expressions into an FMA) */
const fmaF32 = (a: number, b: number, c: number): number => f32(a * b + c);

/** The F16 vector operations of the one-query kernel. */
interface Lanes {
  /** q.k over n values (q and k F16-exact), as the float32 the kernel gets */
  dot(q16: Float32Array, k: Float32Array, ko: number, n: number): number;
  /** acc[o..o+n) *= v, rounded to F16 */
  scale(acc: Float32Array, o: number, n: number, v: number): void;
  /** acc[o..o+n) += x[xo..xo+n) * v, rounded to F16 */
  mad(acc: Float32Array, o: number, x: Float32Array, xo: number, n: number, v: number): void;
}

const F32_LANES: Lanes = {
  dot(q16, k, ko, n) {
    let dot = 0;
    for (let d = 0; d < n; d++) dot += q16[d] * k[ko + d];
    return f32(dot);
  },
  scale(acc, o, n, v) {
    for (let d = 0; d < n; d++) acc[o + d] = roundToF16(acc[o + d] * v);
  },
  mad(acc, o, x, xo, n, v) {
    for (let d = 0; d < n; d++) acc[o + d] = roundToF16(acc[o + d] + x[xo + d] * v);
  },
};

/**
 * x rounded to the nearest F16 (ties to even) in one rounding, as half-precision hardware arithmetic
 * does. roundToF16 goes through float32 first, which differs when that lands exactly halfway between
 * two F16 values: the exact value then decides the direction.
 */
export function roundToF16Exact(x: number): number {
  const r = f32(x);
  if (r !== x) {
    const bits = f32Bits(r);
    // the 13 float32 mantissa bits below F16 precision are exactly one half
    if ((bits & 0x1fff) === 0x1000) return roundToF16(f32FromBits(x > r === r > 0 ? bits + 1 : bits - 1));
  }
  return roundToF16(r);
}

/** AVX512-FP16: GGML_F16_STEP values per block, GGML_F16_EPR lanes per vector */
const FP16_STEP = 128;
const FP16_EPR = 32;

function avx512fp16Lanes(): Lanes {
  const lane = new Float64Array(FP16_STEP); // the 4 accumulator vectors of 32 lanes, one after the other
  return {
    dot(q16, k, ko, n) {
      const np = n - (n % FP16_STEP);
      let sum = 0;
      if (np > 0) {
        lane.fill(0);
        for (let i = 0; i < np; i += FP16_STEP)
          for (let l = 0; l < FP16_STEP; l++) lane[l] = roundToF16Exact(lane[l] + q16[i + l] * k[ko + i + l]);
        // GGML_F16_VEC_REDUCE: vectors 0 += 2, 1 += 3, then 0 += 1; then _mm512_reduce_add_ph halves 32 lanes
        for (let l = 0; l < 2 * FP16_EPR; l++) lane[l] = roundToF16Exact(lane[l] + lane[l + 2 * FP16_EPR]);
        for (let half = FP16_EPR; half >= 1; half >>= 1)
          for (let l = 0; l < half; l++) lane[l] = roundToF16Exact(lane[l] + lane[l + half]);
        sum = lane[0];
      }
      for (let d = np; d < n; d++) sum += q16[d] * k[ko + d]; // the scalar tail, in double
      return f32(sum);
    },
    scale(acc, o, n, v) {
      const np = n - (n % FP16_STEP);
      const vh = roundToF16(v);
      for (let d = 0; d < np; d++) acc[o + d] = roundToF16Exact(acc[o + d] * vh);
      F32_LANES.scale(acc, o + np, n - np, v);
    },
    mad(acc, o, x, xo, n, v) {
      const np = n - (n % FP16_STEP);
      const vh = roundToF16(v);
      for (let d = 0; d < np; d++) acc[o + d] = roundToF16Exact(acc[o + d] + x[xo + d] * vh);
      F32_LANES.mad(acc, o + np, x, xo + np, n - np, v);
    },
  };
}

/** the AVX512-FP16 lanes (their scratch is used within one dot product, so one set serves every cache) */
const AVX512FP16_LANES = avx512fp16Lanes();

/**
 * The one-query kernel (ggml_compute_forward_flash_attn_ext_f16_one_chunk) for query heads [h0, h1) of
 * every token of the task (its cache F16-rounded); heads are independent, so any split of them between
 * threads gives the same bits.
 */
export function flashHeads(task: AttentionTask, h0: number, h1: number): void {
  const { q, k: K, v: V, kRow, vRow, out, qRow, oRow, nTokens, pos0, nHead, nHeadKv, dk, dv, scale, window, sinks } = task;
  const lanes = task.flash === FLASH_AVX512FP16_LANES ? AVX512FP16_LANES : F32_LANES;
  const group = nHead / nHeadKv;
  const q16 = new Float32Array(dk);
  for (let t = 0; t < nTokens; t++) {
    const nKeys = pos0 + t + 1;
    for (let h = h0; h < h1; h++) {
      const g = Math.floor(h / group);
      const qo = t * qRow + h * dk;
      for (let d = 0; d < dk; d++) q16[d] = roundToF16(q[qo + d]);
      const oo = t * oRow + h * dv;
      out.fill(0, oo, oo + dv); // the F16 accumulator (values stay F16-exact)
      let S = 0;
      let M = -Infinity;
      for (let j = firstKey(pos0 + t, window); j < nKeys; j++) {
        const s = f32(lanes.dot(q16, K, j * kRow + g * dk, dk) * scale);
        let ms = 1;
        let vs = 1;
        if (s > M) {
          const mOld = M;
          M = s;
          ms = f32(Math.exp(f32(mOld - M)));
          lanes.scale(out, oo, dv, ms);
        } else {
          vs = f32(Math.exp(f32(s - M)));
        }
        lanes.mad(out, oo, V, j * vRow + g * dv, dv, vs);
        S = fmaF32(S, ms, vs);
      }
      if (sinks.length) {
        // the sink joins the online softmax after the keys, on the F32 accumulator
        const s = sinks[h];
        let ms = 1;
        let vs = 1;
        if (s > M) {
          ms = f32(Math.exp(f32(M - s)));
          M = s;
          for (let d = 0; d < dv; d++) out[oo + d] *= ms;
        } else vs = f32(Math.exp(f32(s - M)));
        S = fmaF32(S, ms, vs);
      }
      const inv = S === 0 ? 0 : f32(1 / S);
      for (let d = 0; d < dv; d++) out[oo + d] *= inv;
    }
  }
}
