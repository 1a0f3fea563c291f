/**
 * Routed experts streamed from the GGUF file through a bounded cache (models larger than the memory
 * available). Everything but the routed experts (`blk.N.ffn_{gate,up,down}_exps.weight`) is loaded as
 * usual; an expert's three matrices are read from the file into a cache slot (in a WebAssembly memory,
 * so the WASM kernels run on them) the first time a token routes to it, and stay there until the slot is
 * needed for another expert (the least often used so far, ties to the least recently used; the experts of
 * the layer being computed are never evicted). The bytes are the file's, so logits are bit-identical to the resident model's.
 *
 * The missing experts of one layer are read together: their reads go to a few reader threads in parallel
 * (./expert-reader.ts) while the main thread waits.
 */
import { closeSync, constants, openSync } from "node:fs";
import { freemem } from "node:os";
import { TsmoeError } from "../errors.ts";
import { formatBytes } from "../gguf/summary.ts";
import type { TensorEntry } from "../gguf/types.ts";
import type { Weight } from "../kernels/matmul.ts";
import type { ExpertCacheStats } from "./api.ts";
import { ParallelReader, type ReadRequest } from "../io/parallel-reader.ts";
import type { MoeWeights } from "./weights.ts";

/** The tensors that are streamed: routed experts, one 3-D tensor per projection and layer. */
export const STREAMED_TENSOR = /^blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight$/;

/** Bytes left for Node itself, the worker threads and scratch when the default decides what fits. */
export const MEMORY_MARGIN = 400 << 20;


/** Where one layer's three expert tensors are in the file. */
export interface LayerExpertTensors {
  gate: { entry: TensorEntry; path: string; position: number };
  up: { entry: TensorEntry; path: string; position: number };
  down: { entry: TensorEntry; path: string; position: number };
}

interface Slot {
  data: Uint8Array;
  /** layer * nExpert + expert, or -1 while empty */
  key: number;
  weights?: { gate: Weight; up: Weight; down: Weight };
}

/**
 * Reads bypass the page cache (O_DIRECT): a streamed model is larger than the memory, so cached file pages
 * would only compete with the expert cache (under a cgroup's cap every read would first reclaim others).
 * Direct reads need the file position, the length and the memory address aligned to this.
 */
const IO_ALIGN = 4096;
const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

/** Bytes of one part (an expert's gate, up or down matrix) in a slot: the aligned file range around it. */
function partBytes(per: number): number {
  return alignUp(per, IO_ALIGN) + IO_ALIGN;
}

/** A slot's bytes for experts whose three matrices have these sizes (plus room to align its start). */
export function slotBytesFor(perExpert: readonly number[]): number {
  return perExpert.reduce((a, per) => a + partBytes(per), IO_ALIGN);
}

function slotBytesOf(t: LayerExpertTensors, nExpert: number): number {
  return slotBytesFor([t.gate.entry.nBytes / nExpert, t.up.entry.nBytes / nExpert, t.down.entry.nBytes / nExpert]);
}

export class ExpertCache {
  private readonly slots: Slot[] = [];
  /** resident experts by key, least recently used first (Map order) */
  private readonly lru = new Map<number, Slot>();
  private readonly fds = new Map<string, number>();
  private readonly reader: ParallelReader;
  readonly maxSlots: number;
  readonly slotBytes: number;
  private s: ExpertCacheStats = { hits: 0, misses: 0, bytesRead: 0, readMs: 0 };
  /** "lfu": uses of every expert so far (by key), for the frequency policy */
  private readonly uses = new Map<number, number>();

  constructor(
    readonly bytes: number,
    private readonly layers: Map<number, LayerExpertTensors>,
    private readonly nExpert: number,
    private readonly alloc: (n: number) => Uint8Array,
    /**
     * which expert leaves the cache: the least often used so far ("lfu", the default; among equals the
     * least recently used) or the least recently used ("lru"). On the embedded model's trained routing LFU
     * hits 26-72% where LRU hits 0-60% with a cache of 17-50% of the experts (bench/expert-cache-policy.ts)
     */
    readonly policy: "lru" | "lfu" = "lfu",
    readers = 4,
  ) {
    this.slotBytes = Math.max(...[...layers.values()].map((t) => slotBytesOf(t, nExpert)));
    this.maxSlots = Math.floor(bytes / this.slotBytes);
    if (this.maxSlots < nExpert) throw new TsmoeError(`expert cache of ${formatBytes(bytes)} holds fewer than the ${nExpert} experts of one layer (${formatBytes(nExpert * this.slotBytes)})`);
    this.reader = new ParallelReader(readers);
  }

  /** Makes moe.fetch give resident copies of the experts a batch uses (layer il). */
  attach(il: number, moe: MoeWeights): void {
    const t = this.layers.get(il);
    if (!t) return;
    moe.fetch = (used) => this.fetch(il, moe, t, used);
  }

  stats(): ExpertCacheStats {
    return { ...this.s };
  }

  resetStats(): void {
    this.s = { hits: 0, misses: 0, bytesRead: 0, readMs: 0 };
  }

  /** one line: the cache's size in slots and bytes */
  describe(): string {
    return `${this.maxSlots} experts (${formatBytes(this.maxSlots * this.slotBytes)})`;
  }

  private fd(path: string): number {
    let fd = this.fds.get(path);
    if (fd === undefined) {
      try {
        fd = openSync(path, constants.O_RDONLY | (constants.O_DIRECT ?? 0));
      } catch {
        // a file system without direct I/O (e.g. tmpfs): through the page cache
        fd = openSync(path, "r");
      }
      this.fds.set(path, fd);
    }
    return fd;
  }

  private fetch(il: number, moe: MoeWeights, t: LayerExpertTensors, used: readonly number[]): Pick<MoeWeights, "gate" | "up" | "down"> {
    const out: Pick<MoeWeights, "gate" | "up" | "down"> = { gate: [], up: [], down: [] };
    const keep = new Set<number>();
    const missing: number[] = [];
    for (const e of used) {
      const key = il * this.nExpert + e;
      keep.add(key);
      if (this.policy === "lfu") this.uses.set(key, (this.uses.get(key) ?? 0) + 1);
      const slot = this.lru.get(key);
      if (slot) {
        // most recently used now
        this.lru.delete(key);
        this.lru.set(key, slot);
        this.s.hits++;
      } else missing.push(e);
    }
    const requests: ReadRequest[] = [];
    let bytes = 0;
    for (const e of missing) {
      const key = il * this.nExpert + e;
      const slot = this.takeSlot(keep);
      slot.key = key;
      // each part is read as the aligned file range around it, to an aligned address
      let at = (IO_ALIGN - ((slot.data.byteOffset) % IO_ALIGN)) % IO_ALIGN;
      const part = (p: LayerExpertTensors["gate"], w: Weight): Weight => {
        const per = p.entry.nBytes / this.nExpert;
        const pos = p.position + e * per;
        const from = pos - (pos % IO_ALIGN);
        const skip = pos - from;
        const len = alignUp(skip + per, IO_ALIGN);
        requests.push({ fd: this.fd(p.path), position: from, data: slot.data.subarray(at, at + len), need: skip + per });
        const data = slot.data.subarray(at + skip, at + skip + per);
        at += partBytes(per);
        bytes += per;
        return { type: w.type, ne0: w.ne0, ne1: w.ne1, data };
      };
      slot.weights = { gate: part(t.gate, moe.gate[e]!), up: part(t.up, moe.up[e]!), down: part(t.down, moe.down[e]!) };
      this.lru.set(key, slot);
      this.s.misses++;
    }
    if (requests.length > 0) {
      const t0 = performance.now();
      this.reader.read(requests);
      this.s.bytesRead += bytes;
      this.s.readMs += performance.now() - t0;
    }
    for (const e of used) {
      const w = this.lru.get(il * this.nExpert + e)!.weights!;
      out.gate[e] = w.gate;
      out.up[e] = w.up;
      out.down[e] = w.down;
    }
    return out;
  }

  /** An empty slot while there is room for one more, else the least recently used one outside `keep`. */
  private takeSlot(keep: Set<number>): Slot {
    if (this.slots.length < this.maxSlots) {
      const slot: Slot = { data: this.alloc(this.slotBytes), key: -1 };
      this.slots.push(slot);
      return slot;
    }
    let victim: number | undefined;
    let fewest = Infinity;
    for (const key of this.lru.keys()) {
      if (keep.has(key)) continue;
      if (this.policy === "lru") {
        victim = key;
        break;
      }
      // lfu: the fewest uses; among equals the least recently used (Map order)
      const n = this.uses.get(key) ?? 0;
      if (n < fewest) {
        fewest = n;
        victim = key;
      }
    }
    if (victim !== undefined) {
      const slot = this.lru.get(victim)!;
      this.lru.delete(victim);
      slot.weights = undefined;
      return slot;
    }
    // unreachable: maxSlots >= nExpert >= the experts one layer can use
    throw new TsmoeError("expert cache: no slot to evict");
  }

  async dispose(): Promise<void> {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
    await this.reader.dispose();
  }
}

/** Bytes this process may use: the cgroup's cap when there is one (process.constrainedMemory), else what the OS says is available. */
export function memoryAvailable(): number {
  const cap = process.constrainedMemory?.() ?? 0;
  const free = freemem();
  return cap > 0 && cap < Number.MAX_SAFE_INTEGER ? Math.min(cap, free) : free;
}

/** Parses `--moe-cache SIZE`: bytes, or a number with K, M, G or T (binary units, optional "iB"/"B"). */
export function parseCacheSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) throw new TsmoeError(`invalid --moe-cache size '${text}' (expected e.g. 512M, 12G)`);
  const mult = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2]!.toLowerCase() as "" | "k" | "m" | "g" | "t"];
  const n = Math.floor(Number(m[1]) * mult);
  if (n <= 0) throw new TsmoeError(`invalid --moe-cache size '${text}' (must be above 0)`);
  return n;
}
