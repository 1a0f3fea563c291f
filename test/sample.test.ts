/** Sampling chain: greedy, seeded reproducibility, top-k / top-p / min-p / temperature / penalties. */
import { describe, expect, it } from "vitest";
import { Rng } from "../src/sample/rng.ts";
import {
  Sampler,
  applyTemperature,
  drawIndex,
  minP,
  softmaxCandidates,
  topK,
  topP,
  validateSamplerParams,
  DEFAULT_SAMPLER_PARAMS,
} from "../src/sample/sampler.ts";

function randomLogits(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (rng.nextDouble() - 0.5) * 8;
  return x;
}

describe("Rng", () => {
  it("is deterministic per seed and uniform-looking", () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const c = new Rng(43);
    const xs = Array.from({ length: 1000 }, () => a.nextDouble());
    expect(xs).toEqual(Array.from({ length: 1000 }, () => b.nextDouble()));
    expect(xs.slice(0, 5)).not.toEqual(Array.from({ length: 5 }, () => c.nextDouble()));
    const mean = xs.reduce((s, v) => s + v, 0) / xs.length;
    expect(mean).toBeGreaterThan(0.45);
    expect(mean).toBeLessThan(0.55);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
  });
});

describe("sampling steps", () => {
  const logits = Float32Array.from([1, 5, 3, 4, 2]);

  it("top-k keeps the k largest logits sorted descending", () => {
    const c = topK(logits, 3);
    expect(Array.from(c.ids.subarray(0, c.size))).toEqual([1, 3, 2]);
    expect(Array.from(c.logits.subarray(0, c.size))).toEqual([5, 4, 3]);
    const all = topK(logits, 0);
    expect(all.size).toBe(5);
    expect(Array.from(all.ids)).toEqual([1, 3, 2, 4, 0]);
    const big = randomLogits(5000, 1);
    const c2 = topK(big, 40);
    const sorted = Array.from(big).sort((a, b) => b - a).slice(0, 40);
    expect(Array.from(c2.logits)).toEqual(sorted);
  });

  it("top-p keeps the smallest prefix reaching p", () => {
    // probabilities of [5,4,3,2,1] are 0.636, 0.234, 0.086, 0.032, 0.012
    const c = topK(logits, 0);
    topP(c, 0.8);
    expect(c.size).toBe(2);
    const d = topK(logits, 0);
    topP(d, 0.5);
    expect(d.size).toBe(1);
    const e = topK(logits, 0);
    topP(e, 0.96); // 0.636 + 0.234 + 0.086 = 0.956 < 0.96
    expect(e.size).toBe(4);
    const f = topK(logits, 0);
    topP(f, 0.5, 3);
    expect(f.size).toBe(3);
  });

  it("min-p keeps tokens with p >= min_p * p_max", () => {
    const c = topK(logits, 0);
    minP(c, 0.1); // keeps logits >= 5 + ln 0.1 = 2.697
    expect(Array.from(c.logits.subarray(0, c.size))).toEqual([5, 4, 3]);
    const d = topK(logits, 0);
    minP(d, 0.5); // >= 4.307
    expect(d.size).toBe(1);
  });

  it("temperature scales logits; 0 keeps only the best", () => {
    const c = topK(logits, 0);
    applyTemperature(c, 2);
    expect(Array.from(c.logits)).toEqual([2.5, 2, 1.5, 1, 0.5]);
    const p = softmaxCandidates(c);
    expect(p.reduce((s, v) => s + v, 0)).toBeCloseTo(1, 12);
    const d = topK(logits, 0);
    applyTemperature(d, 0);
    expect(d.size).toBe(1);
  });

  it("draws by cumulative probability", () => {
    const c = topK(Float32Array.from([0, 0, 0, 0]), 0); // uniform over 4
    expect(drawIndex(c, 0.0)).toBe(0);
    expect(drawIndex(c, 0.26)).toBe(1);
    expect(drawIndex(c, 0.74)).toBe(2);
    expect(drawIndex(c, 0.9999)).toBe(3);
  });
});

describe("Sampler", () => {
  it("greedy (temp 0) returns the argmax whatever the seed", () => {
    const x = randomLogits(1000, 7);
    const best = Array.from(x).indexOf(Math.max(...x));
    for (const seed of [1, 2, 3]) expect(new Sampler({ temp: 0, seed }).sample(x)).toBe(best);
  });

  it("the same seed gives the same sequence, another seed another one", () => {
    const rows = Array.from({ length: 50 }, (_, i) => randomLogits(300, 100 + i).map((v) => v / 3));
    const run = (seed: number) => {
      const s = new Sampler({ seed, temp: 1.0, topK: 0, topP: 1, minP: 0 });
      return rows.map((r) => s.sample(r));
    };
    expect(run(5)).toEqual(run(5));
    expect(run(5)).not.toEqual(run(6));
  });

  it("draws with the softmax frequencies at temp 1", () => {
    const x = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.2)]);
    const s = new Sampler({ seed: 11, temp: 1, topK: 0, topP: 1, minP: 0 });
    const counts = [0, 0, 0];
    const n = 20000;
    for (let i = 0; i < n; i++) counts[s.sample(x)]++;
    expect(counts[0] / n).toBeCloseTo(0.5, 1);
    expect(counts[1] / n).toBeCloseTo(0.3, 1);
    expect(counts[2] / n).toBeCloseTo(0.2, 1);
  });

  it("never draws a token that top-k, top-p or min-p removed", () => {
    const x = randomLogits(500, 3);
    const sorted = Array.from(x).map((v, i) => [v, i] as const).sort((a, b) => b[0] - a[0]);
    const top5 = new Set(sorted.slice(0, 5).map((e) => e[1]));
    const s = new Sampler({ seed: 1, temp: 5, topK: 5, topP: 1, minP: 0 });
    for (let i = 0; i < 500; i++) expect(top5.has(s.sample(x))).toBe(true);
    const m = new Sampler({ seed: 1, temp: 5, topK: 0, topP: 1, minP: 0.5 });
    const minLogit = sorted[0][0] + Math.log(0.5);
    for (let i = 0; i < 500; i++) expect(x[m.sample(x)]).toBeGreaterThanOrEqual(minLogit);
  });

  it("repeat penalty divides positive logits and multiplies negative ones of recent tokens", () => {
    const x = Float32Array.from([2, 1.9, -1, -1.1]);
    const s = new Sampler({ temp: 0, repeatPenalty: 2, repeatLastN: 2 });
    expect(s.sample(x)).toBe(0);
    s.accept(0);
    const pen = s.applyPenalties(x);
    expect(Array.from(pen)).toEqual([1, Math.fround(1.9), -1, Math.fround(-1.1)]);
    expect(s.sample(x)).toBe(1);
    s.accept(2);
    expect(s.applyPenalties(x)[2]).toBe(-2);
    s.accept(3); // window 2: token 0 leaves the window
    const pen2 = s.applyPenalties(x);
    expect(pen2[0]).toBe(2);
    expect(pen2[3]).toBeCloseTo(-2.2, 5);
    expect(x[0]).toBe(2); // input untouched
  });

  it("rejects bad parameters with usage errors", () => {
    expect(() => validateSamplerParams({ ...DEFAULT_SAMPLER_PARAMS, topP: 1.5 })).toThrow(/--top-p/);
    expect(() => validateSamplerParams({ ...DEFAULT_SAMPLER_PARAMS, minP: -0.1 })).toThrow(/--min-p/);
    expect(() => validateSamplerParams({ ...DEFAULT_SAMPLER_PARAMS, repeatPenalty: 0 })).toThrow(/--repeat-penalty/);
    expect(() => validateSamplerParams({ ...DEFAULT_SAMPLER_PARAMS, repeatLastN: -2 })).toThrow(/--repeat-last-n/);
  });
});
