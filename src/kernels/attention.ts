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
 * key order. The WASM SIMD kernels (./wasm/attention-kernels.ts, softmax included: its exp has the bits
 * of Math.exp) run when the cache lives in the WASM memory and give the same bits as the TypeScript loops
 * here.
 */
import { roundToF16 } from "../tensor/f16.ts";
import { firstKey, FLASH_NONE, type AttentionTask } from "./attention-task.ts";
import { FA_TILE_Q, flashHeads } from "./flash-attention.ts";
import { softmaxInPlace } from "./softmax.ts";
import { MAX_QUERIES, attentionKernels, attentionScratch } from "./wasm/attention-kernels.ts";
import { isWasmBuffer } from "./wasm/memory.ts";

const f32 = Math.fround;

export { firstKey, type AttentionTask };

/**
 * Runs the task for query heads [h0, h1) of every token. Up to `maxQueries` queries go through the keys
 * together (the query heads of one token that share a KV head, or, without grouped-query attention or a
 * window, one head of consecutive tokens over their common keys); every query's result is the same for
 * any maxQueries. A flash task (an F16 cache with flash attention) below 64 queries runs llama.cpp's
 * one-query flash kernel instead (./flash-attention.ts; at 64 and more its tiles equal float32 attention up
 * to summation order, which is what runs then).
 */
export function attendHeads(task: AttentionTask, h0: number, h1: number, maxQueries = MAX_QUERIES): void {
  if (task.flash !== FLASH_NONE && task.nTokens < FA_TILE_Q) return flashHeads(task, h0, h1);
  const wasm = isWasmBuffer(task.k.buffer) && isWasmBuffer(task.v.buffer) ? attentionKernels() : undefined;
  const m = Math.max(1, Math.min(maxQueries, MAX_QUERIES));
  runHeads(task, h0, h1, m, (wasm && wasmHeadOps(task, wasm, m)) || tsHeadOps(task, m));
}

/**
 * The two products for up to MAX_QUERIES queries held in slots: slot i has its query, its scores (indexed
 * by key, from the first key of the call's cache offset) and its output. Offsets are in values, not bytes.
 */
interface HeadOps {
  /** softmaxInPlace (./softmax.ts) of slot i's first n scores (then rounded to F16 with task.roundF16) */
  softmax(i: number, n: number, sink: number | undefined): void;
  /** puts the query at q[qo..] into slot i */
  setQuery(i: number, qo: number): void;
  /** scores[i][j] = f32(q_i . k_j * scale) for slots s <= i < s + m, keys j0 <= j < j1 at k[ko + j * kRow ..] */
  score(s: number, m: number, ko: number, j0: number, j1: number): void;
  /** slots s..s+m-1: out_i (= 0 unless `more`) += sum over j0 <= j < j1 of scores[i][j] * v[vo + j * vRow ..] */
  mix(s: number, m: number, vo: number, j0: number, j1: number, more: boolean): void;
  /** slot i's output (a view, valid until the next call) */
  out(i: number): Float32Array;
}

function runHeads(task: AttentionTask, h0: number, h1: number, maxQ: number, ops: HeadOps): void {
  const { out, qRow, kRow, vRow, oRow, nTokens, pos0, nHead, nHeadKv, dk, dv, window, sinks } = task;
  const group = nHead / nHeadKv;
  const sink = (h: number) => (sinks.length ? sinks[h] : undefined);
  if (group === 1 && !window && maxQ > 1) {
    // one head of consecutive tokens: the common keys together, each token's further keys alone
    for (let t = 0; t < nTokens; t += maxQ) {
      const m = Math.min(maxQ, nTokens - t);
      const n0 = pos0 + t + 1;
      for (let h = h0; h < h1; h++) {
        for (let i = 0; i < m; i++) ops.setQuery(i, (t + i) * qRow + h * dk);
        ops.score(0, m, h * dk, 0, n0);
        for (let i = 1; i < m; i++) ops.score(i, 1, h * dk, n0, n0 + i);
        for (let i = 0; i < m; i++) ops.softmax(i, n0 + i, sink(h));
        ops.mix(0, m, h * dv, 0, n0, false);
        for (let i = 1; i < m; i++) ops.mix(i, 1, h * dv, n0, n0 + i, true);
        for (let i = 0; i < m; i++) out.set(ops.out(i), (t + i) * oRow + h * dv);
      }
    }
    return;
  }
  for (let t = 0; t < nTokens; t++) {
    const j0 = firstKey(pos0 + t, window);
    const n = pos0 + t + 1 - j0;
    // the heads of one KV head, maxQ at a time
    for (let h = h0; h < h1; ) {
      const g = Math.floor(h / group);
      const m = Math.min(maxQ, h1 - h, (g + 1) * group - h);
      for (let i = 0; i < m; i++) ops.setQuery(i, t * qRow + (h + i) * dk);
      ops.score(0, m, j0 * kRow + g * dk, 0, n);
      for (let i = 0; i < m; i++) ops.softmax(i, n, sink(h + i));
      ops.mix(0, m, j0 * vRow + g * dv, 0, n, false);
      for (let i = 0; i < m; i++) out.set(ops.out(i), t * oRow + (h + i) * dv);
      h += m;
    }
  }
}

function tsHeadOps(task: AttentionTask, maxQ: number): HeadOps {
  const { q, k, v, kRow, vRow, pos0, nTokens, dk, dv } = task;
  const sc = f32(task.scale);
  const scores = Array.from({ length: maxQ }, () => new Float32Array(pos0 + nTokens));
  const acc = Array.from({ length: maxQ }, () => new Float32Array(dv));
  const qh = Array.from({ length: maxQ }, () => new Float32Array(dk));
  return {
    softmax(i, n, sink) {
      softmaxInPlace(scores[i]!, n, sink);
      if (task.roundF16) roundToF16InPlace(scores[i]!, n);
    },
    setQuery(i, o) {
      qh[i]!.set(q.subarray(o, o + dk));
      if (task.roundF16) roundToF16InPlace(qh[i]!, dk);
    },
    score(s, m, ko, j0, j1) {
      for (let i = s; i < s + m; i++) for (let j = j0; j < j1; j++) scores[i]![j] = f32(dotLanes(qh[i]!, 0, k, ko + j * kRow, dk) * sc);
    },
    mix(s, m, vo, j0, j1, more) {
      for (let i = s; i < s + m; i++) {
        const a = acc[i]!, p = scores[i]!;
        if (!more) a.fill(0);
        for (let j = j0; j < j1; j++) {
          const pj = p[j]!;
          const o = vo + j * vRow;
          for (let d = 0; d < dv; d++) a[d] = a[d]! + f32(pj * v[o + d]!);
        }
      }
    },
    out: (i) => acc[i]!,
  };
}

/** a[i] = roundToF16(a[i]) for i < n */
function roundToF16InPlace(a: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) a[i] = roundToF16(a[i]!);
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
function wasmHeadOps(task: AttentionTask, wasm: NonNullable<ReturnType<typeof attentionKernels>>, maxQ: number): HeadOps | undefined {
  const { q, k, v, kRow, vRow, pos0, nTokens, dk, dv, scale } = task;
  const maxKeys = pos0 + nTokens;
  // scratch: maxQ queries, outputs and score rows
  const base = attentionScratch(4 * maxQ * (dk + dv + maxKeys) + 64);
  if (base === undefined) return undefined;
  const qAddr = base;
  const oAddr = qAddr + 4 * maxQ * dk;
  const sAddr = oAddr + 4 * maxQ * dv;
  const buf = wasm.memory.buffer;
  const qBuf = new Float32Array(buf, qAddr, maxQ * dk);
  const outs = Array.from({ length: maxQ }, (_, i) => new Float32Array(buf, oAddr + 4 * i * dv, dv));
  const sRow = 4 * maxKeys;
  const scoreRows = Array.from({ length: maxQ }, (_, i) => new Float32Array(buf, sAddr + i * sRow, maxKeys));
  return {
    softmax(i, n, sink) {
      wasm.softmax(sAddr + i * sRow, n, sink === undefined ? 0 : 1, sink ?? 0);
      if (task.roundF16) roundToF16InPlace(scoreRows[i]!, n);
    },
    setQuery(i, o) {
      qBuf.set(q.subarray(o, o + dk), i * dk);
      if (task.roundF16) roundToF16InPlace(qBuf.subarray(i * dk), dk);
    },
    score(s, m, ko, j0, j1) {
      wasm.scores[m - 1]!(qAddr + 4 * s * dk, 4 * dk, k.byteOffset + 4 * (ko + j0 * kRow), 4 * kRow, j1 - j0, dk, scale, sAddr + s * sRow + 4 * j0, sRow);
    },
    mix(s, m, vo, j0, j1, more) {
      wasm.mix[m - 1]!(sAddr + s * sRow + 4 * j0, sRow, v.byteOffset + 4 * (vo + j0 * vRow), 4 * vRow, j1 - j0, dv, oAddr + 4 * s * dv, 4 * dv, more ? 1 : 0);
    },
    out: (i) => outs[i]!,
  };
}
