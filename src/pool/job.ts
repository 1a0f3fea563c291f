/**
 * One job as every thread of the pool runs it: one or more independent items (matrix products, cut into
 * chunks of output rows; or an attention task, cut into chunks of query heads), all chunks numbered in
 * one sequence. Threads take chunks by advancing the job's
 * ticket until none is left and compute each with the kernels' `matmulRange` or `attendHeads`. The main thread and the
 * workers run the same function, so which thread computes a row never changes its value.
 *
 * A job's plan lives in its descriptor half (see ./protocol.ts): the chunk count, the item count, then per
 * item its first chunk, rows per chunk, row count and where its encoded objects start.
 */
import { attendHeads, type AttentionTask } from "../kernels/attention.ts";
import { swigluRange } from "../kernels/glu.ts";
import { matmulRange, type Activations, type Weight } from "../kernels/matmul.ts";
import { CHUNK_BITS, Desc, MAX_CHUNKS, MAX_ITEMS, Slot, TAG_MASK } from "./protocol.ts";

/** One product of a job: out[t * w.ne1 + r] = dot(row r of w, activation row t). */
export interface MatmulJobItem {
  kind: "matmul";
  w: Weight;
  act: Activations;
  out: Float32Array;
}

/** An attention task; its "rows" are query heads. */
export interface AttentionJobItem {
  kind: "attention";
  task: AttentionTask;
}

/** Gate and up products of the same rows and SwiGLU on them; its rows are output rows. */
export interface GluJobItem {
  kind: "glu";
  gate: Weight;
  up: Weight;
  gateAct: Activations;
  upAct: Activations;
  outGate: Float32Array;
  outUp: Float32Array;
}

export type JobItem = MatmulJobItem | AttentionJobItem | GluJobItem;

/** Item kinds as written in a descriptor */
export const ItemKind = { matmul: 1, attention: 2, glu: 3 } as const;

/** Rows [r0, r1) of a fused SwiGLU item: both products, then outGate = silu(outGate) * outUp on them. */
export function runGluRows(j: GluJobItem, r0: number, r1: number): void {
  const n = j.gate.ne1;
  matmulRange(j.gate, j.gateAct, j.outGate, n, r0, r1);
  matmulRange(j.up, j.upAct, j.outUp, n, r0, r1);
  for (let t = 0; t < j.gateAct.nTokens; t++) swigluRange(j.outGate, j.outUp, t * n + r0, t * n + r1);
}

/** rows (heads) and multiply-adds of an item */
export function itemSize(it: JobItem): { rows: number; macs: number } {
  if (it.kind === "matmul") return { rows: it.w.ne1, macs: it.w.ne0 * it.w.ne1 * it.act.nTokens };
  if (it.kind === "glu") return { rows: it.gate.ne1, macs: 2 * it.gate.ne0 * it.gate.ne1 * it.gateAct.nTokens };
  const t = it.task;
  return { rows: t.nHead, macs: t.nHead * t.nTokens * (t.pos0 + (t.nTokens + 1) / 2) * (t.dk + t.dv) };
}

/** How a job's items are cut into chunks. */
export interface Plan {
  nChunks: number;
  /** per item: its first chunk (firstChunk[nItems] = nChunks), rows per chunk, row count */
  firstChunk: number[];
  rowsPerChunk: number[];
  nRows: number[];
}

/**
 * Chunks for a job: about nThreads * chunksPerThread in all, shared out between the items in proportion to
 * their multiply-adds (at least one per item); products are cut at multiples of `align` rows, so kernels
 * that group rows group them identically whatever the thread count (attention heads: any cut).
 */
export function planChunks(items: readonly JobItem[], nThreads: number, chunksPerThread: number, rowAlign: number): Plan {
  const sizes = items.map(itemSize);
  const total = sizes.reduce((a, b) => a + b.macs, 0);
  const target = nThreads * chunksPerThread;
  const plan: Plan = { nChunks: 0, firstChunk: [], rowsPerChunk: [], nRows: [] };
  for (const [i, it] of items.entries()) {
    const nRows = sizes[i]!.rows;
    const align = it.kind === "attention" ? 1 : rowAlign;
    const want = Math.max(1, Math.round((target * sizes[i]!.macs) / Math.max(1, total)));
    let rowsPerChunk = Math.ceil(nRows / (want * align)) * align;
    if (Math.ceil(nRows / rowsPerChunk) > MAX_CHUNKS) rowsPerChunk = Math.ceil(nRows / (MAX_CHUNKS * align)) * align;
    plan.firstChunk.push(plan.nChunks);
    plan.rowsPerChunk.push(rowsPerChunk);
    plan.nRows.push(nRows);
    plan.nChunks += Math.max(1, Math.ceil(nRows / rowsPerChunk));
  }
  plan.firstChunk.push(plan.nChunks);
  return plan;
}

/** Writes the plan into a descriptor half; item i's objects start at objectAt[i]. */
export function writePlan(half: Float64Array, plan: Plan, objectAt: readonly number[]): void {
  const n = plan.nRows.length;
  half[Desc.N_CHUNKS] = plan.nChunks;
  half[Desc.N_ITEMS] = n;
  for (let i = 0; i < n; i++) {
    const o = Desc.ITEMS + 4 * i;
    half[o] = plan.firstChunk[i]!;
    half[o + 1] = plan.rowsPerChunk[i]!;
    half[o + 2] = plan.nRows[i]!;
    half[o + 3] = objectAt[i]!;
  }
}

/** The plan (and each item's object offset) as written by writePlan. */
export function readPlan(half: Float64Array): { plan: Plan; objectAt: number[] } {
  const n = half[Desc.N_ITEMS]!;
  if (!(n >= 1 && n <= MAX_ITEMS)) throw new Error(`pool worker: bad job item count ${n}`);
  const plan: Plan = { nChunks: half[Desc.N_CHUNKS]!, firstChunk: [], rowsPerChunk: [], nRows: [] };
  const objectAt: number[] = [];
  for (let i = 0; i < n; i++) {
    const o = Desc.ITEMS + 4 * i;
    plan.firstChunk.push(half[o]!);
    plan.rowsPerChunk.push(half[o + 1]!);
    plan.nRows.push(half[o + 2]!);
    objectAt.push(half[o + 3]!);
  }
  plan.firstChunk.push(plan.nChunks);
  return { plan, objectAt };
}

/**
 * Takes chunk after chunk of job `gen` (the ticket must carry gen's tag) and computes it; returns once the
 * job has no chunk left or the ticket belongs to another job. `item(i)` gives item i (decoded on first
 * use); `beforeChunk` runs after a chunk is taken.
 */
export function runChunks(i32: Int32Array, gen: number, plan: Plan, item: (i: number) => JobItem, beforeChunk?: () => void): void {
  const tag = gen & TAG_MASK;
  let i = 0;
  for (;;) {
    const t = Atomics.load(i32, Slot.TICKET);
    if (t >>> CHUNK_BITS !== tag) return;
    const k = t & MAX_CHUNKS;
    if (k >= plan.nChunks) return;
    if (Atomics.compareExchange(i32, Slot.TICKET, t, (t + 1) | 0) !== t) continue;
    Atomics.add(i32, Slot.PROGRESS, 1);
    beforeChunk?.();
    // tickets only grow, so the item index only moves forward
    while (k >= plan.firstChunk[i + 1]!) i++;
    const j = item(i);
    const nRows = plan.nRows[i]!;
    const r0 = (k - plan.firstChunk[i]!) * plan.rowsPerChunk[i]!;
    const r1 = Math.min(nRows, r0 + plan.rowsPerChunk[i]!);
    if (j.kind === "matmul") matmulRange(j.w, j.act, j.out, nRows, r0, r1);
    else if (j.kind === "glu") runGluRows(j, r0, r1);
    else attendHeads(j.task, r0, r1);
    Atomics.add(i32, Slot.PROGRESS, 1);
    Atomics.add(i32, Slot.DONE, 1);
    Atomics.notify(i32, Slot.DONE);
  }
}
