/**
 * One job as every thread of the pool runs it: one or more independent items (matrix products, cut into
 * chunks of output rows; or an attention task, cut into chunks of query heads), all chunks numbered in
 * one sequence. Threads take chunks by advancing the job's
 * ticket until none is left and compute each with the kernels' `matmulRange` or `attendHeads`. The main thread and the
 * workers run the same function, so which thread computes a row never changes its value.
 *
 * A job's plan lives in its descriptor half (see ./protocol.ts): the chunk count, the range count, then per
 * row range its first chunk, rows per chunk, first and end row and where its item's encoded objects start.
 */
import { attendHeads, type AttentionTask } from "../kernels/attention.ts";
import { sumExpertRows, type ExpertSum } from "../kernels/expert-sum.ts";
import { swigluRange } from "../kernels/glu.ts";
import { matmulRange, type Activations, type Weight } from "../kernels/matmul.ts";
import { CHUNK_BITS, Desc, MAX_CHUNKS, MAX_RANGES, RANGE_SLOTS, Slot, TAG_MASK } from "./protocol.ts";

/** One product of a job: out[t * w.ne1 + r] = dot(row r of w, activation row t). */
export interface MatmulJobItem {
  kind: "matmul";
  w: Weight;
  act: Activations;
  out: Float32Array;
  /** the expert sum this product is a part of (its out is a block of rows of sum.ye) */
  sum?: SumJob;
}

/**
 * The weighted sum of a MoE layer's expert outputs, done by the job of its down products (every item of
 * the job is a part of it): output columns are counted in groups of `group` (the job's row alignment, so
 * a chunk covers whole groups), and the thread that completes a group's last part sums that group.
 */
export interface SumJob extends ExpertSum {
  nParts: number;
  group: number;
  /** per column group, the parts computed so far (zero before the job) */
  done: Int32Array;
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

/**
 * After a part's rows [r0, r1) are computed: counts them in each of their column groups and sums the
 * groups this completed (consecutive ones in one call). Atomics order the parts' writes before the sum.
 */
export function sumCompletedGroups(s: SumJob, r0: number, r1: number): void {
  const g0 = Math.floor(r0 / s.group);
  const g1 = Math.ceil(r1 / s.group);
  let run = -1;
  for (let g = g0; g <= g1; g++) {
    const complete = g < g1 && Atomics.add(s.done, g, 1) === s.nParts - 1;
    if (complete) {
      if (run < 0) run = g;
    } else if (run >= 0) {
      sumExpertRows(s, run * s.group, Math.min(g * s.group, s.width));
      run = -1;
    }
  }
}

/** rows (heads) and multiply-adds of an item */
export function itemSize(it: JobItem): { rows: number; macs: number } {
  if (it.kind === "matmul") return { rows: it.w.ne1, macs: it.w.ne0 * it.w.ne1 * it.act.nTokens };
  if (it.kind === "glu") return { rows: it.gate.ne1, macs: 2 * it.gate.ne0 * it.gate.ne1 * it.gateAct.nTokens };
  const t = it.task;
  return { rows: t.nHead, macs: t.nHead * t.nTokens * (t.pos0 + (t.nTokens + 1) / 2) * (t.dk + t.dv) };
}

/**
 * How a job's items are cut into chunks: a list of row ranges, each of one item, each cut into chunks of
 * the same number of rows. An item is one range, or two where the job's finer tail chunks start.
 */
export interface Plan {
  nChunks: number;
  /** per range: its item, its first chunk (firstChunk[nRanges] = nChunks), rows per chunk, rows [rowStart, rowEnd) */
  item: number[];
  firstChunk: number[];
  rowsPerChunk: number[];
  rowStart: number[];
  rowEnd: number[];
}

/** the tail's chunks are this many times smaller than the others */
const TAIL_SPLIT = 4;

/**
 * Chunks for a job, in item order: about nThreads * chunksPerThread chunks of equal work, except that the
 * last nThreads such chunks' worth of work is cut TAIL_SPLIT times finer, so the threads run out of work
 * at nearly the same time while the bulk of the job stays in large chunks (each chunk costs a kernel call
 * and its per-call staging). Every item gets at least one chunk. Products are cut at multiples of
 * `rowAlign` rows, so kernels that group rows group them identically whatever the thread count (attention
 * heads: any cut). At most maxChunks chunks in all (or one per item, where that is more).
 */
export function planChunks(items: readonly JobItem[], nThreads: number, chunksPerThread: number, rowAlign: number, maxChunks = MAX_CHUNKS): Plan {
  const sizes = items.map(itemSize);
  const total = sizes.reduce((a, b) => a + b.macs, 0);
  for (let chunkMacs = Math.max(1, total / (nThreads * chunksPerThread)); ; chunkMacs *= 2) {
    const plan = cutItems(items, sizes, Math.max(0, total - nThreads * chunkMacs), chunkMacs, rowAlign);
    // (at TAIL_SPLIT * total every item is one chunk: a limit below the item count cannot be met)
    if (plan.nChunks <= maxChunks || chunkMacs >= TAIL_SPLIT * total) return plan;
  }
}

function cutItems(items: readonly JobItem[], sizes: readonly { rows: number; macs: number }[], tailStart: number, chunkMacs: number, rowAlign: number): Plan {
  const plan: Plan = { nChunks: 0, item: [], firstChunk: [], rowsPerChunk: [], rowStart: [], rowEnd: [] };
  let done = 0;
  for (let i = 0; i < items.length; i++) {
    const { rows, macs } = sizes[i]!;
    const align = items[i]!.kind === "attention" ? 1 : rowAlign;
    const macsPerRow = Math.max(1, macs / Math.max(1, rows));
    // rows of this item before the tail starts, at a multiple of align
    const split = Math.min(rows, Math.max(0, Math.ceil((tailStart - done) / macsPerRow / align) * align));
    if (split > 0) addRange(plan, i, 0, split, rowsFor(chunkMacs, macsPerRow, align));
    if (split < rows || rows === 0) addRange(plan, i, split, rows, rowsFor(chunkMacs / TAIL_SPLIT, macsPerRow, align));
    done += macs;
  }
  plan.firstChunk.push(plan.nChunks);
  return plan;
}

/** rows for a chunk of about `macs` multiply-adds: a positive multiple of align */
function rowsFor(macs: number, macsPerRow: number, align: number): number {
  return Math.max(align, Math.ceil(macs / macsPerRow / align) * align);
}

function addRange(plan: Plan, item: number, r0: number, r1: number, rowsPerChunk: number): void {
  plan.item.push(item);
  plan.firstChunk.push(plan.nChunks);
  plan.rowsPerChunk.push(rowsPerChunk);
  plan.rowStart.push(r0);
  plan.rowEnd.push(r1);
  plan.nChunks += Math.max(1, Math.ceil((r1 - r0) / rowsPerChunk));
}

/** Writes the plan into a descriptor half; item i's objects start at objectAt[i]. */
export function writePlan(half: Float64Array, plan: Plan, objectAt: readonly number[]): void {
  const n = plan.item.length;
  if (n > MAX_RANGES) throw new Error(`pool: ${n} row ranges in one job (at most ${MAX_RANGES})`);
  half[Desc.N_CHUNKS] = plan.nChunks;
  half[Desc.N_RANGES] = n;
  for (let i = 0; i < n; i++) {
    const o = Desc.RANGES + RANGE_SLOTS * i;
    half[o] = plan.firstChunk[i]!;
    half[o + 1] = plan.rowsPerChunk[i]!;
    half[o + 2] = plan.rowStart[i]!;
    half[o + 3] = plan.rowEnd[i]!;
    half[o + 4] = objectAt[plan.item[i]!]!;
  }
}

/**
 * The plan as written by writePlan; its ranges' items are numbered by where their objects start
 * (plan.item[i] is that offset), so ranges of one item share it.
 */
export function readPlan(half: Float64Array): Plan {
  const n = half[Desc.N_RANGES]!;
  if (!(n >= 1 && n <= MAX_RANGES)) throw new Error(`pool worker: bad job range count ${n}`);
  const plan: Plan = { nChunks: half[Desc.N_CHUNKS]!, item: [], firstChunk: [], rowsPerChunk: [], rowStart: [], rowEnd: [] };
  for (let i = 0; i < n; i++) {
    const o = Desc.RANGES + RANGE_SLOTS * i;
    plan.firstChunk.push(half[o]!);
    plan.rowsPerChunk.push(half[o + 1]!);
    plan.rowStart.push(half[o + 2]!);
    plan.rowEnd.push(half[o + 3]!);
    plan.item.push(half[o + 4]!);
  }
  plan.firstChunk.push(plan.nChunks);
  return plan;
}

/**
 * Takes chunk after chunk of job `gen` (the ticket must carry gen's tag) and computes it; returns once the
 * job has no chunk left or the ticket belongs to another job. `item(plan.item[i])` gives range i's item
 * (decoded on first use); `beforeChunk` runs after a chunk is taken.
 */
export function runChunks(i32: Int32Array, gen: number, plan: Plan, item: (id: number) => JobItem, beforeChunk?: () => void): void {
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
    // tickets only grow, so the range index only moves forward
    while (k >= plan.firstChunk[i + 1]!) i++;
    const j = item(plan.item[i]!);
    const r0 = plan.rowStart[i]! + (k - plan.firstChunk[i]!) * plan.rowsPerChunk[i]!;
    const r1 = Math.min(plan.rowEnd[i]!, r0 + plan.rowsPerChunk[i]!);
    if (j.kind === "matmul") {
      matmulRange(j.w, j.act, j.out, j.w.ne1, r0, r1);
      if (j.sum) sumCompletedGroups(j.sum, r0, r1);
    } else if (j.kind === "glu") runGluRows(j, r0, r1);
    else attendHeads(j.task, r0, r1);
    Atomics.add(i32, Slot.PROGRESS, 1);
    Atomics.add(i32, Slot.DONE, 1);
    Atomics.notify(i32, Slot.DONE);
  }
}
