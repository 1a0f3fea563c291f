/**
 * Positional file reads in parallel: a few reader threads and the calling thread take the requests of one
 * batch from a shared counter and read each with `fs.readSync` straight into its destination (shared
 * memory: tensor data while a model loads, an expert cache slot while experts stream), while the caller,
 * whose code is synchronous (the forward pass), waits for the batch (read), or posts it and waits later
 * (post, then wait: the expert cache reads the next layer's likely experts while the current one
 * computes). Several readers keep several reads outstanding on the disk and share the cost of first
 * touching fresh memory (page faults). File descriptors belong to the process, so every thread reads
 * through the caller's.
 */
import { readSync } from "node:fs";
import { MessageChannel, Worker, type MessagePort } from "node:worker_threads";
import { TsmoeError } from "../errors.ts";

export interface ReadRequest {
  fd: number;
  position: number;
  /** the destination: at most its length is read */
  data: Uint8Array;
  /** the bytes that must be read (the file may end before data.length) */
  need: number;
}

/** Int32 slots of the control block */
const GEN = 0, NEXT = 1, DONE = 2, COUNT = 3, FAILED = 4, MSG_SEQ = 5, STOP = 6;
/** Float64 fields per request: fd, position, length, buffer id, byte offset, bytes needed */
const FIELDS = 6;
/**
 * NEXT holds the batch's tag (its generation, 15 bits) above the index of the next request (16 bits), so a
 * thread still finishing one batch can never take a request of the next.
 */
const MAX_BATCH = 1 << 16;
const tagOf = (gen: number) => (gen & 0x7fff) << 16;

/** Claims the next request of the batch tagged `tag` with n requests; -1 when there is none. */
function claim(ctl: Int32Array, tag: number, n: number): number {
  for (;;) {
    const cur = Atomics.load(ctl, NEXT);
    if ((cur & ~0xffff) !== tag || (cur & 0xffff) >= n) return -1;
    if (Atomics.compareExchange(ctl, NEXT, cur, cur + 1) === cur) return cur & 0xffff;
  }
}

/** The reader threads' code (plain JavaScript: it needs nothing but fs and Atomics). */
const WORKER = `
const ${"NEXT"} = ${NEXT};
${claim.toString()}
const { workerData } = require("node:worker_threads");
const { readSync } = require("node:fs");
const { receiveMessageOnPort } = require("node:worker_threads");
const ctl = new Int32Array(workerData.ctl);
const port = workerData.port;
const buffers = new Map();
let seen = 0, gen = 0;
for (;;) {
  Atomics.wait(ctl, ${GEN}, gen);
  gen = Atomics.load(ctl, ${GEN});
  if (Atomics.load(ctl, ${STOP})) break;
  while (seen < Atomics.load(ctl, ${MSG_SEQ})) {
    const m = receiveMessageOnPort(port);
    if (!m) continue;
    seen++;
    buffers.set(m.message.id, m.message.buffer);
  }
  const req = new Float64Array(workerData.req);
  const n = Atomics.load(ctl, ${COUNT});
  const tag = (gen & 0x7fff) << 16;
  for (let i = claim(ctl, tag, n); i >= 0; i = claim(ctl, tag, n)) {
    try {
      const o = i * ${FIELDS};
      const len = req[o + 2];
      const dst = new Uint8Array(buffers.get(req[o + 3]), req[o + 4], len);
      let got = 0;
      while (got < req[o + 5]) {
        const r = readSync(req[o], dst, got, len - got, req[o + 1] + got);
        if (r <= 0) throw new Error("unexpected end of file");
        got += r;
      }
    } catch (e) {
      Atomics.store(ctl, ${FAILED}, 1);
    }
    Atomics.add(ctl, ${DONE}, 1);
    Atomics.notify(ctl, ${DONE});
  }
}
`;

export class ParallelReader {
  private readonly ctl = new Int32Array(new SharedArrayBuffer(64));
  private reqBuf = new SharedArrayBuffer(8 * FIELDS * 64);
  private readonly workers: Worker[] = [];
  private readonly ports: MessagePort[] = [];
  private bufferIds = new WeakMap<ArrayBufferLike, number>();
  private nextId = 1;
  private msgSeq = 0;

  constructor(readonly nThreads: number) {}

  private start(): void {
    if (this.workers.length > 0 || this.nThreads <= 0) return;
    for (let i = 0; i < this.nThreads; i++) {
      const { port1, port2 } = new MessageChannel();
      const w = new Worker(WORKER, { eval: true, workerData: { ctl: this.ctl.buffer, req: this.reqBuf, port: port2 }, transferList: [port2] });
      w.unref();
      this.workers.push(w);
      this.ports.push(port1);
    }
  }

  private bufferId(buffer: ArrayBufferLike): number {
    let id = this.bufferIds.get(buffer);
    if (id === undefined) {
      if (!(buffer instanceof SharedArrayBuffer)) throw new TsmoeError("expert reader: destination is not shared memory");
      this.bufferIds.set(buffer, (id = this.nextId++));
      for (const p of this.ports) p.postMessage({ id, buffer });
      this.msgSeq++;
    }
    return id;
  }

  /** the batch posted by post() and not yet waited for */
  private pending: { requests: readonly ReadRequest[]; tag: number } | undefined;

  /** Reads every request (all of them before it returns); returns the bytes read. */
  read(requests: readonly ReadRequest[]): number {
    const bytes = this.post(requests);
    this.wait();
    return bytes;
  }

  /** Waits for the batch in flight (helping with its reads not yet taken); throws when one failed. */
  wait(): void {
    const p = this.pending;
    if (!p) return;
    this.pending = undefined;
    const c = this.ctl;
    const n = p.requests.length;
    // the calling thread reads too
    let failed: unknown;
    for (let i = claim(c, p.tag, n); i >= 0; i = claim(c, p.tag, n)) {
      try {
        readFully(p.requests[i]!);
      } catch (e) {
        failed = e;
      }
      Atomics.add(c, DONE, 1);
    }
    for (let d = Atomics.load(c, DONE); d < n; d = Atomics.load(c, DONE)) Atomics.wait(c, DONE, d, 1000);
    if (failed !== undefined || Atomics.load(c, FAILED)) {
      throw new TsmoeError(`reading the model file failed${failed instanceof Error ? `: ${failed.message}` : ""} (file changed or unreadable?)`);
    }
  }

  /**
   * Ends the batch in flight, then hands this one to the reader threads and returns at once (the caller
   * computes meanwhile); wait() ends it. The destinations must not be used before wait() returns. Without
   * reader threads the reads happen in wait(). Returns the bytes the batch reads.
   */
  post(requests: readonly ReadRequest[]): number {
    this.wait();
    if (requests.length > MAX_BATCH) throw new TsmoeError(`expert reader: ${requests.length} reads in one batch (at most ${MAX_BATCH})`);
    this.start();
    if (this.reqBuf.byteLength < 8 * FIELDS * requests.length) {
      // the reader threads hold the old table: restart them over a larger one
      this.stopWorkers();
      this.reqBuf = new SharedArrayBuffer(8 * FIELDS * Math.max(requests.length, 2 * (this.reqBuf.byteLength / (8 * FIELDS))));
      this.start();
    }
    const req = new Float64Array(this.reqBuf);
    let bytes = 0;
    requests.forEach((r, i) => {
      const o = i * FIELDS;
      req[o] = r.fd;
      req[o + 1] = r.position;
      req[o + 2] = r.data.length;
      req[o + 3] = this.workers.length > 0 ? this.bufferId(r.data.buffer) : 0;
      req[o + 4] = r.data.byteOffset;
      req[o + 5] = r.need;
      bytes += r.need;
    });
    const c = this.ctl;
    Atomics.store(c, MSG_SEQ, this.msgSeq);
    Atomics.store(c, COUNT, requests.length);
    Atomics.store(c, DONE, 0);
    Atomics.store(c, FAILED, 0);
    const gen = Atomics.load(c, GEN) + 1;
    const tag = tagOf(gen);
    Atomics.store(c, NEXT, tag);
    Atomics.store(c, GEN, gen);
    Atomics.notify(c, GEN);
    this.pending = { requests, tag };
    return bytes;
  }

  private stopWorkers(): void {
    Atomics.store(this.ctl, STOP, 1);
    Atomics.add(this.ctl, GEN, 1);
    Atomics.notify(this.ctl, GEN);
    for (const w of this.workers) void w.terminate();
    for (const p of this.ports) p.close();
    this.workers.length = 0;
    this.ports.length = 0;
    Atomics.store(this.ctl, STOP, 0);
    this.msgSeq = 0;
    Atomics.store(this.ctl, MSG_SEQ, 0);
    // buffers are posted again to the new threads
    this.bufferIds = new WeakMap();
  }

  async dispose(): Promise<void> {
    try {
      this.wait();
    } catch {
      // a failed read of a batch nobody waits for any more
    }
    this.stopWorkers();
  }
}

function readFully(r: ReadRequest): void {
  let got = 0;
  while (got < r.need) {
    const n = readSync(r.fd, r.data, got, r.data.length - got, r.position + got);
    if (n <= 0) throw new Error("unexpected end of file");
    got += n;
  }
}
