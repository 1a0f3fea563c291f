/**
 * Self-attention over a KV cache (llama.cpp's build_attn with a unified KV cache, flash attention off):
 * the batch's K and V rows are appended to the cache, then every query head attends causally to all
 * cached positions up to its own, with grouped-query attention (query head h reads KV head
 * h / (nHead / nHeadKv)). Scores are q.k * scale, softmaxed in float32 like ggml_soft_max_ext.
 *
 * Cache layout per layer: one row per position, K rows of nHeadKv * headDimK values, V rows of
 * nHeadKv * headDimV values, allocated as positions are used (up to the session's context size). `f16` rounds
 * what is stored to half precision (llama.cpp's F16 cache). With `flash` (the default for an F16 cache) the
 * attention is llama.cpp's flash attention (src/kernels/flash-attention.ts); an F16 cache without it is
 * attended as ggml's CPU matmuls do with F16 K and V: the query and the softmax weights rounded to F16
 * before the products (ggml converts a matmul's float32 operand to F16 for an F16 one), products and sums
 * in float32. Every kind goes through the backend (`attentionTask`), which splits the query heads between
 * its threads.
 */
import { roundToF16 } from "../tensor/f16.ts";
import { attendHeads, firstKey, type AttentionTask } from "../kernels/attention.ts";
import { FLASH_AVX512FP16_LANES, FLASH_F32_LANES, FLASH_NONE } from "../kernels/attention-task.ts";
import type { FlashF16Lanes } from "../kernels/flash-attention.ts";
import type { ByteAllocator } from "../kernels/backend.ts";

export { firstKey };

export type { FlashF16Lanes };

/**
 * A session's KV cache: F32 (default) or F16 rows, whether an F16 cache is attended with flash attention
 * (default: yes), and the flash-attention lanes.
 */
export interface KvCacheOptions {
  kvType?: "f32" | "f16";
  /** flash attention (llama.cpp -fa on); only with kvType "f16" */
  flash?: boolean;
  flashLanes?: FlashF16Lanes;
}

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


/** Cache rows allocated at first, and the growth factor when more are needed (up to nCtx). */
const INITIAL_ROWS = 256;

/** Gives a collected cache's rows back to its allocator. */
const released = new FinalizationRegistry<{ owned: Set<Float32Array>; memory: ByteAllocator }>(({ owned, memory }) => {
  for (const a of owned) memory.free(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
});

export class KvCache {
  /** per layer: K / V rows of the positions stored so far (capacity grows on demand up to nCtx) */
  readonly k: Float32Array[] = [];
  readonly v: Float32Array[] = [];
  readonly kRow: number;
  readonly vRow: number;
  /** the arrays above, from `memory` (the backend's: the WASM memory, where the attention kernels read them, when possible) */
  private readonly owned = new Set<Float32Array>();
  /** rows rounded to half precision (llama.cpp's F16 cache) */
  readonly f16: boolean;
  /** flash attention (llama.cpp -fa on) over the F16 rows, with these lanes */
  readonly flash: boolean;
  readonly flashLanes: FlashF16Lanes;

  constructor(
    readonly nLayer: number,
    readonly nCtx: number,
    shape: AttentionShape,
    private readonly memory: ByteAllocator,
    opts: KvCacheOptions = {},
  ) {
    this.f16 = opts.kvType === "f16";
    this.flash = opts.flash ?? this.f16;
    this.flashLanes = opts.flashLanes ?? "f32";
    this.kRow = shape.nHeadKv * shape.headDimK;
    this.vRow = shape.nHeadKv * shape.headDimV;
    const rows = Math.min(nCtx, INITIAL_ROWS);
    for (let il = 0; il < nLayer; il++) {
      this.k.push(this.alloc(rows * this.kRow));
      this.v.push(this.alloc(rows * this.vRow));
    }
    released.register(this, { owned: this.owned, memory });
  }

  private alloc(n: number): Float32Array {
    const bytes = this.memory.alloc(4 * Math.max(1, n));
    const a = new Float32Array(bytes.buffer, bytes.byteOffset, n);
    this.owned.add(a);
    return a;
  }

  private release(a: Float32Array): void {
    this.owned.delete(a);
    this.memory.free(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  }

  /** Makes room for `rows` positions in layer il (doubling, capped at nCtx), keeping what is stored. */
  private reserve(il: number, rows: number): void {
    const have = this.k[il]!.length / this.kRow;
    if (rows <= have) return;
    const cap = Math.min(this.nCtx, Math.max(rows, 2 * have));
    const k = this.alloc(cap * this.kRow);
    const v = this.alloc(cap * this.vRow);
    k.set(this.k[il]!);
    v.set(this.v[il]!);
    this.release(this.k[il]!);
    this.release(this.v[il]!);
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
 * for the nTokens queries of a batch starting at position pos0 (their K/V already stored), on the calling
 * thread (the graph hands the same task to its backend, which may split the heads between threads).
 */
export function attend(
  cache: KvCache,
  il: number,
  shape: AttentionShape,
  q: Float32Array,
  nTokens: number,
  pos0: number,
  out: Float32Array,
  opts: AttentionOptions = {},
): void {
  attendHeads(attentionTask(cache, il, shape, q, nTokens, pos0, out, opts), 0, shape.nHead);
}

const NO_SINKS = new Float32Array(0);

/** The attention of layer il for a batch as a task (see src/kernels/attention.ts). */
export function attentionTask(
  cache: KvCache,
  il: number,
  shape: AttentionShape,
  q: Float32Array,
  nTokens: number,
  pos0: number,
  out: Float32Array,
  opts: AttentionOptions = {},
): AttentionTask {
  const { nHead, nHeadKv, headDimK: dk, headDimV: dv, scale } = shape;
  return {
    q, qRow: nHead * dk,
    k: cache.k[il]!, v: cache.v[il]!, kRow: cache.kRow, vRow: cache.vRow,
    out, oRow: nHead * dv,
    nTokens, pos0, nHead, nHeadKv, dk, dv, scale,
    window: opts.window ?? 0,
    sinks: opts.sinks ?? NO_SINKS,
    roundF16: cache.f16 && !cache.flash ? 1 : 0,
    flash: !(cache.f16 && cache.flash) ? FLASH_NONE : cache.flashLanes === "avx512fp16" ? FLASH_AVX512FP16_LANES : FLASH_F32_LANES,
  };
}
