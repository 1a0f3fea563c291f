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
import { roundToF16 } from "../tensor/f16.ts";
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
  /**
   * 1: the query and the softmax weights are rounded to F16 before their products (ggml's matmuls with an
   * F16 cache and flash attention off); 0: float32 throughout
   */
  roundF16: number;
}

/** first key position a query at position p sees */
export function firstKey(p: number, window: number | undefined): number {
  return window && window > 0 ? Math.max(0, p - window + 1) : 0;
}

/** Runs the task for query heads [h0, h1) of every token. */
export function attendHeads(task: AttentionTask, h0: number, h1: number): void {
  const wasm = isWasmBuffer(task.k.buffer) && isWasmBuffer(task.v.buffer) ? attentionKernels() : undefined;
  runHeads(task, h0, h1, (wasm && wasmHeadOps(task, wasm)) || tsHeadOps(task));
}

/** The two products of one query head, over n keys from a cache offset (in values, not bytes). */
interface HeadOps {
  /** where `score` writes and the softmax runs */
  scores: Float32Array;
  /** scores[j] = f32(q . k_j * scale) for the query at q[qo..] and keys k[ko + j * kRow ..], j < n */
  score(qo: number, ko: number, n: number): void;
  /** sum over j < n of scores[j] * v[vo + j * vRow ..]: the head's output (a view, valid until the next call) */
  mix(vo: number, n: number): Float32Array;
}

function runHeads(task: AttentionTask, h0: number, h1: number, ops: HeadOps): void {
  const { out, qRow, kRow, vRow, oRow, nTokens, pos0, nHead, nHeadKv, dk, dv, window, sinks } = task;
  const group = nHead / nHeadKv;
  for (let t = 0; t < nTokens; t++) {
    const j0 = firstKey(pos0 + t, window);
    const n = pos0 + t + 1 - j0;
    for (let h = h0; h < h1; h++) {
      const g = Math.floor(h / group);
      ops.score(t * qRow + h * dk, j0 * kRow + g * dk, n);
      softmaxInPlace(ops.scores, n, sinks.length ? sinks[h] : undefined);
      if (task.roundF16) for (let j = 0; j < n; j++) ops.scores[j] = roundToF16(ops.scores[j]!);
      out.set(ops.mix(j0 * vRow + g * dv, n), t * oRow + h * dv);
    }
  }
}

function tsHeadOps(task: AttentionTask): HeadOps {
  const { q, k, v, kRow, vRow, pos0, nTokens, dk, dv } = task;
  const sc = f32(task.scale);
  const scores = new Float32Array(pos0 + nTokens);
  const acc = new Float32Array(dv);
  const qh = new Float32Array(dk);
  return {
    scores,
    score(qo, ko, n) {
      qh.set(q.subarray(qo, qo + dk));
      if (task.roundF16) roundToF16InPlace(qh);
      for (let j = 0; j < n; j++) scores[j] = f32(dotLanes(qh, 0, k, ko + j * kRow, dk) * sc);
    },
    mix(vo, n) {
      acc.fill(0);
      for (let j = 0; j < n; j++) {
        const p = scores[j]!;
        const o = vo + j * vRow;
        for (let d = 0; d < dv; d++) acc[d] = acc[d]! + f32(p * v[o + d]!);
      }
      return acc;
    },
  };
}

function roundToF16InPlace(a: Float32Array): void {
  for (let i = 0; i < a.length; i++) a[i] = roundToF16(a[i]!);
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

/** The WASM kernels on this thread's scratch, or undefined (TypeScript then) when it has no scratch space. */
function wasmHeadOps(task: AttentionTask, wasm: NonNullable<ReturnType<typeof attentionKernels>>): HeadOps | undefined {
  const { q, k, v, kRow, vRow, pos0, nTokens, dk, dv, scale } = task;
  const maxKeys = pos0 + nTokens;
  const base = attentionScratch(4 * (dk + dv + maxKeys) + 64);
  if (base === undefined) return undefined;
  const qAddr = base;
  const oAddr = qAddr + 4 * dk;
  const sAddr = oAddr + 4 * dv;
  const buf = wasm.memory.buffer;
  const qBuf = new Float32Array(buf, qAddr, dk);
  const oBuf = new Float32Array(buf, oAddr, dv);
  return {
    scores: new Float32Array(buf, sAddr, maxKeys),
    score(qo, ko, n) {
      qBuf.set(q.subarray(qo, qo + dk));
      if (task.roundF16) roundToF16InPlace(qBuf);
      wasm.scores(qAddr, k.byteOffset + 4 * ko, 4 * kRow, n, dk, scale, sAddr);
    },
    mix(vo, n) {
      wasm.mix(sAddr, v.byteOffset + 4 * vo, 4 * vRow, n, dv, oAddr);
      return oBuf;
    },
  };
}
