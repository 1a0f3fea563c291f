/**
 * The worker-thread matmul backend. Piscina owns the workers' life cycle (spawn, errors, exit); each worker
 * runs one never-ending task (./worker.ts). A matmul is dispatched through shared memory: the main thread
 * quantizes the activations once, writes the job's descriptors into the control block, bumps the job
 * generation (Atomics.notify), takes chunks of output rows itself like any worker, then waits
 * (Atomics.wait) only for chunks other threads took and have not finished: a busy or descheduled worker
 * never holds the main thread back (it then does the work alone). Weights travel by reference: each
 * SharedArrayBuffer (the WebAssembly memory's included) is posted to the workers once.
 * Rows are computed by the same kernel call whichever thread takes them, so results do not depend on the
 * thread count. A worker that throws or exits fails the product it works on (or, if it held no chunk, the
 * next one) with a TsmoeError carrying its message, and every later product; a chunk that makes no progress
 * for stallTimeoutMs fails it too, so nothing waits forever.
 */
import { MessageChannel, type MessagePort, type Worker } from "node:worker_threads";
import { availableParallelism } from "node:os";
import type { Piscina } from "piscina";
import { TsmoeError } from "../errors.ts";
import { WASM_BYTES, type GluItem, type MatmulBackend, type MatmulItem } from "../kernels/backend.ts";
import { sumExpertRows, type ExpertSum } from "../kernels/expert-sum.ts";
import { swigluRange } from "../kernels/glu.ts";
import { attendHeads, type AttentionTask } from "../kernels/attention.ts";
import { matmulRange, quantizeActivations, type Activations, type Weight } from "../kernels/matmul.ts";
import { arenaCount, wasmMemories, wasmMemory } from "../kernels/wasm/memory.ts";
import { compiledWasm } from "../kernels/wasm/shared-modules.ts";
import { typeName, type GGMLType } from "../tensor/types.ts";
import { ItemKind, itemSize, planChunks, runChunks, runGluRows, writePlan, type GluJobItem, type JobItem, type MatmulJobItem, type SumJob } from "./job.ts";
import {
  createControl,
  DEFAULT_SPIN_MS,
  Desc,
  descHalf,
  ITEM_HEADER,
  MAX_ITEMS,
  failureMessage,
  FailKind,
  recordFailure,
  Slot,
  type Control,
  type ControlMessage,
  type FaultAction,
  type WorkerTask,
  ticket,
} from "./protocol.ts";
import { SharedEncoder } from "./shared-struct.ts";

export interface PoolOptions {
  /** products with fewer multiply-adds than this run on the calling thread alone */
  minParallelMacs?: number;
  /** a job during which no thread shows progress for this long fails (a worker died silently) */
  stallTimeoutMs?: number;
  /** tests: the calling thread takes no chunks of parallel products, so the workers compute every row */
  workersOnly?: boolean;
  /** how long an idle worker spins before it sleeps, in ms (default 1; see src/pool/worker.ts) */
  spinMs?: number;
}

/**
 * Below this many multiply-adds a dispatch costs more than it saves: a parallel product costs ~30 µs more
 * than on the calling thread alone (bench/RESULTS.md), and the WASM kernels do ~7 M multiply-adds per
 * millisecond, so splitting pays from ~0.5 M on. At 256 K the embedded model decoded ~25% slower with 2
 * threads than with 1; at 1 M the two are level (every product of a 2048-wide model is above it).
 */
export const DEFAULT_MIN_PARALLEL_MACS = 1 << 20;
const DEFAULT_STALL_TIMEOUT_MS = 60_000;
/** chunk boundaries are multiples of this many rows, so kernels that group rows group them identically */
const ROW_ALIGN = 16;
/** chunks per thread: small enough to balance uneven threads, large enough to keep the counter cold */
const CHUNKS_PER_THREAD = 4;
const WAIT_SLICE_MS = 50;
const START_TIMEOUT_MS = 60_000;
/**
 * The file a worker thread runs: compiled (dist/pool/backend.js) the compiled worker itself; from the
 * TypeScript sources an entry that registers tsx first (worker threads start without the main thread's loader).
 */
const WORKER_FILE = import.meta.url.endsWith(".ts") ? "./worker-entry.mjs" : "./worker.js";

/** The number of threads to use when none is given: one per core. */
export function defaultThreadCount(): number {
  return availableParallelism();
}

/**
 * Starts a pool of nThreads - 1 workers (the calling thread is the nth) and resolves once they all run.
 * nThreads = 1 starts no worker and computes everything on the calling thread with the same kernels.
 */
export async function createPoolBackend(nThreads: number, opts: PoolOptions = {}): Promise<PoolBackend> {
  if (!Number.isInteger(nThreads) || nThreads < 1) throw new TsmoeError(`threads must be a positive integer, got ${nThreads}`);
  const pool = new PoolBackend(nThreads, opts);
  await pool.start();
  return pool;
}

export class PoolBackend implements MatmulBackend {
  readonly memory = WASM_BYTES;
  readonly nThreads: number;
  private readonly nWorkers: number;
  private readonly minParallelMacs: number;
  private readonly stallTimeoutMs: number;
  private readonly workersOnly: boolean;
  private readonly spinMs: number | undefined;
  private readonly ctl: Control = createControl();
  private readonly encoder = new SharedEncoder((msg) => this.broadcast(msg));
  private piscina?: Piscina;
  private ports: MessagePort[] = [];
  private tasks: Promise<unknown>[] = [];
  private msgSeq = 0;
  private stopping = false;
  /** WebAssembly memories the workers have (./memory.ts arenas made later are posted before the next job) */
  private arenasSent = 0;
  /** quantized-activation buffers, reused per weight type and distinct input of a job */
  private readonly actScratch = new Map<string, Activations>();
  private readonly outScratch: Float32Array[] = [];
  /** the column-group counters of expert sums (zeroed before each job that has one) */
  private sumDone = new Int32Array(new SharedArrayBuffer(4));

  constructor(nThreads: number, opts: PoolOptions) {
    this.nThreads = nThreads;
    this.nWorkers = nThreads - 1;
    this.minParallelMacs = opts.minParallelMacs ?? DEFAULT_MIN_PARALLEL_MACS;
    this.stallTimeoutMs = opts.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
    this.workersOnly = opts.workersOnly ?? false;
    this.spinMs = opts.spinMs;
  }

  /** Spawns the workers and waits until each runs its loop (a blocked main thread could not start them). */
  async start(): Promise<void> {
    if (this.nWorkers === 0) return;
    // loaded here, not at start-up: commands that start no worker (--help, -t 1) never load it
    const { Piscina: PiscinaPool } = await import("piscina");
    const piscina = new PiscinaPool({
      filename: new URL(WORKER_FILE, import.meta.url).href,
      minThreads: this.nWorkers,
      maxThreads: this.nWorkers,
      idleTimeout: Number.POSITIVE_INFINITY,
      concurrentTasksPerWorker: 1,
    });
    this.piscina = piscina;
    piscina.on("error", (e: unknown) => this.failFromEventLoop(`worker thread failed: ${messageOf(e)}`));
    let startError: string | undefined;
    // created here if no model made it yet, so that every thread runs the WASM kernels over the same memory
    const memory = wasmMemory();
    const wasmModules = memory ? compiledWasm() : undefined;
    const memories = memory ? wasmMemories() : undefined;
    this.arenasSent = memories?.length ?? 0;
    for (let index = 0; index < this.nWorkers; index++) {
      const { port1, port2 } = new MessageChannel();
      this.ports.push(port1);
      const task: WorkerTask = { control: this.ctl.sab, index, port: port2, wasmMemories: memories, wasmModules, spinMs: this.spinMs };
      const done = piscina.run(task, { transferList: [port2] }).then(
        () => {
          if (!this.stopping) this.failFromEventLoop(`worker thread ${index} stopped`);
        },
        (e: unknown) => {
          startError ??= messageOf(e);
          if (!this.stopping) this.failFromEventLoop(`worker thread ${index} failed: ${messageOf(e)}`);
        },
      );
      this.tasks.push(done);
    }
    const t0 = Date.now();
    while (Atomics.load(this.ctl.i32, Slot.READY) < this.nWorkers) {
      if (startError !== undefined || Date.now() - t0 > START_TIMEOUT_MS) {
        await this.dispose();
        throw new TsmoeError(`could not start worker threads: ${startError ?? "timed out"}`);
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    for (const t of piscina.threads) this.watch(t);
  }

  /** out[t * w.ne1 + r] = dot(row r of w, row t of x) */
  matmul(w: Weight, x: Float32Array, nTokens: number, out: Float32Array): void {
    this.matmulMany([{ w, x, nTokens, out }]);
  }

  /**
   * Independent products in as few dispatches as possible (MAX_ITEMS per job): the activations of each
   * distinct input are quantized once, then every thread takes row chunks of any item.
   */
  matmulMany(items: readonly MatmulItem[]): void {
    checkItems(items);
    this.throwIfFailed();
    for (let i0 = 0; i0 < items.length; i0 += MAX_ITEMS) this.runBatch(items.slice(i0, i0 + MAX_ITEMS));
  }

  /**
   * The products, then the weighted sum of their outputs, in one job: each thread sums the column groups
   * whose last product it computed. More products than a job holds, or buffers that are not shared: the
   * products in several jobs and the sum on this thread afterwards.
   */
  matmulSum(items: readonly MatmulItem[], sum: ExpertSum): void {
    checkItems(items);
    const shared = (a: Float32Array) => a.buffer instanceof SharedArrayBuffer;
    const fused = items.length <= MAX_ITEMS && shared(sum.ye) && shared(sum.out) && items.every((it) => it.w.ne1 === sum.width && shared(it.out));
    if (!fused) {
      this.matmulMany(items);
      sumExpertRows(sum, 0, sum.width);
      return;
    }
    this.throwIfFailed();
    this.runBatch(items, sum);
  }

  /** quantized activations for (x, nTokens, w's type), prepared once per distinct input of a job */
  private activations(w: Weight, x: Float32Array, nTokens: number, seen: { x: Float32Array; nTokens: number; type: GGMLType; act: Activations }[]): Activations {
    let s = seen.find((e) => e.x === x && e.nTokens === nTokens && e.type === w.type && e.act.ne0 === w.ne0);
    if (!s) {
      const key = `${w.type}:${seen.length}`;
      const act = quantizeActivations(w.type, x, nTokens, w.ne0, this.actScratch.get(key));
      this.actScratch.set(key, act);
      s = { x, nTokens, type: w.type, act };
      seen.push(s);
    }
    return s.act;
  }

  /** items (at most MAX_ITEMS) in one job, or on this thread when small; with `sum`, their expert sum too */
  private runBatch(items: readonly MatmulItem[], sum?: ExpertSum): void {
    // quantize each distinct (input, weight type) once, into scratch of its own
    const seen: Parameters<PoolBackend["activations"]>[3] = [];
    const acts = items.map(({ w, x, nTokens }) => this.activations(w, x, nTokens, seen));
    const macs = items.reduce((a, { w, nTokens }) => a + w.ne0 * w.ne1 * nTokens, 0);
    const serial = this.nWorkers === 0 || macs < this.minParallelMacs || (items.length === 1 && items[0]!.w.ne1 < 2 * ROW_ALIGN);
    if (serial) {
      for (const [i, { w, out }] of items.entries()) matmulRange(w, acts[i]!, out, w.ne1, 0, w.ne1);
      if (sum) sumExpertRows(sum, 0, sum.width);
      return;
    }
    const sumJob = sum && this.sumJob(sum, items.length);
    const job: MatmulJobItem[] = items.map(({ w, nTokens, out }, i) => {
      const target = out.buffer instanceof SharedArrayBuffer ? out : this.sharedOut(i, nTokens * w.ne1);
      // an empty range runs the kernel's argument checks here, so a bad call throws without failing the workers
      matmulRange(w, acts[i]!, target, w.ne1, 0, 0);
      return { kind: "matmul", w, act: acts[i]!, out: target, sum: sumJob };
    });
    this.dispatch(job);
    for (const [i, { w, nTokens, out }] of items.entries())
      if (job[i]!.out !== out) out.set(job[i]!.out.subarray(0, nTokens * w.ne1));
  }

  /**
   * Fused gate/up products with SwiGLU: every thread computes both products for its chunk of rows and
   * applies SwiGLU to them, so the activation runs in parallel too.
   */
  swigluMany(items: readonly GluItem[]): void {
    const fused = this.nWorkers > 0 && items.every((it) => it.outGate.buffer instanceof SharedArrayBuffer && it.outUp.buffer instanceof SharedArrayBuffer && it.gate.ne1 === it.up.ne1 && it.gate.ne0 === it.up.ne0);
    if (!fused) {
      this.matmulMany(items.flatMap((it) => [{ w: it.gate, x: it.x, nTokens: it.nTokens, out: it.outGate }, { w: it.up, x: it.x, nTokens: it.nTokens, out: it.outUp }]));
      for (const it of items) swigluRange(it.outGate, it.outUp, 0, it.nTokens * it.gate.ne1);
      return;
    }
    for (const it of items)
      for (const [w, out] of [[it.gate, it.outGate], [it.up, it.outUp]] as const)
        if (it.x.length < it.nTokens * w.ne0 || out.length < it.nTokens * w.ne1)
          throw new TsmoeError(`swiglu: ${typeName(w.type)} weight [${w.ne0} x ${w.ne1}] with ${it.nTokens} tokens needs input ${it.nTokens * w.ne0} and output ${it.nTokens * w.ne1} values, got ${it.x.length} and ${out.length}`);
    this.throwIfFailed();
    for (let i0 = 0; i0 < items.length; i0 += MAX_ITEMS) this.runGluBatch(items.slice(i0, i0 + MAX_ITEMS));
  }

  private runGluBatch(items: readonly GluItem[]): void {
    const seen: Parameters<PoolBackend["activations"]>[3] = [];
    const job: GluJobItem[] = items.map((it) => {
      const gateAct = this.activations(it.gate, it.x, it.nTokens, seen);
      const upAct = this.activations(it.up, it.x, it.nTokens, seen);
      // empty ranges run the kernels' argument checks here, so a bad call throws without failing the workers
      matmulRange(it.gate, gateAct, it.outGate, it.gate.ne1, 0, 0);
      matmulRange(it.up, upAct, it.outUp, it.up.ne1, 0, 0);
      return { kind: "glu", gate: it.gate, up: it.up, gateAct, upAct, outGate: it.outGate, outUp: it.outUp };
    });
    const macs = items.reduce((a, it) => a + 2 * it.gate.ne0 * it.gate.ne1 * it.nTokens, 0);
    if (macs < this.minParallelMacs) {
      for (const j of job) runGluRows(j, 0, j.gate.ne1);
      return;
    }
    this.dispatch(job);
  }

  /** Attention with the query heads split between the threads (on the calling thread alone when small). */
  attention(task: AttentionTask): void {
    this.throwIfFailed();
    const item: JobItem = { kind: "attention", task };
    const { macs } = itemSize(item);
    const shared = [task.q, task.k, task.v, task.out].every((a) => a.buffer instanceof SharedArrayBuffer);
    if (this.nWorkers === 0 || macs < this.minParallelMacs || task.nHead < 2 || !shared) {
      attendHeads(task, 0, task.nHead);
      return;
    }
    this.dispatch([item]);
  }

  allocF32(n: number): Float32Array {
    return new Float32Array(new SharedArrayBuffer(n * 4));
  }

  /** Stops the workers (they finish their loop) and closes the pool. Safe to call more than once. */
  async dispose(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const i32 = this.ctl.i32;
    Atomics.store(i32, Slot.STOP, 1);
    Atomics.add(i32, Slot.GEN, 1);
    Atomics.notify(i32, Slot.GEN);
    Atomics.notify(i32, Slot.STOP);
    const timeout = new Promise((r) => setTimeout(r, 2000).unref());
    await Promise.race([Promise.all(this.tasks), timeout]);
    for (const p of this.ports) p.close();
    await this.piscina?.destroy();
  }

  /**
   * Test hook: makes worker `worker` throw, exit, or stop responding at the start of the next parallel
   * matmul, to check that the failure surfaces as an error instead of a hang.
   */
  injectFault(worker: number, action: FaultAction): void {
    this.broadcast({ kind: "fault", worker, action });
  }

  /** The pool's worker threads (piscina's), for tests. */
  get workerThreads(): readonly Worker[] {
    return this.piscina?.threads ?? [];
  }

  private dispatch(job: readonly JobItem[]): void {
    const { i32, desc } = this.ctl;
    if (arenaCount() > this.arenasSent && this.ports.length > 0) {
      this.arenasSent = arenaCount();
      this.broadcast({ kind: "memories", memories: wasmMemories() });
    }
    const gen = Atomics.load(i32, Slot.GEN) + 1;
    const half = descHalf(desc, gen);
    const plan = planChunks(job, this.nThreads, CHUNKS_PER_THREAD, ROW_ALIGN);
    // per item: its kind and where its objects are; objects passed in several items (the activations
    // up and gate share) are written once
    const objectAt: number[] = [];
    let at: number = Desc.OBJECTS + ITEM_HEADER * job.length;
    const written = new Map<object, number>();
    const put = (obj: object, policy: "stable" | "volatile", tag: number, shape?: string): number => {
      let a = written.get(obj);
      if (a === undefined) {
        a = at;
        at = policy === "stable" ? this.encoder.encodeStable(obj, half, at) : this.encoder.encode(obj, half, at, policy, tag, shape);
        written.set(obj, a);
      }
      return a;
    };
    const putOut = (out: Float32Array, tag: number): number => {
      const a = at;
      at = this.encoder.encodeView(out, half, at, "volatile", tag);
      return a;
    };
    for (const [i, it] of job.entries()) {
      const h = Desc.OBJECTS + ITEM_HEADER * i;
      objectAt.push(h);
      half[h] = ItemKind[it.kind];
      if (it.kind === "attention") {
        half[h + 1] = at;
        at = this.encoder.encode(it.task, half, at, "stable", i, "attention");
      } else if (it.kind === "matmul") {
        half[h + 1] = put(it.w, "stable", i);
        half[h + 2] = put(it.act, "volatile", i, "activations");
        half[h + 3] = putOut(it.out, i);
        half[h + 4] = it.sum ? put(it.sum, "volatile", 0, "expertSum") : 0;
      } else {
        half[h + 1] = put(it.gate, "stable", i);
        half[h + 2] = put(it.up, "stable", i);
        half[h + 3] = put(it.gateAct, "volatile", i, "activations");
        half[h + 4] = put(it.upAct, "volatile", i, "activations");
        half[h + 5] = putOut(it.outGate, i);
        // another tag: both outputs are alive at once (scratch for non-shared data is kept per tag)
        half[h + 6] = putOut(it.outUp, i + MAX_ITEMS);
      }
    }
    writePlan(half, plan, objectAt);

    Atomics.store(i32, Slot.DONE, 0);
    Atomics.store(i32, Slot.TICKET, ticket(gen, 0));
    Atomics.store(i32, Slot.MSG_SEQ, this.msgSeq);
    Atomics.store(i32, Slot.GEN, gen);
    Atomics.notify(i32, Slot.GEN);

    let mainError: unknown;
    try {
      if (!this.workersOnly) runChunks(i32, gen, plan, (i) => job[i]!);
    } catch (e) {
      mainError = e;
    }
    // every chunk is taken now (unless workersOnly); wait for those other threads are still computing
    this.awaitChunks(plan.nChunks);
    if (mainError !== undefined) throw mainError;
    this.throwIfFailed();
  }

  /** Waits until `nChunks` chunks are done, a failure is recorded, or no thread makes progress for too long. */
  private awaitChunks(nChunks: number): void {
    const i32 = this.ctl.i32;
    const spinUntil = performance.now() + (this.spinMs ?? DEFAULT_SPIN_MS);
    let spins = 0;
    let lastProgress = Atomics.load(i32, Slot.PROGRESS);
    let lastChange = 0;
    for (;;) {
      const done = Atomics.load(i32, Slot.DONE);
      if (done >= nChunks || Atomics.load(i32, Slot.FAILED) !== FailKind.NONE) return;
      // spin (like the workers) before sleeping: a chunk usually finishes within the spin
      if (lastChange === 0 && (++spins & 255) !== 0) continue;
      if (lastChange === 0 && performance.now() < spinUntil) continue;
      if (lastChange === 0) lastChange = performance.now();
      Atomics.wait(i32, Slot.DONE, done, WAIT_SLICE_MS);
      const progress = Atomics.load(i32, Slot.PROGRESS);
      const now = performance.now();
      if (progress !== lastProgress) {
        lastProgress = progress;
        lastChange = now;
      } else if (now - lastChange > this.stallTimeoutMs) {
        recordFailure(this.ctl, FailKind.THREW, `worker threads stopped responding (no progress for ${((now - lastChange) / 1000).toFixed(1)} s)`);
        return;
      }
    }
  }

  private throwIfFailed(): void {
    const i32 = this.ctl.i32;
    if (Atomics.load(i32, Slot.FAILED) === FailKind.NONE) return;
    while (Atomics.load(i32, Slot.FAILED) < 0); // a failure is being written
    throw new TsmoeError(failureMessage(this.ctl));
  }

  /** Failures seen by the event loop (between matmuls) fail the next matmul. */
  private failFromEventLoop(message: string): void {
    recordFailure(this.ctl, FailKind.EXITED, message);
  }

  private watch(worker: Worker): void {
    worker.on("exit", (code) => {
      if (!this.stopping) this.failFromEventLoop(`worker thread exited with code ${code}`);
    });
  }

  private broadcast(msg: ControlMessage): void {
    for (const p of this.ports) p.postMessage(msg);
    this.msgSeq++;
  }

  /** the job form of an expert sum over nParts products, its column-group counters zeroed */
  private sumJob(s: ExpertSum, nParts: number): SumJob {
    const nGroups = Math.ceil(s.width / ROW_ALIGN);
    if (this.sumDone.length < nGroups) this.sumDone = new Int32Array(new SharedArrayBuffer(nGroups * 4));
    const done = this.sumDone.subarray(0, nGroups);
    done.fill(0);
    // one object literal: the encoder looks its layout up by shape name
    return { ye: s.ye, width: s.width, nTokens: s.nTokens, maxK: s.maxK, counts: s.counts, rowOf: s.rowOf, weights: s.weights, out: s.out, nParts, group: ROW_ALIGN, done };
  }

  /** shared scratch for the output of item i when the caller's buffer is not shared */
  private sharedOut(i: number, n: number): Float32Array {
    let buf = this.outScratch[i];
    if (!buf || buf.length < n) this.outScratch[i] = buf = this.allocF32(n);
    return buf;
  }
}

function checkItems(items: readonly MatmulItem[]): void {
  for (const { w, x, nTokens, out } of items)
    if (x.length < nTokens * w.ne0 || out.length < nTokens * w.ne1)
      throw new TsmoeError(
        `matmul: ${typeName(w.type)} weight [${w.ne0} x ${w.ne1}] with ${nTokens} tokens needs input ${nTokens * w.ne0} and output ${nTokens * w.ne1} values, got ${x.length} and ${out.length}`,
      );
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
