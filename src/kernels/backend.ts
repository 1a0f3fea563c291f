/**
 * Where matrix products run. The model code calls `backend.matmul` for every weight product (and
 * `backend.matmulMany` for independent products it can hand over together, e.g. q/k/v, or the experts of a
 * MoE layer) and `backend.attention` for attention over the KV cache, so the serial backend (this file) and the worker-thread pool (src/pool/) are interchangeable.
 */
import { attendHeads, type AttentionTask } from "./attention.ts";
import { sumExpertRows, type ExpertSum } from "./expert-sum.ts";
import { swigluRange } from "./glu.ts";
import { matmul } from "./matmul.ts";
import type { Weight } from "./tensors.ts";
import { allocTensorBytes, freeTensorBytes } from "./wasm/memory.ts";

/** Long-lived bytes a backend's kernels read from (KV caches): zero-filled, SharedArrayBuffer-backed. */
export interface ByteAllocator {
  alloc(bytes: number): Uint8Array;
  /** gives bytes from `alloc` back (they must not be used afterwards) */
  free(bytes: Uint8Array): void;
}

/** The WebAssembly memory's allocator (a SharedArrayBuffer of their own when it has no room or is off). */
export const WASM_BYTES: ByteAllocator = { alloc: allocTensorBytes, free: freeTensorBytes };

/** One product of a `matmulMany` call: out[t * w.ne1 + r] = dot(row r of w, row t of x). */
export interface MatmulItem {
  w: Weight;
  x: Float32Array;
  nTokens: number;
  out: Float32Array;
}

/** A fused SwiGLU projection: outGate = silu(gate x) * up x, outUp = up x (rows of w.ne1 per token). */
export interface GluItem {
  gate: Weight;
  up: Weight;
  x: Float32Array;
  nTokens: number;
  outGate: Float32Array;
  outUp: Float32Array;
}

export interface MatmulBackend {
  readonly nThreads: number;
  /** out[t * w.ne1 + r] = dot(row r of w, row t of x), for t < nTokens, r < w.ne1 */
  matmul(w: Weight, x: Float32Array, nTokens: number, out: Float32Array): void;
  /**
   * Several independent products at once (no item's output may be another's input); each result is
   * bit-identical to `matmul` of that item. A pool spreads all of them over its threads in one dispatch.
   */
  matmulMany(items: readonly MatmulItem[]): void;
  /**
   * For each item, the gate and up products and SwiGLU on them (bit-identical to two `matmul`s and
   * `swigluRange` over the whole output); a pool applies SwiGLU to each chunk of rows as it computes it.
   */
  swigluMany(items: readonly GluItem[]): void;
  /**
   * A MoE layer's down products and the weighted sum of their outputs: `matmulMany(items)`, where each
   * item's out is a block of rows of sum.ye, then `sumExpertRows(sum, 0, sum.width)` (the same bits). A
   * pool sums each group of output columns as soon as every item has computed it, on the thread that
   * finished it last.
   */
  matmulSum(items: readonly MatmulItem[], sum: ExpertSum): void;
  /** attention over a float32 KV cache (./attention.ts); a pool splits the query heads between threads */
  attention(task: AttentionTask): void;
  /** a float buffer that worker threads can read and write (SharedArrayBuffer-backed); use it for activations */
  allocF32(n: number): Float32Array;
  /** where KV caches go: memory the backend's attention kernels read fastest (the WASM memory) */
  readonly memory: ByteAllocator;
  dispose(): Promise<void>;
}

/** Runs every product on the calling thread. */
export class SerialBackend implements MatmulBackend {
  readonly nThreads = 1;
  readonly memory = WASM_BYTES;
  matmul(w: Weight, x: Float32Array, nTokens: number, out: Float32Array): void {
    matmul(w, x, nTokens, out);
  }
  matmulMany(items: readonly MatmulItem[]): void {
    for (const it of items) matmul(it.w, it.x, it.nTokens, it.out);
  }
  swigluMany(items: readonly GluItem[]): void {
    for (const it of items) {
      matmul(it.gate, it.x, it.nTokens, it.outGate);
      matmul(it.up, it.x, it.nTokens, it.outUp);
      swigluRange(it.outGate, it.outUp, 0, it.nTokens * it.gate.ne1);
    }
  }
  matmulSum(items: readonly MatmulItem[], sum: ExpertSum): void {
    this.matmulMany(items);
    sumExpertRows(sum, 0, sum.width);
  }
  attention(task: AttentionTask): void {
    attendHeads(task, 0, task.nHead);
  }
  allocF32(n: number): Float32Array {
    return new Float32Array(new SharedArrayBuffer(n * 4));
  }
  async dispose(): Promise<void> {}
}
