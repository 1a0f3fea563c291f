/**
 * Loads a GGUF model (all shards of a split model) into memory: header via ./header.ts, tensor data read with
 * plain `fs.readSync` straight into SharedArrayBuffer-backed memory handed in by the caller (`TensorAlloc`: the
 * loader places weights in the WebAssembly kernels' memories, see src/kernels/wasm/memory.ts; by default one
 * SharedArrayBuffer per tensor), so worker threads can share the weights without copying and the file is never
 * held in one big JS buffer.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { basename } from "node:path";
import { availableParallelism } from "node:os";
import { GgufError } from "../errors.ts";
import { ParallelReader, type ReadRequest } from "../io/parallel-reader.ts";
import { readGgufHeader, type GgufHeader } from "./header.ts";
import type { GgufFile, TensorEntry } from "./types.ts";
import { splitShardPaths } from "./split.ts";
import { q } from "./quote.ts";

/** Gives zero-filled, SharedArrayBuffer-backed bytes for one tensor's data. */
export type TensorAlloc = (nBytes: number) => Uint8Array;

const ownBuffer: TensorAlloc = (n) => new Uint8Array(new SharedArrayBuffer(n));

export interface LoadGgufOptions {
  /** parse headers only: every tensor gets `data = new Uint8Array(0)` */
  headerOnly?: boolean;
  /** called with (bytes read, total bytes of tensor data) while tensor data loads */
  onProgress?: (done: number, total: number) => void;
}

/** bytes per read: small enough to spread a tensor over the reader threads (and below readSync's ~2 GiB) */
const READ_CHUNK = 32 << 20;
/** reads per batch between progress callbacks (~1 GiB) */
const READ_BATCH = 32;
/**
 * reader threads besides the calling one while tensor data loads (one per further core, at most 3), for
 * files of at least PARALLEL_FROM bytes: the cost of a load is mostly first-touch page faults and the copy
 * into fresh memory, which the cores share
 */
const READER_THREADS = Math.max(0, Math.min(3, availableParallelism() - 1));
const PARALLEL_FROM = 256 << 20;

export async function loadGguf(path: string, opts: LoadGgufOptions = {}): Promise<GgufFile> {
  const g = await openGguf(path);
  if (!opts.headerOnly) g.readTensors(opts.onProgress);
  return g.file;
}

/** A GGUF model whose headers are read (every tensor's data still empty) and whose tensor data can follow. */
export interface OpenedGguf {
  file: GgufFile;
  /** bytes of tensor data in all shards */
  dataBytes: number;
  /** where each tensor's data is: the shard's path and the absolute byte position in it */
  locations: Map<string, { path: string; position: number }>;
  /**
   * Reads every tensor's data into file's tensor entries (once), into bytes from `alloc`; returns the
   * file. Tensors `skip` names keep empty data (read later from `locations`, e.g. streamed experts).
   */
  readTensors(onProgress?: (done: number, total: number) => void, alloc?: TensorAlloc, skip?: (name: string) => boolean, readerThreads?: number): GgufFile;
}

/**
 * Reads the headers of a GGUF model (all shards), so a caller can check the metadata before the tensor
 * data is read.
 */
export async function openGguf(path: string): Promise<OpenedGguf> {
  const first = readGgufHeader(path);
  const shards: { path: string; header: GgufHeader }[] = [{ path, header: first }];
  for (const p of splitShardPaths(path, first).slice(1)) shards.push({ path: p, header: readGgufHeader(p) });
  checkShards(path, shards);

  const tensors = new Map<string, TensorEntry>();
  const empty = new Uint8Array(0);
  let total = 0;
  for (const s of shards)
    for (const t of s.header.tensors) {
      if (tensors.has(t.name)) throw new GgufError(s.path, `tensor ${q(t.name)} also appears in an earlier shard`);
      tensors.set(t.name, { name: t.name, type: t.type, shape: t.shape, nElements: t.nElements, nBytes: t.nBytes, data: empty });
      total += t.nBytes;
    }

  const file: GgufFile = {
    path,
    version: first.version,
    alignment: first.alignment,
    fileSize: shards.reduce((a, s) => a + s.header.fileSize, 0),
    metadata: first.metadata,
    tensors,
  };
  let read = false;
  const locations = new Map<string, { path: string; position: number }>();
  for (const s of shards) for (const t of s.header.tensors) locations.set(t.name, { path: s.path, position: s.header.dataOffset + t.offset });
  const readTensors = (onProgress?: (done: number, total: number) => void, alloc: TensorAlloc = ownBuffer, skip?: (name: string) => boolean, readerThreads?: number): GgufFile => {
    if (read) return file;
    read = true;
    let done = 0;
    let toRead = 0;
    for (const t of tensors.values()) if (!skip?.(t.name)) toRead += t.nBytes;
    onProgress?.(0, toRead);
    // every tensor's bytes first, then the reads in chunks spread over a few threads
    const fds: number[] = [];
    // threads pay off on large files only (starting one costs ~20 ms)
    const reader = new ParallelReader(readerThreads ?? (toRead >= PARALLEL_FROM ? READER_THREADS : 0));
    try {
      const requests: (ReadRequest & { name: string; path: string })[] = [];
      for (const s of shards) {
        const fd = openSync(s.path, "r");
        fds.push(fd);
        for (const t of s.header.tensors) {
          if (skip?.(t.name)) continue;
          const data = allocTensor(alloc, s.path, t.name, t.nBytes);
          tensors.get(t.name)!.data = data;
          for (let o = 0; o < t.nBytes; o += READ_CHUNK) {
            const n = Math.min(READ_CHUNK, t.nBytes - o);
            requests.push({ fd, position: s.header.dataOffset + t.offset + o, data: data.subarray(o, o + n), need: n, name: t.name, path: s.path });
          }
        }
      }
      // in batches, for the progress callback
      for (let i = 0; i < requests.length; i += READ_BATCH) {
        const batch = requests.slice(i, i + READ_BATCH);
        try {
          done += reader.read(batch);
        } catch {
          // name the tensor: the first read of the batch that fails again
          for (const r of batch)
            if (readSync(r.fd, r.data, 0, r.need, r.position) < r.need) throw new GgufError(r.path, `unexpected end of file reading tensor ${q(r.name)} (file shrank?)`);
          throw new GgufError(batch[0]!.path, "reading tensor data failed");
        }
        onProgress?.(done, toRead);
      }
    } finally {
      void reader.dispose();
      for (const fd of fds) closeSync(fd);
    }
    return file;
  };
  return { file, dataBytes: total, locations, readTensors };
}

function allocTensor(alloc: TensorAlloc, file: string, name: string, nBytes: number): Uint8Array {
  try {
    return alloc(nBytes);
  } catch {
    throw new GgufError(file, `cannot allocate ${nBytes} bytes for tensor ${q(name)}`);
  }
}

/** Every shard must say which part it is; the first one's split.tensors.count must match the total. */
function checkShards(path: string, shards: { path: string; header: GgufHeader }[]): void {
  if (shards.length === 1) return;
  let nTensors = 0;
  shards.forEach((s, i) => {
    const no = s.header.metadata.get("split.no")?.value;
    if (no !== i) throw new GgufError(s.path, `split.no is ${String(no)}, expected ${i} (shard ${i + 1} of ${shards.length})`);
    const count = s.header.metadata.get("split.count")?.value;
    if (count !== shards.length) throw new GgufError(s.path, `split.count is ${String(count)}, expected ${shards.length}`);
    nTensors += s.header.tensors.length;
  });
  const declared = shards[0]!.header.metadata.get("split.tensors.count")?.value;
  if (declared !== undefined && declared !== nTensors)
    throw new GgufError(path, `split.tensors.count is ${String(declared)} but the ${shards.length} shards of ${basename(path)} hold ${nTensors} tensors`);
}
