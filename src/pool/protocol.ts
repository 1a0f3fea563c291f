/**
 * The shared-memory protocol between the pool's main thread and its workers: one control SharedArrayBuffer
 * holding Int32 counters (synchronised with Atomics.wait/notify), the first failure's message, and the
 * job descriptors (weight, activations, output) encoded as Float64 slots (see ./shared-struct.ts).
 * There is no barrier: a thread takes a chunk only by advancing the ticket tagged with the job it read
 * the descriptors of, so a worker that wakes late for a finished job takes nothing, and the main thread
 * only ever waits for chunks that some thread has actually taken.
 * Messages that carry buffers (sent once per buffer) go through a MessagePort per worker; see ControlMessage.
 */

/** Int32 slot indices of the control block */
export const Slot = {
  /** job generation: bumped by the main thread for every job (and for shutdown); workers wait on it */
  GEN: 0,
  /** the next chunk to take, tagged with its job: (gen & TAG_MASK) << CHUNK_BITS | chunk (compareExchange) */
  TICKET: 1,
  /** chunks of the current job finished; the main thread waits on it */
  DONE: 2,
  /** 0, or FailKind of the first failure */
  FAILED: 3,
  /** 1 once the pool shuts down */
  STOP: 4,
  /** messages posted to every worker's port so far */
  MSG_SEQ: 5,
  /** bumped on every chunk taken and finished: the main thread's evidence that workers are alive */
  PROGRESS: 6,
  /** byte length of the failure message */
  ERR_LEN: 7,
  /** workers whose loop is running */
  READY: 8,
} as const;

/**
 * How long an idle thread spins (a worker on the job generation, the main thread on finished chunks)
 * before it sleeps (Atomics.wait). Decode hands the pool a job every ~100 µs with a little serial work in
 * between; a worker that has gone to sleep needs a futex wake-up (tens of µs on a VM) and the calling
 * thread meanwhile takes its chunks alone. On an idle machine 2-thread decode measured faster with a long
 * spin than with a few µs; when other processes share the cores a spinning thread takes CPU from the one
 * with work, so the spin stays short (PoolOptions.spinMs changes it).
 */
export const DEFAULT_SPIN_MS = 1;

/** a job has at most 2^CHUNK_BITS - 1 chunks */
export const CHUNK_BITS = 12;
export const MAX_CHUNKS = (1 << CHUNK_BITS) - 1;
/** generations are told apart modulo 2^20 (a worker would have to sleep through a million jobs to err) */
export const TAG_MASK = (1 << (32 - CHUNK_BITS)) - 1;

export function ticket(gen: number, chunk: number): number {
  return (((gen & TAG_MASK) << CHUNK_BITS) | chunk) | 0;
}

export const FailKind = {
  NONE: 0,
  /** a worker caught an exception */
  THREW: 1,
  /** a worker thread exited */
  EXITED: 2,
} as const;
export type FailKind = (typeof FailKind)[keyof typeof FailKind];

const N_SLOTS = 16;
const ERR_BYTES = 4096;
/**
 * Float64 slots for job descriptors: two halves, used by even and odd generations, so the main thread
 * writes job g + 1 while a late worker may still read job g's half. Each half: chunk count, range count,
 * MAX_RANGES entries of RANGE_SLOTS (per row range of an item: first chunk, rows per chunk, first row, end
 * row, where the item's objects start; see ./job.ts), then the encoded weight, activations and output of
 * each item.
 */
export const DESC_SLOTS = 8192;
export const DESC_HALF = DESC_SLOTS / 2;
/** the most products one job carries (a longer matmulMany is cut into several jobs) */
export const MAX_ITEMS = 64;
/** a job's plan cuts one item in two (where its last, finer chunks start): one range more than items */
export const MAX_RANGES = MAX_ITEMS + 1;
export const RANGE_SLOTS = 5;
export const Desc = { N_CHUNKS: 0, N_RANGES: 1, RANGES: 2, OBJECTS: 2 + RANGE_SLOTS * MAX_RANGES } as const;
/**
 * Slots of an item's header (where the plan's object offset points): its ItemKind, then where its
 * objects are (a product: weight, activations, output, and its expert sum or 0; a fused SwiGLU: gate and up weights, their
 * activations, the two outputs; attention: the task). The objects follow the
 * headers; one passed in several items is written once.
 */
export const ITEM_HEADER = 7;

export function descHalf(desc: Float64Array, gen: number): Float64Array {
  const o = (gen & 1) * DESC_HALF;
  return desc.subarray(o, o + DESC_HALF);
}

const ERR_OFFSET = N_SLOTS * 4;
const DESC_OFFSET = ERR_OFFSET + ERR_BYTES;
const CONTROL_BYTES = DESC_OFFSET + DESC_SLOTS * 8;

/** Views of the control block, built the same way on both sides. */
export interface Control {
  sab: SharedArrayBuffer;
  i32: Int32Array;
  errBytes: Uint8Array;
  desc: Float64Array;
}

export function createControl(): Control {
  return controlViews(new SharedArrayBuffer(CONTROL_BYTES));
}

export function controlViews(sab: SharedArrayBuffer): Control {
  return {
    sab,
    i32: new Int32Array(sab, 0, N_SLOTS),
    errBytes: new Uint8Array(sab, ERR_OFFSET, ERR_BYTES),
    desc: new Float64Array(sab, DESC_OFFSET, DESC_SLOTS),
  };
}

/** Records the first failure (later ones are dropped) and wakes the main thread. */
export function recordFailure(ctl: Control, kind: FailKind, message: string): void {
  if (Atomics.compareExchange(ctl.i32, Slot.FAILED, FailKind.NONE, -1) !== FailKind.NONE) return;
  const bytes = new TextEncoder().encode(message).subarray(0, ctl.errBytes.length);
  // a cut may split a UTF-8 sequence; the decoder replaces it
  ctl.errBytes.set(bytes);
  Atomics.store(ctl.i32, Slot.ERR_LEN, bytes.length);
  Atomics.store(ctl.i32, Slot.FAILED, kind);
  Atomics.add(ctl.i32, Slot.PROGRESS, 1);
  Atomics.notify(ctl.i32, Slot.DONE);
}

export function failureMessage(ctl: Control): string {
  const n = Atomics.load(ctl.i32, Slot.ERR_LEN);
  return new TextDecoder().decode(ctl.errBytes.slice(0, n));
}

/** What a worker's loop receives as its (never-ending) piscina task. */
export interface WorkerTask {
  control: SharedArrayBuffer;
  /** this worker's index (0-based; the main thread is not counted) */
  index: number;
  port: import("node:worker_threads").MessagePort;
  /** the main thread's WebAssembly memories (./memory.ts arenas, in order: weights the WASM kernels read live in them), if WASM is on */
  wasmMemories?: import("../kernels/wasm/webassembly.ts").WasmMemory[];
  /** the main thread's compiled WASM modules (the worker instantiates them instead of compiling its own) */
  wasmModules?: import("../kernels/wasm/shared-modules.ts").CompiledWasm;
  /** how long the worker spins on the job generation before it sleeps (ms) */
  spinMs?: number;
}

/** Test-only faults a worker can be told to produce when it takes its next chunk. */
export type FaultAction = "throw" | "exit" | "hang";

/** Messages on a worker's port; each bumps Slot.MSG_SEQ once and is read before the next job starts. */
export type ControlMessage =
  | { kind: "buffer"; id: number; buffer: SharedArrayBuffer }
  | { kind: "drop"; id: number }
  | { kind: "layout"; id: number; layout: FieldLayout[] }
  | { kind: "fault"; worker: number; action: FaultAction }
  /** every WebAssembly memory of the main thread, in order, when it made new ones since the workers started */
  | { kind: "memories"; memories: import("../kernels/wasm/webassembly.ts").WasmMemory[] };

/** How one field of a flat object is encoded (see ./shared-struct.ts). */
export type FieldLayout =
  | { key: string; kind: "number" }
  | { key: string; kind: "boolean" }
  | { key: string; kind: "view"; ctor: ViewCtorName }
  | { key: string; kind: "const"; value: string | null | undefined };

export const VIEW_CTORS = {
  Uint8Array,
  Int8Array,
  Uint16Array,
  Int16Array,
  Uint32Array,
  Int32Array,
  Float32Array,
  Float64Array,
} as const;
export type ViewCtorName = keyof typeof VIEW_CTORS;
