/**
 * The shared WebAssembly memories the WASM kernels work in ("arenas"). WebAssembly code can only address
 * its own linear memory, and wasm32 addresses at most 4 GiB, so a process has one or more memories: the
 * primary one (arena 0: KV caches, activation staging, the attention and quantization kernels' scratch,
 * and the weights of models that fit in it with room to spare) and, for larger models, weight arenas of
 * their own, each holding whole tensors and the scratch of the threads that run kernels on them. Kernels
 * are instantiated per thread and arena (./runtime.ts); an activation row is copied into the arena of the
 * weight it meets.
 *
 * Buffers are SharedArrayBuffers, tensors are Uint8Array views into them, and worker threads attach the
 * main thread's arenas (`attachWasmMemories`), so nothing is copied. Where a weight goes is decided by a
 * `WeightAllocator` (`weightAllocator(totalBytes)`, used by the GGUF reader through the loader); a tensor
 * larger than an arena lands in a SharedArrayBuffer of its own and runs on the TypeScript kernels, which
 * the loader reports (src/model/kernel-report.ts).
 *
 * Layout of every arena: page 0 holds its counters, per-thread probe slots and the E8M0 scale table, then the f16 -> f32 table
 * (./layout.ts), then a bump-allocated heap (64-byte aligned). `freeTensorBytes` gives a tensor's range
 * back (Model.dispose does it for every tensor), so a process that loads models one after another reuses
 * the space. Freed ranges are kept on the thread that allocates tensors (the main thread) and reused
 * first-fit; worker threads only bump-allocate their scratch space.
 *
 * Set TSMOE_WASM=0 to keep everything in plain SharedArrayBuffers (TypeScript kernels only), and
 * TSMOE_WASM_ARENA_MB to make arenas smaller than 4 GiB (tests and benchmarks of the multi-arena layout).
 */
import { F16_TO_F32 } from "../../tensor/f16.ts";
import { e8m0Half } from "../../tensor/decode.ts";
import { E8M0_TABLE_ADDR, F16_TABLE_ADDR } from "./layout.ts";
import { Wasm, type WasmMemory } from "./webassembly.ts";

const PAGE = 65536;
/** wasm32: 65536 pages of 64 KiB */
export const MAX_PAGES = 65536;
/** Int32 slots in page 0 of every arena */
const SLOT_BUMP = 0; // next free address / 64
const SLOT_PROBES = 1; // probe slots handed out so far
const SLOT_READY = 2; // 1 once initialised
const SLOT_LIMIT = 3; // the arena's size limit / 64
const PROBE_BASE = 1024; // 8 bytes per probe slot
const N_PROBES = 4096;
const HEAP_START = F16_TABLE_ADDR + 65536 * 4;
if (PROBE_BASE + 8 * N_PROBES > E8M0_TABLE_ADDR) throw new Error("memory: the probe slots overlap the E8M0 table");
const ALIGN = 64;
/** 64 MiB */
const GROW_PAGES = 1024;
/**
 * Room a weight arena keeps for the kernels' scratch (activations, tiles, outputs of a chunk of rows):
 * tensors fill an arena up to its size minus this.
 */
const MAX_SCRATCH_RESERVE = 256 << 20;
/** Room the primary arena keeps for KV caches and scratch when it also holds a model's weights. */
const MAX_PRIMARY_RESERVE = 1 << 30;

interface Arena {
  readonly index: number;
  readonly memory: WasmMemory;
  /** this thread's probe slot in the arena's page 0 */
  readonly probeAddr: number;
  /** ranges given back by freeTensorBytes, in units of ALIGN bytes, sorted by start, never adjacent (main thread) */
  readonly free: { start: number; units: number }[];
}

/** This thread's arenas, in the order the main thread made them (index 0: the primary memory). */
const arenas: Arena[] = [];
let disabled = process.env.TSMOE_WASM === "0";
/** size limit of arenas made from now on */
let arenaBytes = envArenaBytes();

function envArenaBytes(): number {
  const mb = Number(process.env.TSMOE_WASM_ARENA_MB);
  const full = MAX_PAGES * PAGE;
  if (!process.env.TSMOE_WASM_ARENA_MB || !Number.isFinite(mb) || mb <= 0) return full;
  return Math.min(full, Math.max(HEAP_START + PAGE, Math.floor((mb * 2 ** 20) / PAGE) * PAGE));
}

export function wasmDisabled(): boolean {
  return disabled;
}

/** Turns the WASM path off for this thread (e.g. when the module fails to validate). */
export function disableWasm(): void {
  disabled = true;
}

/**
 * Sets the size of arenas made from now on (tests: a model spread over several small arenas computes the
 * same bits as in one). Rounded to whole pages; at most 4 GiB.
 */
export function setArenaBytes(bytes: number): void {
  arenaBytes = Math.min(MAX_PAGES * PAGE, Math.max(HEAP_START + PAGE, Math.floor(bytes / PAGE) * PAGE));
}

function header(m: WasmMemory): Int32Array {
  return new Int32Array(m.buffer, 0, PAGE / 4);
}

function addArena(memory: WasmMemory): Arena {
  const probeAddr = PROBE_BASE + 8 * (Atomics.add(header(memory), SLOT_PROBES, 1) % N_PROBES);
  const arena: Arena = { index: arenas.length, memory, probeAddr, free: [] };
  arenas.push(arena);
  aliasCache = new WeakMap();
  return arena;
}

/** A new arena (main thread), or undefined when the system refuses the memory. */
function newArena(): Arena | undefined {
  if (!Wasm) return undefined;
  let memory: WasmMemory;
  try {
    memory = new Wasm.Memory({ initial: HEAP_START / PAGE, maximum: MAX_PAGES, shared: true });
  } catch {
    return undefined;
  }
  new Float32Array(memory.buffer, F16_TABLE_ADDR, 65536).set(F16_TO_F32);
  new Float64Array(memory.buffer, E8M0_TABLE_ADDR, 256).set(Array.from({ length: 256 }, (_, e) => e8m0Half(e)));
  const h = header(memory);
  h[SLOT_BUMP] = HEAP_START / ALIGN;
  h[SLOT_LIMIT] = arenaBytes / ALIGN;
  Atomics.store(h, SLOT_READY, 1);
  return addArena(memory);
}

function primary(): Arena | undefined {
  if (arenas.length > 0) return arenas[0];
  if (disabled) return undefined;
  const a = newArena();
  if (!a) disabled = true;
  return a;
}

/** This thread's primary memory (created on first use; worker threads attach the main thread's instead); undefined if WASM is off. */
export function wasmMemory(): WasmMemory | undefined {
  return primary()?.memory;
}

/** The primary memory if this thread has one already (made by wasmMemory or attached), without making one. */
export function currentWasmMemory(): WasmMemory | undefined {
  return arenas[0]?.memory;
}

/** Every arena's memory, in order (to post to worker threads). */
export function wasmMemories(): WasmMemory[] {
  return arenas.map((a) => a.memory);
}

/** How many arenas this thread has. */
export function arenaCount(): number {
  return arenas.length;
}

/** In a worker thread: use the main thread's primary memory (posted to the worker: shared memories pass by reference). */
export function attachWasmMemory(m: WasmMemory): void {
  if (arenas[0]?.memory === m) return;
  if (arenas.length > 0) throw new Error("attachWasmMemory: this thread has a memory already");
  attachWasmMemories([m]);
}

/**
 * In a worker thread: attach the main thread's arenas (all of them, in order, as wasmMemories() gives
 * them); those attached before are kept, the new ones at the end are added.
 */
export function attachWasmMemories(ms: readonly WasmMemory[]): void {
  for (let i = arenas.length; i < ms.length; i++) {
    const m = ms[i]!;
    if (!(m.buffer instanceof SharedArrayBuffer) || Atomics.load(new Int32Array(m.buffer, 0, 4), SLOT_READY) !== 1) {
      throw new Error("attachWasmMemory: not a memory made by wasmMemory()");
    }
    addArena(m);
  }
}

/** Bump-allocates `units` in an arena up to `cap` units, growing it as needed; undefined when it has no room. */
function bump(a: Arena, units: number, cap: number): number | undefined {
  const h = header(a.memory);
  let start: number;
  for (;;) {
    const cur = Atomics.load(h, SLOT_BUMP);
    if (cur + units > cap) return undefined;
    if (Atomics.compareExchange(h, SLOT_BUMP, cur, cur + units) === cur) {
      start = cur * ALIGN;
      break;
    }
  }
  const end = start + units * ALIGN;
  const m = a.memory;
  const limitPages = (Atomics.load(h, SLOT_LIMIT) * ALIGN) / PAGE;
  while (m.buffer.byteLength < end) {
    const have = m.buffer.byteLength / PAGE;
    // at least GROW_PAGES at a time (untouched pages cost no RAM), so a model's tensors share few buffers
    const want = Math.min(limitPages, Math.max(Math.ceil(end / PAGE), have + GROW_PAGES));
    try {
      m.grow(want - have);
    } catch {
      // another thread may have grown it meanwhile; otherwise the system refused the memory
      if (m.buffer.byteLength < end) return undefined;
    }
  }
  return start;
}

function limitUnits(a: Arena): number {
  return Atomics.load(header(a.memory), SLOT_LIMIT);
}

/**
 * Reserves n bytes (64-byte aligned) in an arena (default: the primary one), growing it as needed;
 * returns the address, or undefined when the memory is off or the arena is full. Safe to call from any thread.
 */
export function wasmAlloc(n: number, arena = 0): number | undefined {
  const a = arena === 0 ? primary() : arenas[arena];
  if (!a) return undefined;
  const units = Math.max(1, Math.ceil(n / ALIGN));
  const reused = takeFreeRange(a, units);
  if (reused !== undefined) return reused;
  return bump(a, units, limitUnits(a));
}

/** First fit from an arena's free ranges, zero-filled; returns the address or undefined. */
function takeFreeRange(a: Arena, units: number): number | undefined {
  const free = a.free;
  for (let i = 0; i < free.length; i++) {
    const r = free[i]!;
    if (r.units < units) continue;
    const start = r.start;
    if (r.units === units) free.splice(i, 1);
    else {
      r.start += units;
      r.units -= units;
    }
    // fresh memory from grow() is zero; a reused range must be made so
    new Uint8Array(a.memory.buffer, start * ALIGN, units * ALIGN).fill(0);
    return start * ALIGN;
  }
  return undefined;
}

/** Adds a range to an arena's free list, merging it with its neighbours. */
function addFreeRange(a: Arena, start: number, units: number): void {
  const free = a.free;
  let i = 0;
  while (i < free.length && free[i]!.start < start) i++;
  const prev = free[i - 1];
  const next = free[i];
  if ((prev && prev.start + prev.units > start) || (next && start + units > next.start))
    throw new Error(`freeTensorBytes: range at ${start * ALIGN} is already free`);
  if (prev && prev.start + prev.units === start) {
    prev.units += units;
    if (next && prev.start + prev.units === next.start) {
      prev.units += next.units;
      free.splice(i, 1);
    }
  } else if (next && start + units === next.start) {
    next.start = start;
    next.units += units;
  } else free.splice(i, 0, { start, units });
}

/** Bytes currently on the free lists (for tests and diagnostics). */
export function wasmFreeBytes(): number {
  return arenas.reduce((s, a) => s + a.free.reduce((t, r) => t + r.units * ALIGN, 0), 0);
}

/** A view of `n` bytes at `addr` of an arena. */
function view(a: Arena, addr: number, n: number): Uint8Array {
  return new Uint8Array(a.memory.buffer, addr, n);
}

/**
 * n bytes for tensor data, zero-filled and SharedArrayBuffer-backed: inside the primary WASM memory when
 * it is on and has room, else a SharedArrayBuffer of their own. Throws RangeError when neither can be had.
 */
export function allocTensorBytes(n: number): Uint8Array {
  const addr = n > 0 ? wasmAlloc(n) : undefined;
  if (addr !== undefined) return view(arenas[0]!, addr, n);
  return new Uint8Array(new SharedArrayBuffer(n));
}

/** Places the tensors of one model: `alloc` gives zero-filled, SharedArrayBuffer-backed bytes. */
export interface WeightAllocator {
  alloc(n: number): Uint8Array;
  /** the largest tensor (bytes) that gets a place in a WASM memory (0 when WASM is off) */
  readonly maxTensorBytes: number;
}

function scratchReserve(bytes: number): number {
  return Math.min(MAX_SCRATCH_RESERVE, Math.floor(bytes / 4));
}

/** How far tensors may fill a weight arena, in units: its size less the kernels' scratch reserve. */
function tensorCapUnits(a: Arena): number {
  const limit = limitUnits(a);
  return limit - Math.ceil(scratchReserve(limit * ALIGN) / ALIGN);
}

/** The largest tensor that fits in a weight arena (arenas made from now on), or 0 when WASM is off. */
export function maxArenaTensorBytes(): number {
  if (disabled || !Wasm) return 0;
  return arenaBytes - HEAP_START - scratchReserve(arenaBytes);
}

/**
 * Where a model's weights go, given their total size: into the primary arena when they fit there with
 * room to spare for KV caches and scratch (one memory: the usual case for small models), else into weight
 * arenas of their own (made as needed, each filled with whole tensors up to its size minus the kernels'
 * scratch reserve; space freed by an earlier model is reused first). A tensor larger than an arena gets
 * a SharedArrayBuffer of its own (TypeScript kernels; the loader reports it).
 */
export function weightAllocator(totalBytes: number): WeightAllocator {
  const p = primary();
  if (!p) return { alloc: (n) => new Uint8Array(new SharedArrayBuffer(n)), maxTensorBytes: 0 };
  const pLimit = limitUnits(p) * ALIGN;
  const pRoom = pLimit - Atomics.load(header(p.memory), SLOT_BUMP) * ALIGN + p.free.reduce((s, r) => s + r.units * ALIGN, 0);
  if (totalBytes + Math.min(MAX_PRIMARY_RESERVE, pLimit / 4) <= Math.min(pRoom, arenaBytes - HEAP_START)) {
    return { alloc: allocTensorBytes, maxTensorBytes: pLimit - HEAP_START };
  }
  const maxTensorBytes = maxArenaTensorBytes();
  return {
    maxTensorBytes,
    alloc(n: number): Uint8Array {
      if (n === 0 || n > maxTensorBytes) return new Uint8Array(new SharedArrayBuffer(n));
      const units = Math.max(1, Math.ceil(n / ALIGN));
      for (const a of arenas) {
        if (a.index === 0) continue;
        const addr = takeFreeRange(a, units) ?? bump(a, units, tensorCapUnits(a));
        if (addr !== undefined) return view(a, addr, n);
      }
      const a = newArena();
      const addr = a && bump(a, units, tensorCapUnits(a));
      return a && addr !== undefined ? view(a, addr, n) : new Uint8Array(new SharedArrayBuffer(n));
    },
  };
}

/**
 * Gives back the space of a tensor made by allocTensorBytes or a WeightAllocator on this thread (a no-op
 * for tensors in a SharedArrayBuffer of their own). The view must not be used afterwards.
 */
export function freeTensorBytes(data: Uint8Array): void {
  if (data.length === 0) return;
  const a = arenaOf(data.buffer);
  if (a === undefined) return;
  addFreeRange(arenas[a]!, data.byteOffset / ALIGN, Math.max(1, Math.ceil(data.length / ALIGN)));
}

let aliasCache = new WeakMap<ArrayBufferLike, number>();

/**
 * The index of this thread's arena that `buffer` is (a view of), so that its byte offsets are addresses
 * in that arena's memory; undefined when it is none of them. A SharedArrayBuffer posted from another
 * thread is a different object over the same memory, so identity does not tell: a value written through
 * the memory must show through the buffer.
 */
export function arenaOf(buffer: ArrayBufferLike): number | undefined {
  if (arenas.length === 0 || disabled) return undefined;
  const known = aliasCache.get(buffer);
  if (known !== undefined) return known < 0 ? undefined : known;
  let found = -1;
  if (buffer instanceof SharedArrayBuffer && buffer.byteLength >= HEAP_START) {
    for (const a of arenas) {
      const own = a.memory.buffer;
      if (buffer === own || (buffer.byteLength <= own.byteLength && aliases(a, buffer))) {
        found = a.index;
        break;
      }
    }
  }
  aliasCache.set(buffer, found);
  return found < 0 ? undefined : found;
}

function aliases(a: Arena, buffer: SharedArrayBuffer): boolean {
  const mine = new Int32Array(a.memory.buffer, a.probeAddr, 2);
  const theirs = new Int32Array(buffer, a.probeAddr, 2);
  for (let k = 0; k < 2; k++) {
    const v = (Math.random() * 0x7fffffff) | 0;
    Atomics.store(mine, k, v);
    if (Atomics.load(theirs, k) !== v) return false;
  }
  return true;
}

/** Whether `buffer` is (a view of) this thread's primary WASM memory (where the attention and quantization kernels work). */
export function isWasmBuffer(buffer: ArrayBufferLike): boolean {
  return arenaOf(buffer) === 0;
}

/** The memory of arena i of this thread. */
export function arenaMemory(i: number): WasmMemory | undefined {
  return arenas[i]?.memory;
}
