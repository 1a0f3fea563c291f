/**
 * The machine's memory read bandwidth with 1 thread and with `--threads` threads at once (default 2): each
 * worker thread scans a 512 MB buffer of its own with Buffer.indexOf for a byte that is not there (memchr:
 * SIMD loads at the speed memory delivers), 8 scans per run, 5 alternating rounds (each printed, then the
 * median of the rounds' ratios: both numbers move from round to round on a shared machine). Decode streams the
 * weights from memory, so how bandwidth grows with threads bounds how decode can scale.
 *
 *   npx tsx bench/memory-bandwidth.ts [--threads 2]
 */
import { Worker } from "node:worker_threads";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

/** a worker's code (plain JavaScript): replies to each message with the GB/s of 8 scans of its buffer */
const SCANNER = `
const { parentPort } = require("node:worker_threads");
const SIZE = 512 * 2 ** 20, SCANS = 8;
const buf = Buffer.alloc(SIZE, 1);
parentPort.postMessage(0);
parentPort.on("message", () => {
  const t0 = performance.now();
  for (let i = 0; i < SCANS; i++) if (buf.indexOf(7) !== -1) throw new Error("memory-bandwidth: unexpected byte");
  parentPort.postMessage((SCANS * SIZE) / ((performance.now() - t0) / 1000) / 1e9);
});
`;

const threads = Number(arg("--threads", "2"));
const ws = Array.from({ length: threads }, () => new Worker(SCANNER, { eval: true }));
await Promise.all(ws.map((w) => new Promise((r) => w.once("message", r))));
/** GB/s of each of the first n workers, scanning at the same time */
const run = (n: number): Promise<number[]> =>
  Promise.all(
    ws.slice(0, n).map(
      (w) =>
        new Promise<number>((r) => {
          w.once("message", r);
          w.postMessage(0);
        }),
    ),
  );
await run(threads);
const ratios: number[] = [];
for (let k = 0; k < 5; k++) {
  const one = (await run(1))[0]!;
  const many = (await run(threads)).reduce((a, b) => a + b, 0);
  ratios.push(many / one);
  console.log(`round ${k + 1}: ${one.toFixed(1)} GB/s with 1 thread, ${many.toFixed(1)} GB/s with ${threads} at once (${(many / one).toFixed(2)}x)`);
}
ratios.sort((a, b) => a - b);
console.log(`memory read bandwidth, ${threads} threads over 1: median ${ratios[2]!.toFixed(2)}x (rounds ${ratios[0]!.toFixed(2)}-${ratios[4]!.toFixed(2)}x)`);
for (const w of ws) await w.terminate();
