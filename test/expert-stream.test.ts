/**
 * Routed experts streamed from the file through a bounded cache (src/model/expert-cache.ts): logits
 * bit-identical to the resident model's with a cache far smaller than the experts, on 1 and 2 threads,
 * at the model's k and with fewer experts, with read-ahead of the next layer's experts on and off;
 * statistics; the one-line errors of a cache too small.
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeRandomModel } from "../src/gguf/random-model.ts";
import { openGguf } from "../src/gguf/reader.ts";
import { describe, expect, it } from "vitest";
import { loadModel } from "../src/model/load.ts";
import { parseCacheSize, slotBytesFor } from "../src/model/expert-cache.ts";
import { ParallelReader } from "../src/io/parallel-reader.ts";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { formatCacheStats } from "../src/eval/moe-report.ts";
import type { MoeOptions } from "../src/model/api.ts";
import { ROOT, runCli } from "./helpers.ts";

const EMBEDDED = join(ROOT, "models", "tiny-moe-32x8-q8_0.gguf");
/** the embedded model: 32 experts per layer, one expert's three matrices in 3 x 8704 bytes (Q8_0, 128 x 64) */
const ONE_LAYER = 32 * slotBytesFor([8704, 8704, 8704]);
const PROMPT = [1, 449, 466, 261, 413, 300, 12, 77, 5, 91, 17];

async function run(opts: { threads: number; moeCache?: number; moe?: MoeOptions; moePrefetch?: boolean; file?: string; tokens?: number }) {
  const model = await loadModel(opts.file ?? EMBEDDED, { threads: opts.threads, moeCache: opts.moeCache, moePrefetch: opts.moePrefetch });
  try {
    const s = model.createSession({ nCtx: 64, moe: opts.moe });
    const rows = [await s.eval(PROMPT, { allLogits: true })];
    for (let i = 0; i < (opts.tokens ?? 8); i++) rows.push(await s.eval([(i * 53 + 7) % 500]));
    // streamed experts are read into slots in a WASM memory: no weight is reported slow
    expect(model.slowKernels).toBeUndefined();
    return { rows, stats: model.streaming?.stats(), plan: model.memoryPlan, tokens: s.moeStats()[0]?.tokens ?? 0 };
  } finally {
    await model.dispose();
  }
}

function sameBits(a: Float32Array[], b: Float32Array[]): boolean {
  return a.length === b.length && a.every((x, i) => Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(b[i]!.buffer, b[i]!.byteOffset, b[i]!.byteLength)));
}

describe("routed experts streamed from the file", () => {
  it("give bit-identical logits with a cache of one layer's experts (of 6 layers), on 1 and 2 threads, at k and N = 2, read-ahead on and off", async () => {
    for (const moe of [undefined, { nExpert: 2, mask: "soft" as const }]) {
      const resident = await run({ threads: 1, moe });
      expect(resident.stats).toBeUndefined();
      expect(resident.plan).toBeUndefined();
      for (const [threads, moePrefetch] of [[1, undefined], [2, undefined], [1, false]] as const) {
          const streamed = await run({ threads, moe, moeCache: ONE_LAYER, moePrefetch });
          expect(streamed.plan).toMatch(/^routed experts streamed from the file through a cache of 32 experts \(1\.63 MiB\)/);
          expect(sameBits(streamed.rows, resident.rows)).toBe(true);
          const st = streamed.stats!;
          expect(st.misses).toBeGreaterThan(0);
          // every expert read, on demand or ahead, is read whole once
          expect(st.bytesRead).toBe((st.misses + st.readAhead) * 3 * 8704);
          expect(st.readAheadUsed + st.readAheadWasted).toBe(st.readAhead);
          const text = formatCacheStats(st, streamed.tokens);
          expect(text).toMatch(/^expert cache: hit rate \d+\.\d% \(\d+ hits, \d+ misses\), [\d.]+ KiB read per token, read throughput /);
          if (moePrefetch === false) expect(st.readAhead).toBe(0);
          else {
            // on by default: the 8 decoded tokens read ahead for layers 1-5; on the trained routing far
            // more guesses are right than by chance (k / 32: 25% at k = 8, 6% at N = 2)
            expect(st.readAhead).toBeGreaterThan(0);
            expect(st.readAheadUsed).toBeGreaterThanOrEqual(st.readAhead / 3);
            expect(text).toMatch(/; read ahead \d+ experts: \d+ used by the next layer, \d+ not$/);
          }
      }
    }
  });

  it("stops reading ahead while its guesses are mostly wrong (random routers), logits still bit-identical", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tsmoe-prefetch-"));
    try {
      const file = await writeRandomModel(join(dir, "moe.gguf"), { arch: "qwen3moe", nLayer: 8, nEmbd: 64, nHead: 2, nHeadKv: 2, headDim: 32, nFf: 64, nFfExp: 16, nExpert: 32, nExpertUsed: 4, nVocab: 512, seed: 5 });
      const opened = await openGguf(file);
      const parts = ["gate", "up", "down"].map((p) => opened.file.tensors.get(`blk.0.ffn_${p}_exps.weight`)!.nBytes / 32);
      const resident = await run({ threads: 1, file, tokens: 24 });
      const streamed = await run({ threads: 1, file, tokens: 24, moeCache: 32 * slotBytesFor(parts) });
      expect(sameBits(streamed.rows, resident.rows)).toBe(true);
      const st = streamed.stats!;
      // random routers of independent layers: about k / n_expert of the guesses are right, so the reads stop
      expect(st.readAheadSkipped).toBeGreaterThan(0);
      expect(st.readAheadUsed).toBeLessThan(st.readAhead / 2);
      expect(formatCacheStats(st, streamed.tokens)).toMatch(/; \d+ guessed experts not read ahead \(recent guesses mostly wrong\)$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a cache that holds every expert reads each one once", async () => {
    const all = await run({ threads: 1, moeCache: 64 << 20 });
    const again = await run({ threads: 1 });
    expect(sameBits(all.rows, again.rows)).toBe(true);
    // no evictions: at most the 6 x 32 experts there are
    expect(all.stats!.misses).toBeLessThanOrEqual(6 * 32);
    expect(all.plan).toMatch(/cache of 192 experts/);
  });

  it("refuses a cache smaller than one layer's experts, and bad sizes, in one line", async () => {
    await expect(loadModel(EMBEDDED, { threads: 1, moeCache: ONE_LAYER - 4096 })).rejects.toThrow(/^--moe-cache 1\.62 MiB is too small: the 32 experts of one layer need 1\.63 MiB$/);
    expect(parseCacheSize("12G")).toBe(12 * 2 ** 30);
    expect(parseCacheSize("512MiB")).toBe(512 * 2 ** 20);
    expect(parseCacheSize("1.5k")).toBe(1536);
    expect(() => parseCacheSize("lots")).toThrow(/^invalid --moe-cache size 'lots'/);
    const r = runCli(["-p", "Hi", "-n", "2", "--moe-cache", "100K"]);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n")).toEqual([expect.stringMatching(/^error: --moe-cache 100\.00 KiB is too small/)]);
  });

  it("the reader threads read many ranges of a batch, in parallel with the caller, into shared memory", () => {
    const bytes = readFileSync(EMBEDDED);
    const fd = openSync(EMBEDDED, "r");
    const reader = new ParallelReader(3);
    try {
      const buf = new SharedArrayBuffer(1 << 20);
      for (let round = 0; round < 3; round++) {
        const reqs = Array.from({ length: 40 + round * 30 }, (_, i) => ({ fd, position: (i * 7919 + round * 131) % (bytes.length - 4096), data: new Uint8Array(buf, i * 4096, 1000 + ((i * 37) % 3000)), need: 1000 + ((i * 37) % 3000) }));
        const n = reader.read(reqs);
        expect(n).toBe(reqs.reduce((a, r) => a + r.need, 0));
        for (const r of reqs) expect(Buffer.from(r.data).equals(bytes.subarray(r.position, r.position + r.data.length))).toBe(true);
      }
      // posted: the caller returns at once and waits later (a later read waits for it first)
      const posted = Array.from({ length: 50 }, (_, i) => ({ fd, position: (i * 4099) % (bytes.length - 4096), data: new Uint8Array(buf, 512 * 1024 + i * 4096, 4096), need: 4096 }));
      expect(reader.post(posted)).toBe(50 * 4096);
      reader.wait();
      for (const r of posted) expect(Buffer.from(r.data).equals(bytes.subarray(r.position, r.position + 4096))).toBe(true);
      reader.post(posted.map((r) => ({ ...r, position: r.position + 1 })));
      reader.read([{ fd, position: 0, data: new Uint8Array(buf, 0, 64), need: 64 }]);
      for (const r of posted) expect(Buffer.from(r.data).equals(bytes.subarray(r.position + 1, r.position + 4097))).toBe(true);
      expect(() => reader.read([{ fd, position: bytes.length - 10, data: new Uint8Array(buf, 0, 100), need: 100 }])).toThrow(/reading the model file failed/);
      reader.post([{ fd, position: bytes.length - 10, data: new Uint8Array(buf, 0, 100), need: 100 }]);
      expect(() => reader.wait()).toThrow(/reading the model file failed/);
    } finally {
      void reader.dispose();
      closeSync(fd);
    }
  });
});

describe("tsmoe bench with streamed experts", () => {
  it("shows the expert cache's size and hit rate per row", () => {
    const r = runCli(["bench", "-p", "8", "-n", "4", "-r", "1", "-t", "1", "--moe-cache", "2M", "-o", "json"]);
    expect(r.status).toBe(0);
    const rows = JSON.parse(r.stdout) as { moe_cache: string; moe_cache_hit_rate: number }[];
    expect(rows).toHaveLength(2);
    for (const row of rows) {
      expect(row.moe_cache).toMatch(/^\d+ experts \([\d.]+ MiB\)$/);
      expect(row.moe_cache_hit_rate).toBeGreaterThanOrEqual(0);
      expect(row.moe_cache_hit_rate).toBeLessThanOrEqual(1);
    }
    const md = runCli(["bench", "-p", "8", "-n", "0", "-r", "1", "-t", "1"]);
    expect(md.stdout).not.toMatch(/expert cache/);
  });
});

describe("the memory plan at load", () => {
  it("keeps a model that fits resident, streams one that does not, and refuses one that cannot run", async () => {
    const { openGguf } = await import("../src/gguf/reader.ts");
    const { planMemory } = await import("../src/model/load.ts");
    const opened = await openGguf(EMBEDDED);
    const plan = (mb: number, nCtx = 64) => planMemory(opened, opened.file, { nCtx }, () => mb * 2 ** 20);
    // 5.7 MiB of weights (4.8 MiB of routed experts) + KV cache (6 layers x 64 positions x K and V rows of
    // 2 heads x 32 floats) + 400 MiB margin
    expect(plan(1024)).toBeUndefined();
    const streamed = plan(404);
    expect(streamed).toBeDefined();
    expect(streamed!.expertBytes).toBe(6 * 3 * 32 * 8704);
    expect(streamed!.why).toBe("more than the 404.00 MiB of memory available");
    // what is left after the non-expert weights, the KV cache and the margin
    expect(streamed!.cacheBytes).toBe(404 * 2 ** 20 - (opened.dataBytes - streamed!.expertBytes) - 6 * 64 * 2 * 64 * 4 - (400 << 20));
    expect(() => plan(401)).toThrow(/^not enough memory: the model needs .* for its non-expert weights \+ 192\.00 KiB KV cache \(-c 64\) \+ 1\.63 MiB for the experts of one layer \+ 400\.00 MiB margin; 401\.00 MiB available$/);
  });
});
