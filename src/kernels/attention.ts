/**
 * Causal attention of a batch of queries over a float32 KV cache, one query head at a time, as a task any
 * thread can run for a range of heads (the worker pool splits the heads between its threads):
 *
 *   out[t, h, :] = sum_j softmax_j(scale * q[t, h] . K[j, g]) V[j, g]   over cached positions j <= pos0 + t
 *
 * with grouped-query attention (query head h reads KV head g = h / (nHead / nHeadKv)), an optional sliding
 * window and optional per-head sink logits (gpt-oss). Float32 arithmetic as llama.cpp's CPU matmuls do it:
 * q . k in four float32 lanes (d mod 4; the values past the last multiple of 4 to lane 0) summed as
 * (l0 + l1) + (l2 + l3), times scale; softmax as ggml_soft_max (./softmax.ts); the value sum in float32 in
 * key order. The WASM SIMD kernels (./wasm/attention-kernels.ts) run when the cache lives in the WASM
 * memory and give the same bits as the TypeScript loops here.
 */
import { softmaxInPlace } from "./softmax.ts";
import { attentionKernels, attentionScratch } from "./wasm/attention-kernels.ts";
import { isWasmBuffer } from "./wasm/memory.ts";

const f32 = Math.fround;

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
}

/** first key position a query at position p sees */
export function firstKey(p: number, window: number | undefined): number {
  return window && window > 0 ? Math.max(0, p - window + 1) : 0;
}

/** Runs the task for query heads [h0, h1) of every token. */
export function attendHeads(task: AttentionTask, h0: number, h1: number): void {
  const wasm = isWasmBuffer(task.k.buffer) && isWasmBuffer(task.v.buffer) ? attentionKernels() : undefined;
  if (!wasm || !attendHeadsWasm(task, h0, h1, wasm)) attendHeadsTs(task, h0, h1);
}

function attendHeadsTs(task: AttentionTask, h0: number, h1: number): void {
  const { q, k, v, out, qRow, kRow, vRow, oRow, nTokens, pos0, nHead, nHeadKv, dk, dv, scale, window, sinks } = task;
  const group = nHead / nHeadKv;
  const sc = f32(scale);
  const scores = new Float32Array(pos0 + nTokens);
  const acc = new Float32Array(dv);
  for (let t = 0; t < nTokens; t++) {
    const j0 = firstKey(pos0 + t, window);
    const n = pos0 + t + 1 - j0;
    for (let h = h0; h < h1; h++) {
      const g = Math.floor(h / group);
      const qo = t * qRow + h * dk;
      for (let j = 0; j < n; j++) scores[j] = f32(dotLanes(q, qo, k, (j0 + j) * kRow + g * dk, dk) * sc);
      softmaxInPlace(scores, n, sinks.length ? sinks[h] : undefined);
      acc.fill(0);
      for (let j = 0; j < n; j++) {
        const p = scores[j]!;
        const vo = (j0 + j) * vRow + g * dv;
        for (let d = 0; d < dv; d++) acc[d] = acc[d]! + f32(p * v[vo + d]!);
      }
      out.set(acc, t * oRow + h * dv);
    }
  }
}

/** a . b over n float32 values in four float32 lanes (the tail to lane 0), (l0 + l1) + (l2 + l3) */
function dotLanes(a: Float32Array, ao: number, b: Float32Array, bo: number, n: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let d = 0;
  for (; d + 3 < n; d += 4) {
    s0 = f32(s0 + f32(a[ao + d]! * b[bo + d]!));
    s1 = f32(s1 + f32(a[ao + d + 1]! * b[bo + d + 1]!));
    s2 = f32(s2 + f32(a[ao + d + 2]! * b[bo + d + 2]!));
    s3 = f32(s3 + f32(a[ao + d + 3]! * b[bo + d + 3]!));
  }
  for (; d < n; d++) s0 = f32(s0 + f32(a[ao + d]! * b[bo + d]!));
  return f32(f32(s0 + s1) + f32(s2 + s3));
}

/** false (nothing written) when the thread has no scratch space in the WASM memory */
function attendHeadsWasm(task: AttentionTask, h0: number, h1: number, wasm: NonNullable<ReturnType<typeof attentionKernels>>): boolean {
  const { q, k, v, out, qRow, kRow, vRow, oRow, nTokens, pos0, nHead, nHeadKv, dk, dv, scale, window, sinks } = task;
  const maxKeys = pos0 + nTokens;
  const base = attentionScratch(4 * (dk + dv + maxKeys) + 64);
  if (base === undefined) return false;
  const qAddr = base;
  const oAddr = qAddr + 4 * dk;
  const sAddr = oAddr + 4 * dv;
  const buf = wasm.memory.buffer;
  const qBuf = new Float32Array(buf, qAddr, dk);
  const oBuf = new Float32Array(buf, oAddr, dv);
  const scores = new Float32Array(buf, sAddr, maxKeys);
  const group = nHead / nHeadKv;
  for (let t = 0; t < nTokens; t++) {
    const j0 = firstKey(pos0 + t, window);
    const n = pos0 + t + 1 - j0;
    for (let h = h0; h < h1; h++) {
      const g = Math.floor(h / group);
      const qo = t * qRow + h * dk;
      qBuf.set(q.subarray(qo, qo + dk));
      wasm.scores(qAddr, k.byteOffset + 4 * ((j0 * kRow) + g * dk), 4 * kRow, n, dk, scale, sAddr);
      softmaxInPlace(scores, n, sinks.length ? sinks[h] : undefined);
      wasm.mix(sAddr, v.byteOffset + 4 * ((j0 * vRow) + g * dv), 4 * vRow, n, dv, oAddr);
      out.set(oBuf, t * oRow + h * dv);
    }
  }
  return true;
}
