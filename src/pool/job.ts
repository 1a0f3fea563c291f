/**
 * One matmul job as every thread of the pool runs it: take chunks of output rows from the shared counter
 * until none is left, computing each with the kernels' `matmulRange`. The main thread and the workers run
 * the same function, so which thread computes a row never changes its value.
 */
import { matmulRange, type Activations, type Weight } from "../kernels/matmul.ts";
import { Slot } from "./protocol.ts";

export interface Job {
  w: Weight;
  act: Activations;
  out: Float32Array;
}

/** Computes chunks of `job` until the shared chunk counter runs out. */
export function runChunks(i32: Int32Array, job: Job): void {
  const nChunks = Atomics.load(i32, Slot.N_CHUNKS);
  const rowsPerChunk = Atomics.load(i32, Slot.ROWS_PER_CHUNK);
  const nRows = Atomics.load(i32, Slot.N_ROWS);
  for (;;) {
    const k = Atomics.add(i32, Slot.NEXT, 1);
    if (k >= nChunks) return;
    const r0 = k * rowsPerChunk;
    matmulRange(job.w, job.act, job.out, nRows, r0, Math.min(nRows, r0 + rowsPerChunk));
    Atomics.add(i32, Slot.DONE, 1);
    Atomics.add(i32, Slot.PROGRESS, 1);
  }
}
