/**
 * A pool worker's whole life: one piscina task that loops until the pool stops. It first attaches the main
 * thread's WebAssembly memory (so the WASM kernels read the weights in place), then sleeps on the control
 * block's job generation (Atomics.wait, after a short spin), reads the buffers/layouts posted on its port,
 * takes chunks of rows of that job while there are any (./job.ts; it decodes the job's descriptors once it
 * owns a chunk), then sleeps again. Exceptions and thread exit are recorded in the control block with
 * their message so the main thread fails instead of waiting.
 */
import { receiveMessageOnPort } from "node:worker_threads";
import { attachWasmMemories } from "../kernels/wasm/memory.ts";
import { wasmRuntimes } from "../kernels/wasm/runtime.ts";
import { adoptCompiledWasm } from "../kernels/wasm/shared-modules.ts";
import { controlViews, DEFAULT_SPIN_MS, descHalf, FailKind, recordFailure, Slot, type Control, type ControlMessage, type FaultAction, type WorkerTask } from "./protocol.ts";
import { SharedDecoder } from "./shared-struct.ts";
import { ItemKind, readPlan, runChunks, type GluJobItem, type JobItem, type MatmulJobItem, type SumJob } from "./job.ts";
import type { AttentionTask } from "../kernels/attention.ts";


export default function runWorker(task: WorkerTask): string {
  // the WASM kernels must see the main thread's memories, where the weights are
  if (task.wasmMemories) {
    attachWasmMemories(task.wasmMemories);
    if (task.wasmModules) adoptCompiledWasm(task.wasmModules);
    // instantiate the kernels now (compile them, without modules from the main thread), not inside the first
    // chunk, where it would count against the stall timeout
    wasmRuntimes();
  }
  const ctl = controlViews(task.control);
  const { i32 } = ctl;
  const decoder = new SharedDecoder();
  let fault: FaultAction | undefined;
  let stopped = false;
  let msgSeen = 0;

  process.on("exit", (code) => {
    if (!stopped) recordFailure(ctl, FailKind.EXITED, `worker thread ${task.index} exited with code ${code}`);
  });

  const readMessages = (): void => {
    const target = Atomics.load(i32, Slot.MSG_SEQ);
    while (msgSeen < target) {
      const m = receiveMessageOnPort(task.port);
      if (!m) continue; // posted, still in flight
      msgSeen++;
      const msg = m.message as ControlMessage;
      if (decoder.apply(msg)) continue;
      if (msg.kind === "memories") {
        attachWasmMemories(msg.memories);
        wasmRuntimes();
      } else if (msg.kind === "fault" && msg.worker === task.index) fault = msg.action;
    }
  };

  let gen = Atomics.load(i32, Slot.GEN);
  Atomics.add(i32, Slot.READY, 1);
  for (;;) {
    gen = waitForJob(i32, gen, task.spinMs ?? DEFAULT_SPIN_MS);
    if (Atomics.load(i32, Slot.STOP)) {
      stopped = true;
      task.port.close();
      return "stopped";
    }
    try {
      readMessages();
      const half = descHalf(ctl.desc, gen);
      const beforeChunk = (): void => {
        if (fault === undefined) return;
        const action = fault;
        fault = undefined;
        injectFault(action, ctl);
      };
      const plan = readPlan(half);
      // items by where their objects start (the plan's item ids), decoded on first use
      const items = new Map<number, JobItem>();
      const seen = new Map<number, unknown>();
      const item = (at: number): JobItem => {
        let it = items.get(at);
        if (it === undefined) items.set(at, (it = decodeItem(decoder, half, at, seen)));
        return it;
      };
      runChunks(i32, gen, plan, item, beforeChunk);
    } catch (e) {
      recordFailure(ctl, FailKind.THREW, `worker thread ${task.index}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
}

/** Returns the new generation once the main thread has bumped it past `gen`. */
function waitForJob(i32: Int32Array, gen: number, spinMs: number): number {
  const t0 = performance.now();
  for (let i = 1; ; i++) {
    const g = Atomics.load(i32, Slot.GEN);
    if (g !== gen) return g;
    if ((i & 1023) === 0 && performance.now() - t0 > spinMs) break;
  }
  for (;;) {
    Atomics.wait(i32, Slot.GEN, gen);
    const g = Atomics.load(i32, Slot.GEN);
    if (g !== gen) return g;
  }
}

/** Item i of a job from its header; `seen` keeps the objects decoded so far by offset (shared by items). */
function decodeItem(decoder: SharedDecoder, half: Float64Array, at: number, seen: Map<number, unknown>): JobItem {
  const obj = <T>(slot: number): T => {
    const o = half[slot]!;
    let v = seen.get(o) as T | undefined;
    if (v === undefined) seen.set(o, (v = decoder.decode<T>(half, o).value));
    return v;
  };
  if (half[at] === ItemKind.attention) return { kind: "attention", task: obj<AttentionTask>(at + 1) };
  if (half[at] === ItemKind.glu)
    return {
      kind: "glu",
      gate: obj<GluJobItem["gate"]>(at + 1),
      up: obj<GluJobItem["up"]>(at + 2),
      gateAct: obj<GluJobItem["gateAct"]>(at + 3),
      upAct: obj<GluJobItem["upAct"]>(at + 4),
      outGate: obj<{ v: Float32Array }>(at + 5).v,
      outUp: obj<{ v: Float32Array }>(at + 6).v,
    };
  return {
    kind: "matmul",
    w: obj<MatmulJobItem["w"]>(at + 1),
    act: obj<MatmulJobItem["act"]>(at + 2),
    out: obj<{ v: Float32Array }>(at + 3).v,
    sum: half[at + 4] ? obj<SumJob>(at + 4) : undefined,
  };
}

/** Test-only faults (see PoolBackend.injectFault). */
function injectFault(action: FaultAction, ctl: Control): void {
  if (action === "throw") throw new Error("injected fault");
  if (action === "exit") process.exit(7);
  // "hang": stop making progress without failing, until the pool stops
  Atomics.wait(ctl.i32, Slot.STOP, 0);
  throw new Error("stopped while hung");
}
