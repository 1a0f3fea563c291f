/**
 * Fuzz test of the GGUF reader: seeded random mutations (byte flips, truncations, header field edits of counts,
 * lengths, types, dims and offsets, string bytes) of a small valid file. Every case must load or throw a one-line
 * GgufError naming the file, quickly; loaded files must be self-consistent.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { GgufError } from "../src/errors.ts";
import { loadGguf } from "../src/gguf/reader.ts";
import { Rng } from "../src/gguf/rng.ts";
import { summarize } from "../src/gguf/summary.ts";
import { writeGguf } from "../src/gguf/writer.ts";
import { headerLayout, patched, sampleModel, type Field } from "./gguf-raw.ts";

const CASES = 1500;
const PER_CASE_MS = 2000;

const dir = mkdtempSync(join(tmpdir(), "tsmoe-fuzz-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function interesting(rng: Rng, original: bigint): bigint {
  const picks = [
    0n, 1n, 2n, 3n, 4n, 5n, 7n, 8n, 9n, 12n, 13n, 31n, 32n, 33n, 64n, 255n, 256n, 65535n, 2n ** 31n - 1n, 2n ** 31n,
    2n ** 32n - 1n, 2n ** 32n, 2n ** 53n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n, original + 1n, original - 1n,
    original * 2n, original + 32n, BigInt(rng.u32()), (BigInt(rng.u32()) << 32n) | BigInt(rng.u32()),
  ];
  return picks[rng.int(0, picks.length)]!;
}

function mutate(rng: Rng, good: Buffer, numeric: Field[], strings: Field[], headerEnd: number): Buffer {
  const kind = rng.int(0, 5);
  let buf: Buffer = Buffer.from(good);
  const flip = (): void => {
    const pos = rng.uniform() < 0.8 ? rng.int(0, headerEnd) : rng.int(0, buf.length);
    buf[pos] = rng.uniform() < 0.5 ? rng.int(0, 256) : buf[pos]! ^ (1 << rng.int(0, 8));
  };
  const edit = (): void => {
    const f = numeric[rng.int(0, numeric.length)]!;
    const orig = f.size === 4 ? BigInt(buf.readUInt32LE(f.offset)) : buf.readBigUInt64LE(f.offset);
    buf = patched(buf, f, interesting(rng, orig));
  };
  switch (kind) {
    case 0:
      for (let k = rng.int(1, 5); k > 0; k--) flip();
      return buf;
    case 1:
      return buf.subarray(0, rng.int(0, buf.length));
    case 2:
      edit();
      return buf;
    case 3:
      edit();
      edit();
      flip();
      return buf;
    default: {
      const s = strings[rng.int(0, strings.length)]!;
      for (let i = 0; i < s.size; i++) if (rng.uniform() < 0.5) buf[s.offset + i] = rng.int(0, 256);
      return buf;
    }
  }
}

describe("GGUF reader fuzz", () => {
  it(`${CASES} seeded mutations each load or throw GgufError within ${PER_CASE_MS} ms`, async () => {
    const { metadata, tensors } = sampleModel(3);
    const src = join(dir, "good.gguf");
    writeGguf(src, metadata, tensors);
    const good = readFileSync(src);
    const layout = headerLayout(good);
    const numeric = layout.filter((f) => (f.size === 4 || f.size === 8) && !/\.(key|str|name|elem\[\d+\])$/.test(f.name));
    const strings = layout.filter((f) => /\.(key|str|name)$/.test(f.name) || (f.name.includes(".elem[") && f.size > 0 && f.size !== 4));
    const headerEnd = layout.at(-1)!.offset + layout.at(-1)!.size;
    expect(numeric.length).toBeGreaterThan(40);

    const rng = new Rng(20261130);
    let loaded = 0;
    let rejected = 0;
    let slowest = 0;
    for (let c = 0; c < CASES; c++) {
      const path = join(dir, `case.gguf`);
      writeFileSync(path, mutate(rng, good, numeric, strings, headerEnd));
      const t0 = performance.now();
      try {
        const f = await loadGguf(path);
        for (const t of f.tensors.values()) expect(t.data.length).toBe(t.nBytes);
        try {
          summarize(f);
        } catch (e) {
          if (!(e instanceof GgufError)) throw e;
        }
        loaded++;
      } catch (e) {
        if (!(e instanceof GgufError)) throw new Error(`case ${c}: not a GgufError: ${(e as Error).stack}`);
        expect(e.message.startsWith(`${path}: `)).toBe(true);
        expect(e.message).not.toContain("\n");
        rejected++;
      }
      const ms = performance.now() - t0;
      slowest = Math.max(slowest, ms);
      expect(ms, `case ${c}`).toBeLessThan(PER_CASE_MS);
    }
    console.log(`fuzz: ${loaded} loaded, ${rejected} rejected with GgufError, slowest case ${slowest.toFixed(1)} ms`);
    expect(loaded + rejected).toBe(CASES);
    expect(rejected).toBeGreaterThan(CASES / 4);
    expect(loaded).toBeGreaterThan(10);
  });
});
