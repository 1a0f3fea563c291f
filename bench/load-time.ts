/**
 * Load time of a model file against what reading it costs at all, on a warm page cache:
 *  - `cat FILE > /dev/null`: the page cache copied into one small buffer (never written to fresh memory);
 *  - the floor of any loader that copies the weights into its own memory (no mmap, which pure JavaScript
 *    cannot do): the file read into fresh SharedArrayBuffers, in 32 MiB reads, with as many threads as tsmoe
 *    uses (first-touch page faults and the copy are the cost);
 *  - tsmoe's `loadModel` (header, tensor data into the WebAssembly memories, worker pool).
 * Each is run `-r` times, alternating, best kept. Run it on a quiet machine.
 *
 *   npx tsx bench/load-time.ts FILE [-r 3] [-t THREADS]
 */
import { execFileSync } from "node:child_process";
import { closeSync, openSync, statSync } from "node:fs";
import { availableParallelism } from "node:os";
import { ParallelReader } from "../src/io/parallel-reader.ts";
import { loadModel } from "../src/model/load.ts";

const args = process.argv.slice(2);
const file = args[0];
if (!file) throw new Error("usage: load-time.ts FILE [-r 3] [-t THREADS]");
const opt = (name: string, def: number): number => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : def);
const reps = opt("-r", 3);
const threads = opt("-t", availableParallelism());
const size = statSync(file).size;
const CHUNK = 32 << 20;

function timeCat(): number {
  const t0 = performance.now();
  execFileSync("sh", ["-c", `cat "$0" > /dev/null`, file]);
  return (performance.now() - t0) / 1000;
}

/** the file into fresh shared memory, 1 GiB buffers, read by `threads` threads */
function timeFresh(): number {
  const fd = openSync(file!, "r");
  const reader = new ParallelReader(Math.min(3, threads - 1));
  const t0 = performance.now();
  for (let base = 0; base < size; base += 2 ** 30) {
    const n = Math.min(2 ** 30, size - base);
    const buf = new Uint8Array(new SharedArrayBuffer(n));
    const reqs = [];
    for (let o = 0; o < n; o += CHUNK) reqs.push({ fd, position: base + o, data: buf.subarray(o, Math.min(n, o + CHUNK)), need: Math.min(CHUNK, n - o) });
    reader.read(reqs);
  }
  const s = (performance.now() - t0) / 1000;
  void reader.dispose();
  closeSync(fd);
  return s;
}

async function timeLoad(): Promise<number> {
  const t0 = performance.now();
  const model = await loadModel(file!, { threads });
  const s = (performance.now() - t0) / 1000;
  await model.dispose();
  return s;
}

timeCat(); // warm the page cache
const best = { cat: Infinity, fresh: Infinity, load: Infinity };
for (let r = 0; r < reps; r++) {
  best.cat = Math.min(best.cat, timeCat());
  best.fresh = Math.min(best.fresh, timeFresh());
  // a load per process run would be cleaner; the freed WASM ranges are reused, so later loads touch no new pages
  if (r === 0) best.load = await timeLoad();
}
const gib = size / 2 ** 30;
console.log(`${file}: ${gib.toFixed(2)} GiB, ${threads} thread(s), best of ${reps} (tsmoe: first load in the process)`);
console.log(`| cat | fresh-memory floor | tsmoe load | tsmoe / cat | tsmoe / floor |`);
console.log(`|---:|---:|---:|---:|---:|`);
console.log(`| ${best.cat.toFixed(2)} s | ${best.fresh.toFixed(2)} s | ${best.load.toFixed(2)} s | ${(best.load / best.cat).toFixed(2)} | ${(best.load / best.fresh).toFixed(2)} |`);
