/**
 * One matmul job as every thread of the pool runs it: take chunks of output rows by advancing the job's
 * ticket until none is left, computing each with the kernels' `matmulRange`. The main thread and the
 * workers run the same function, so which thread computes a row never changes its value.
 */
import { matmulRange, type Activations, type Weight } from "../kernels/matmul.ts";
import { CHUNK_BITS, Desc, MAX_CHUNKS, Slot, TAG_MASK } from "./protocol.ts";

export interface Job {
  w: Weight;
  act: Activations;
  out: Float32Array;
}

/** The chunking of a job, as written in its descriptor half. */
export interface Chunking {
  nChunks: number;
  rowsPerChunk: number;
  nRows: number;
}

export function readChunking(half: Float64Array): Chunking {
  return { nChunks: half[Desc.N_CHUNKS]!, rowsPerChunk: half[Desc.ROWS_PER_CHUNK]!, nRows: half[Desc.N_ROWS]! };
}

/** Chunks of `rowsPerChunk` rows (a multiple of `align`, so kernels that group rows group them the same way). */
export function chunking(nRows: number, nThreads: number, chunksPerThread: number, align: number): Chunking {
  let rowsPerChunk = Math.ceil(nRows / (nThreads * chunksPerThread * align)) * align;
  if (Math.ceil(nRows / rowsPerChunk) > MAX_CHUNKS) rowsPerChunk = Math.ceil(nRows / (MAX_CHUNKS * align)) * align;
  return { nChunks: Math.ceil(nRows / rowsPerChunk), rowsPerChunk, nRows };
}

/**
 * Takes chunk after chunk of job `gen` (the ticket must carry gen's tag) and computes it; returns once the
 * job has no chunk left or the ticket belongs to another job. `beforeChunk` runs after a chunk is taken.
 */
export function runChunks(i32: Int32Array, gen: number, c: Chunking, job: () => Job, beforeChunk?: () => void): void {
  const tag = gen & TAG_MASK;
  let j: Job | undefined;
  for (;;) {
    const t = Atomics.load(i32, Slot.TICKET);
    if (t >>> CHUNK_BITS !== tag) return;
    const k = t & MAX_CHUNKS;
    if (k >= c.nChunks) return;
    if (Atomics.compareExchange(i32, Slot.TICKET, t, (t + 1) | 0) !== t) continue;
    Atomics.add(i32, Slot.PROGRESS, 1);
    beforeChunk?.();
    j ??= job();
    const r0 = k * c.rowsPerChunk;
    matmulRange(j.w, j.act, j.out, c.nRows, r0, Math.min(c.nRows, r0 + c.rowsPerChunk));
    Atomics.add(i32, Slot.PROGRESS, 1);
    Atomics.add(i32, Slot.DONE, 1);
    Atomics.notify(i32, Slot.DONE);
  }
}
