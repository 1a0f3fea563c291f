/** KL-divergence base files: round trip of tsmoe's writer/reader, and reading a file written by llama.cpp. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  KldBaseReader,
  KldBaseWriter,
  decodeLogProb,
  encodeLogProbs,
  recordLength,
  scoredPerChunk,
} from "../src/eval/kld-file.ts";
import { KldAccumulator, kldReport, percentile } from "../src/eval/kld-stats.ts";
import { Rng } from "../src/sample/rng.ts";
import { FIXTURES, HAVE_SHARED } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "tsmoe-kld-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function randomRow(n: number, rng: Rng, spread = 6): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (rng.nextDouble() - 0.5) * spread;
  return x;
}

function logSoftmax(x: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of x) max = Math.max(max, v);
  let s = 0;
  for (const v of x) s += Math.exp(v - max);
  const l = Math.log(s);
  return Float64Array.from(x, (v) => v - max - l);
}

describe("KLD base file (tsmoe writer and reader)", () => {
  it("encodes log-probabilities within the quantisation step and round-trips through a file", () => {
    const nVocab = 37; // odd: one pad entry
    const nCtx = 8;
    const nChunk = 3;
    const nScored = scoredPerChunk(nCtx);
    expect(nScored).toBe(3);
    expect(recordLength(nVocab)).toBe(42);
    const rng = new Rng(9);
    const tokens = Int32Array.from({ length: nCtx * nChunk }, () => rng.nextU32() % nVocab);
    const path = join(dir, "rt.kld");
    const w = new KldBaseWriter(path, { nCtx, nVocab, nChunk, tokens });
    const rows: Float32Array[] = [];
    const nlls: number[] = [];
    for (let c = 0; c < nChunk; c++) {
      const rec = w.allocChunk();
      for (let j = 0; j < nScored; j++) {
        const row = randomRow(nVocab, rng, 10);
        rows.push(row);
        const tok = tokens[c * nCtx + nCtx / 2 + j + 1];
        const r = rec.subarray(j * w.recordLen, (j + 1) * w.recordLen);
        nlls.push(encodeLogProbs(row, nVocab, r, tok));
        const exact = logSoftmax(row);
        expect(nlls[nlls.length - 1]).toBeCloseTo(-exact[tok], 4);
        const step = (Math.max(...row) - Math.min(...row)) / 65535;
        for (let i = 0; i < nVocab; i++) {
          if (exact[i] - exact[Array.from(row).indexOf(Math.max(...row))] > -16)
            expect(Math.abs(decodeLogProb(r, i) - exact[i])).toBeLessThan(step + 1e-4);
        }
      }
      w.writeChunk(rec);
    }
    w.close();
    const bytes = readFileSync(path);
    expect(bytes.subarray(0, 8).toString("latin1")).toBe("_logits_");
    expect(bytes.length).toBe(20 + nCtx * nChunk * 4 + nChunk * nScored * 42 * 2);

    const r = new KldBaseReader(path);
    expect(r.header.nCtx).toBe(nCtx);
    expect(r.header.nVocab).toBe(nVocab);
    expect(r.header.nChunk).toBe(nChunk);
    expect(Array.from(r.header.tokens)).toEqual(Array.from(tokens));
    // comparing the same logits against their own base: KLD ~ 0, same top token everywhere
    const acc = new KldAccumulator();
    for (let c = 0; c < nChunk; c++) {
      const rec = r.readChunk(c);
      for (let j = 0; j < nScored; j++) {
        const tok = tokens[c * nCtx + nCtx / 2 + j + 1];
        acc.add(rows[c * nScored + j], nVocab, rec.subarray(j * r.recordLen, (j + 1) * r.recordLen), tok);
      }
    }
    r.close();
    const s = acc.summary();
    expect(s.count).toBe(9);
    expect(s.sameTop).toBe(1);
    expect(Math.abs(s.kld)).toBeLessThan(1e-5);
    expect(s.ratio).toBeCloseTo(1, 4);
  });

  it("a different distribution has a positive KLD equal to the exact one", () => {
    const nVocab = 64;
    const rng = new Rng(3);
    const base = randomRow(nVocab, rng, 4);
    const other = Float32Array.from(base, (v) => v + (rng.nextDouble() - 0.5));
    const rec = new Uint16Array(recordLength(nVocab));
    encodeLogProbs(base, nVocab, rec, 5);
    const acc = new KldAccumulator();
    acc.add(other, nVocab, rec, 5);
    const lb = logSoftmax(base);
    const lo = logSoftmax(other);
    let exact = 0;
    for (let i = 0; i < nVocab; i++) exact += Math.exp(lb[i]) * (lb[i] - lo[i]);
    expect(acc.summary().kld).toBeGreaterThan(0);
    expect(acc.summary().kld).toBeCloseTo(exact, 4);
  });

  it("rejects files that are not KLD files or are truncated", () => {
    const bad = join(dir, "bad.kld");
    writeFileSync(bad, "hello world, not a kld file");
    expect(() => new KldBaseReader(bad)).toThrow(/does not look like/);
    const good = join(dir, "rt.kld");
    const cut = join(dir, "cut.kld");
    writeFileSync(cut, readFileSync(good).subarray(0, 300));
    expect(() => new KldBaseReader(cut)).toThrow(/truncated/);
    expect(() => new KldBaseReader(join(dir, "missing.kld"))).toThrow(/cannot read/);
  });

  it("percentiles interpolate like llama.cpp", () => {
    const v = Float32Array.from([0, 1, 2, 3, 4]);
    expect(percentile(v, 0.5)).toBe(2);
    expect(percentile(v, 0.1)).toBeCloseTo(0.4, 6);
    expect(percentile(v, 1)).toBe(4);
    expect(percentile(v, 0)).toBe(0);
  });
});

describe.skipIf(!HAVE_SHARED)("KLD base file written by llama.cpp (../shared/fixtures/kld)", () => {
  it("reads the header and reproduces llama.cpp's base perplexity from the stored log-probs", () => {
    const r = new KldBaseReader(join(FIXTURES, "kld", "qwen3moe.F32.c128.kld"));
    const { nCtx, nVocab, nChunk, tokens } = r.header;
    expect([nCtx, nVocab, nChunk]).toEqual([128, 512, 59]);
    expect(tokens[0]).toBe(1); // BOS added by the tokenizer
    let sum = 0;
    let sum2 = 0;
    let count = 0;
    for (let c = 0; c < nChunk; c++) {
      const rec = r.readChunk(c);
      for (let j = 0; j < r.nScored; j++) {
        const tok = tokens[c * nCtx + nCtx / 2 + j + 1];
        const nll = -decodeLogProb(rec.subarray(j * r.recordLen), tok);
        sum += nll;
        sum2 += Math.fround(nll * nll);
        count++;
      }
    }
    r.close();
    // llama.cpp's own line in kld.log: "Mean PPL(base)                : 2088.403999 ±  54.742028"
    const line = readFileSync(join(FIXTURES, "kld", "kld.log"), "utf8").split("\n").find((l) => l.startsWith("Mean PPL(base)"));
    const m = /:\s*([\d.]+)\s*±\s*([\d.]+)/.exec(line ?? "");
    expect(m, "kld.log has a Mean PPL(base) line").not.toBeNull();
    const mean = sum / count;
    const ppl = Math.exp(mean);
    const err = ppl * Math.sqrt((sum2 / count - mean * mean) / (count - 1));
    expect(count).toBe(59 * 63);
    expect(ppl).toBeCloseTo(Number(m![1]), 2);
    expect(err).toBeCloseTo(Number(m![2]), 2);
  });

  it("the report layout matches llama.cpp's", () => {
    const acc = new KldAccumulator();
    const rng = new Rng(1);
    const nVocab = 16;
    const rec = new Uint16Array(recordLength(nVocab));
    for (let i = 0; i < 200; i++) {
      const base = randomRow(nVocab, rng);
      encodeLogProbs(base, nVocab, rec, i % nVocab);
      acc.add(Float32Array.from(base, (v) => v + (rng.nextDouble() - 0.5) * 0.3), nVocab, rec, i % nVocab);
    }
    const ours = kldReport(acc).split("\n").map((l) => l.replace(/ *-?\d+\.\d+/g, " N"));
    const log = readFileSync(join(FIXTURES, "kld", "kld.log"), "utf8").split("\n");
    const from = log.findIndex((l) => l.startsWith("====== Perplexity statistics"));
    const theirs = log.slice(from).map((l) => l.replace(/ *-?\d+\.\d+/g, " N"));
    expect(ours.slice(0, theirs.length - 1)).toEqual(theirs.slice(0, theirs.length - 1));
  });
});
