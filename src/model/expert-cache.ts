/**
 * Routed experts streamed from the GGUF file through a bounded cache (models larger than the memory
 * available). Everything but the routed experts (`blk.N.ffn_{gate,up,down}_exps.weight`) is loaded as
 * usual; an expert's three matrices are read from the file into a cache slot (in a WebAssembly memory,
 * so the WASM kernels run on them) the first time a token routes to it, and stay there until the slot is
 * needed for another expert (the least often used so far, ties to the least recently used; the experts of
 * the layer being computed are never evicted). The bytes are the file's, so logits are bit-identical to the resident model's.
 *
 * The missing experts of one layer are read together: their reads go to a few reader threads in parallel
 * (../io/parallel-reader.ts) while the main thread waits. Read-ahead (on by default): once a token's layer
 * L has its experts, the next MoE layer's router is applied to layer L's FFN input (the residual stream
 * changes slowly from one layer to the next) and that layer's top-k experts that are not cached are read
 * by the reader threads while layer L computes, into slots other than layer L's experts; the next layer's
 * fetch waits for them first, then reads what is still missing. A guess changes which experts are cached,
 * never the bytes a layer computes with. Guesses keep being checked against the experts the next layer
 * uses; while fewer than half of the recent ones were right (GUESS_RATE_MIN), nothing is read ahead (on
 * the embedded model's trained routing 73-75% of the experts read ahead are used; on a random-weight
 * file 27-30%, close to chance, and its reads would only evict useful experts).
 */
import { closeSync, constants, openSync } from "node:fs";
import { freemem } from "node:os";
import { TsmoeError } from "../errors.ts";
import { formatBytes } from "../gguf/summary.ts";
import type { TensorEntry } from "../gguf/types.ts";
import type { MatmulBackend } from "../kernels/backend.ts";
import type { Weight } from "../kernels/matmul.ts";
import type { ExpertCacheStats } from "./api.ts";
import { ParallelReader, type ReadRequest } from "../io/parallel-reader.ts";
import { TokenStages } from "./moe.ts";
import type { RouterConfig } from "./moe-types.ts";
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

const NO_STATS: ExpertCacheStats = { hits: 0, misses: 0, bytesRead: 0, readMs: 0, readAhead: 0, readAheadUsed: 0, readAheadWasted: 0, readAheadSkipped: 0 };

/**
 * Read-ahead goes on while at least this share of the recent guessed experts (those not cached when
 * guessed) were used by the layer they were guessed for: then it saves at least as many waits as it
 * makes wasted reads. "Recent": an exponential average over about the last 1 / GUESS_DECAY guesses.
 */
const GUESS_RATE_MIN = 0.5;
const GUESS_DECAY = 1 / 64;

export class ExpertCache {
  private readonly slots: Slot[] = [];
  /** slots whose expert was dropped (a failed read-ahead) */
  private readonly free: Slot[] = [];
  /** resident experts by key, least recently used first (Map order) */
  private readonly lru = new Map<number, Slot>();
  private readonly fds = new Map<string, number>();
  private readonly reader: ParallelReader;
  readonly maxSlots: number;
  readonly slotBytes: number;
  private s: ExpertCacheStats = { ...NO_STATS };
  /** "lfu": uses of every expert so far (by key), for the frequency policy */
  private readonly uses = new Map<number, number>();
  /** read-ahead: each MoE layer's weights, the next MoE layer after each, the router's matmul and its output */
  private readonly moes = new Map<number, MoeWeights>();
  private readonly nextLayer = new Map<number, number>();
  private backend: MatmulBackend | undefined;
  private logits: Float32Array | undefined;
  /** the router's stages, applied to the guessed logits */
  private readonly stages: TokenStages;
  /** the last guess: the layer it is for, its experts that were not cached, and whether they are being read */
  private ahead: { il: number; keys: number[]; read: boolean } | undefined;
  /** recent share of right guesses (see GUESS_RATE_MIN) */
  private guessRate = 1;

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
    /** read the next layer's likely experts ahead (needs useBackend) */
    readonly prefetch = true,
  ) {
    this.slotBytes = Math.max(...[...layers.values()].map((t) => slotBytesOf(t, nExpert)));
    this.maxSlots = Math.floor(bytes / this.slotBytes);
    if (this.maxSlots < nExpert) throw new TsmoeError(`expert cache of ${formatBytes(bytes)} holds fewer than the ${nExpert} experts of one layer (${formatBytes(nExpert * this.slotBytes)})`);
    this.reader = new ParallelReader(readers);
    this.stages = new TokenStages(nExpert);
    const order = [...layers.keys()].sort((a, b) => a - b);
    order.forEach((il, i) => i + 1 < order.length && this.nextLayer.set(il, order[i + 1]!));
  }

  /** Makes moe.fetch give resident copies of the experts a batch uses (layer il). */
  attach(il: number, moe: MoeWeights): void {
    const t = this.layers.get(il);
    if (!t) return;
    this.moes.set(il, moe);
    moe.fetch = (used, x, cfg) => this.fetch(il, moe, t, used, x, cfg);
  }

  /** The backend that applies the next layer's router for read-ahead (the model's). */
  useBackend(backend: MatmulBackend): void {
    this.backend = backend;
    this.logits = backend.allocF32(this.nExpert);
  }

  stats(): ExpertCacheStats {
    return { ...this.s };
  }

  resetStats(): void {
    this.s = { ...NO_STATS };
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

  private fetch(il: number, moe: MoeWeights, t: LayerExpertTensors, used: readonly number[], x?: Float32Array, cfg?: RouterConfig): Pick<MoeWeights, "gate" | "up" | "down"> {
    this.endReadAhead(il, used);
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
      // there is a slot outside keep: maxSlots >= nExpert >= the experts one layer uses
      bytes += this.place(this.takeSlot(keep)!, il, e, moe, t, requests);
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
    if (x && cfg && this.prefetch) this.readAhead(il, x, cfg, used.length, keep);
    return out;
  }

  /** Gives expert e of layer il the slot: its weights there, and the reads that fill it (returns their bytes). */
  private place(slot: Slot, il: number, e: number, moe: MoeWeights, t: LayerExpertTensors, requests: ReadRequest[]): number {
    const key = il * this.nExpert + e;
    slot.key = key;
    let bytes = 0;
    // each part is read as the aligned file range around it, to an aligned address
    let at = (IO_ALIGN - (slot.data.byteOffset % IO_ALIGN)) % IO_ALIGN;
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
    return bytes;
  }

  /**
   * Guesses the next MoE layer's k experts from this layer's FFN input x (one token) with that layer's
   * router: its logits (plus the router bias) through the router's own scoring, selection-bias and top-k
   * stages (./moe.ts TokenStages, with that layer's selection bias); and posts the reads of those not cached
   * into slots outside `keep` (this layer's experts) and the guess (while recent guesses were good enough;
   * else they are only checked).
   */
  private readAhead(il: number, x: Float32Array, cfg: RouterConfig, k: number, keep: Set<number>): void {
    const next = this.nextLayer.get(il);
    if (next === undefined || !this.backend || !this.logits) return;
    const moe = this.moes.get(next)!;
    const scores = this.logits;
    this.backend.matmul(moe.gateInp, x, 1, scores);
    const rb = moe.gateInpBias;
    if (rb) for (let e = 0; e < this.nExpert; e++) scores[e] = scores[e]! + rb[e]!;
    const s = this.stages;
    const nextCfg = { ...cfg, selectionBias: moe.selectionBias };
    s.scoreProbs(nextCfg, scores, 0);
    s.biasSelection(nextCfg);
    s.selectTopK(nextCfg, k);
    const guess = Array.from(s.topk.subarray(0, k));
    const protect = new Set(keep);
    for (const e of guess) protect.add(next * this.nExpert + e);
    const requests: ReadRequest[] = [];
    const keys: number[] = [];
    let bytes = 0;
    const t = this.layers.get(next)!;
    if (this.guessRate < GUESS_RATE_MIN) {
      const unread = guess.map((e) => next * this.nExpert + e).filter((key) => !this.lru.has(key));
      this.ahead = { il: next, keys: unread, read: false };
      this.s.readAheadSkipped += unread.length;
      return;
    }
    for (const e of guess) {
      const key = next * this.nExpert + e;
      if (this.lru.has(key)) continue;
      const slot = this.takeSlot(protect);
      if (!slot) break;
      bytes += this.place(slot, next, e, moe, t, requests);
      keys.push(key);
    }
    if (keys.length === 0) return;
    this.reader.post(requests);
    this.ahead = { il: next, keys, read: true };
    this.s.bytesRead += bytes;
    this.s.readAhead += keys.length;
  }

  /** Waits for the read-ahead batch (before any slot is used or reused) and counts which of its experts layer il uses. */
  private endReadAhead(il: number, used: readonly number[]): void {
    const a = this.ahead;
    if (!a) return;
    this.ahead = undefined;
    let hit = 0;
    for (const key of a.keys) {
      const right = a.il === il && used.includes(key - il * this.nExpert);
      if (right) hit++;
      this.guessRate += GUESS_DECAY * (Number(right) - this.guessRate);
    }
    if (!a.read) return;
    const t0 = performance.now();
    try {
      this.reader.wait();
    } catch (err) {
      // their slots hold no expert
      for (const key of a.keys) {
        const slot = this.lru.get(key)!;
        this.lru.delete(key);
        slot.key = -1;
        slot.weights = undefined;
        this.free.push(slot);
      }
      throw err;
    } finally {
      this.s.readMs += performance.now() - t0;
    }
    this.s.readAheadUsed += hit;
    this.s.readAheadWasted += a.keys.length - hit;
  }

  /**
   * An empty slot while there is room for one more, else the one the policy evicts outside `keep`
   * (undefined when every slot is in `keep`).
   */
  private takeSlot(keep: Set<number>): Slot | undefined {
    const free = this.free.pop();
    if (free) return free;
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
    return undefined;
  }

  async dispose(): Promise<void> {
    this.ahead = undefined;
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
