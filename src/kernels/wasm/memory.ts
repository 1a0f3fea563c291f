/**
 * The one shared WebAssembly memory the WASM kernels work in. WebAssembly code can only address its own
 * linear memory, so weights the kernels should read are allocated inside it (`allocTensorBytes`, used by
 * the GGUF reader): its buffer is a SharedArrayBuffer, tensors are Uint8Array views into it, and worker
 * threads instantiate the kernels over the same memory (`attachWasmMemory`), so nothing is copied.
 *
 * Layout: page 0 holds the allocator's counters and per-thread probe slots, then the f16 -> f32 table
 * (./layout.ts), then a bump-allocated heap (64-byte aligned). wasm32 addresses at most
 * 4 GiB: once that is used up, `allocTensorBytes` hands out plain SharedArrayBuffers (the TypeScript
 * kernels then run for those tensors). `freeTensorBytes` gives a tensor's range back (Model.dispose does it
 * for every tensor), so a process that loads models one after another (bench and tradeoff grids) reuses
 * the same space. Freed ranges are kept on the thread that allocates tensors (the main thread) and reused
 * first-fit; worker threads only bump-allocate their scratch space.
 *
 * Set TSMOE_WASM=0 to keep everything in plain SharedArrayBuffers (TypeScript kernels only).
 */
import { F16_TO_F32 } from "../../tensor/f16.ts";
import { F16_TABLE_ADDR } from "./layout.ts";
import { Wasm, type WasmMemory } from "./webassembly.ts";

const PAGE = 65536;
/** wasm32: 65536 pages of 64 KiB */
export const MAX_PAGES = 65536;
/** Int32 slots in page 0 */
const SLOT_BUMP = 0; // next free address / 64
const SLOT_PROBES = 1; // probe slots handed out so far
const SLOT_READY = 2; // 1 once initialised
const PROBE_BASE = 1024; // 8 bytes per probe slot
const N_PROBES = 4096;
const HEAP_START = F16_TABLE_ADDR + 65536 * 4;
const ALIGN = 64;
/** 64 MiB */
const GROW_PAGES = 1024;

let memory: WasmMemory | undefined;
/** this thread's probe slot (an address in page 0) */
let probeAddr = 0;
let disabled = process.env.TSMOE_WASM === "0";

export function wasmDisabled(): boolean {
  return disabled;
}

/** Turns the WASM path off for this thread (e.g. when the module fails to validate). */
export function disableWasm(): void {
  disabled = true;
}

function header(): Int32Array {
  return new Int32Array(memory!.buffer, 0, PAGE / 4);
}

function takeProbeSlot(): void {
  probeAddr = PROBE_BASE + 8 * (Atomics.add(header(), SLOT_PROBES, 1) % N_PROBES);
}

/** This thread's shared memory (created on first use; worker threads should attach the main thread's instead); undefined if WASM is off. */
export function wasmMemory(): WasmMemory | undefined {
  if (memory || disabled) return memory;
  if (!Wasm) {
    disabled = true;
    return undefined;
  }
  try {
    memory = new Wasm.Memory({ initial: HEAP_START / PAGE, maximum: MAX_PAGES, shared: true });
  } catch {
    disabled = true;
    return undefined;
  }
  new Float32Array(memory.buffer, F16_TABLE_ADDR, 65536).set(F16_TO_F32);
  const h = header();
  h[SLOT_BUMP] = HEAP_START / ALIGN;
  Atomics.store(h, SLOT_READY, 1);
  takeProbeSlot();
  return memory;
}

/** The memory if this thread has one already (made by wasmMemory or attached), without making one. */
export function currentWasmMemory(): WasmMemory | undefined {
  return memory;
}

/** In a worker thread: use the main thread's memory (posted to the worker: shared memories pass by reference). */
export function attachWasmMemory(m: WasmMemory): void {
  if (memory === m) return;
  if (!(m.buffer instanceof SharedArrayBuffer) || Atomics.load(new Int32Array(m.buffer, 0, 4), SLOT_READY) !== 1) {
    throw new Error("attachWasmMemory: not a memory made by wasmMemory()");
  }
  memory = m;
  aliasCache = new WeakMap();
  takeProbeSlot();
}

/**
 * Reserves n bytes (64-byte aligned) in the shared memory, growing it as needed; returns the address, or
 * undefined when the memory is off or the 4 GiB address space is used up. Safe to call from any thread.
 */
export function wasmAlloc(n: number): number | undefined {
  const m = wasmMemory();
  if (!m) return undefined;
  const units = Math.max(1, Math.ceil(n / ALIGN));
  const reused = takeFreeRange(units);
  if (reused !== undefined) {
    // fresh memory from grow() is zero; a reused range must be made so
    new Uint8Array(m.buffer, reused * ALIGN, units * ALIGN).fill(0);
    return reused * ALIGN;
  }
  const h = header();
  let start: number;
  for (;;) {
    const cur = Atomics.load(h, SLOT_BUMP);
    if ((cur + units) * ALIGN > MAX_PAGES * PAGE) return undefined;
    if (Atomics.compareExchange(h, SLOT_BUMP, cur, cur + units) === cur) {
      start = cur * ALIGN;
      break;
    }
  }
  const end = start + units * ALIGN;
  while (m.buffer.byteLength < end) {
    const have = m.buffer.byteLength / PAGE;
    // at least GROW_PAGES at a time (untouched pages cost no RAM), so a model's tensors share few buffers
    const want = Math.min(MAX_PAGES, Math.max(Math.ceil(end / PAGE), have + GROW_PAGES));
    try {
      m.grow(want - have);
    } catch {
      // another thread may have grown it meanwhile; otherwise the system refused the memory
      if (m.buffer.byteLength < end) return undefined;
    }
  }
  return start;
}

/** Ranges given back by freeTensorBytes, in units of ALIGN bytes, sorted by start, never adjacent. */
const freeRanges: { start: number; units: number }[] = [];

/** First fit from the free ranges; returns the start unit or undefined. */
function takeFreeRange(units: number): number | undefined {
  for (let i = 0; i < freeRanges.length; i++) {
    const r = freeRanges[i]!;
    if (r.units < units) continue;
    const start = r.start;
    if (r.units === units) freeRanges.splice(i, 1);
    else {
      r.start += units;
      r.units -= units;
    }
    return start;
  }
  return undefined;
}

/** Adds a range to the free list, merging it with its neighbours. */
function addFreeRange(start: number, units: number): void {
  let i = 0;
  while (i < freeRanges.length && freeRanges[i]!.start < start) i++;
  const prev = freeRanges[i - 1];
  const next = freeRanges[i];
  if ((prev && prev.start + prev.units > start) || (next && start + units > next.start))
    throw new Error(`freeTensorBytes: range at ${start * ALIGN} is already free`);
  if (prev && prev.start + prev.units === start) {
    prev.units += units;
    if (next && prev.start + prev.units === next.start) {
      prev.units += next.units;
      freeRanges.splice(i, 1);
    }
  } else if (next && start + units === next.start) {
    next.start = start;
    next.units += units;
  } else freeRanges.splice(i, 0, { start, units });
}

/** Bytes currently on the free list (for tests and diagnostics). */
export function wasmFreeBytes(): number {
  return freeRanges.reduce((a, r) => a + r.units * ALIGN, 0);
}

/**
 * n bytes for tensor data, zero-filled and SharedArrayBuffer-backed: inside the WASM memory when it is on
 * and has room, else a SharedArrayBuffer of their own. Throws RangeError when neither can be had.
 */
export function allocTensorBytes(n: number): Uint8Array {
  const addr = n > 0 ? wasmAlloc(n) : undefined;
  if (addr !== undefined) return new Uint8Array(memory!.buffer, addr, n);
  return new Uint8Array(new SharedArrayBuffer(n));
}

/**
 * Gives back the space of a tensor made by allocTensorBytes on this thread (a no-op for tensors in a
 * SharedArrayBuffer of their own). The view must not be used afterwards.
 */
export function freeTensorBytes(data: Uint8Array): void {
  if (!memory || data.length === 0 || !isWasmBuffer(data.buffer)) return;
  addFreeRange(data.byteOffset / ALIGN, Math.max(1, Math.ceil(data.length / ALIGN)));
}

let aliasCache = new WeakMap<ArrayBufferLike, boolean>();

/**
 * Whether `buffer` is (a view of) this thread's WASM memory, so its byte offsets are WASM addresses. A
 * SharedArrayBuffer posted from another thread is a different object over the same memory, so identity
 * does not tell: a value written through the memory must show through the buffer.
 */
export function isWasmBuffer(buffer: ArrayBufferLike): boolean {
  if (!memory) return false;
  const known = aliasCache.get(buffer);
  if (known !== undefined) return known;
  let alias = false;
  const own = memory.buffer;
  if (buffer === own) alias = true;
  else if (buffer instanceof SharedArrayBuffer && buffer.byteLength >= HEAP_START && buffer.byteLength <= own.byteLength) {
    const mine = new Int32Array(own, probeAddr, 2);
    const theirs = new Int32Array(buffer, probeAddr, 2);
    alias = true;
    for (let k = 0; k < 2 && alias; k++) {
      const v = (Math.random() * 0x7fffffff) | 0;
      Atomics.store(mine, k, v);
      alias = Atomics.load(theirs, k) === v;
    }
  }
  aliasCache.set(buffer, alias);
  return alias;
}
