/**
 * The forward-pass operations against their definitions computed in float64: RMSNorm, RoPE (NORM and NEOX
 * pairings, linear frequency scaling, Llama 3 frequency factors, partial rotation, YaRN), SwiGLU, softmax, and
 * attention (causal, grouped-query) against a direct computation.
 */
import { describe, expect, it } from "vitest";
import { attend, KvCache } from "../src/model/attention.ts";
import { WASM_BYTES } from "../src/kernels/backend.ts";
import { rmsNorm, rope, ropeTable, softmaxInPlace, swiglu, type RopeParams } from "../src/model/ops.ts";

/** deterministic pseudo-random values in [-2, 2) */
function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32) * 4 - 2;
  }
  return out;
}

function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  return m;
}

describe("rmsNorm", () => {
  it("divides each row by its root mean square and multiplies by the weight", () => {
    const n = 64;
    const x = values(3 * n, 1);
    const w = values(n, 2);
    const out = new Float32Array(3 * n);
    rmsNorm(x, out, 3, n, 1e-6, w);
    const want: number[] = [];
    for (let r = 0; r < 3; r++) {
      let ss = 0;
      for (let i = 0; i < n; i++) ss += x[r * n + i] ** 2;
      const scale = 1 / Math.sqrt(ss / n + 1e-6);
      for (let i = 0; i < n; i++) want.push(x[r * n + i] * scale * w[i]);
    }
    expect(maxRelErr(out, want)).toBeLessThan(1e-6);
  });
});

describe("rope", () => {
  const headDim = 16;
  const nHeads = 2;
  const positions = [0, 1, 7, 100];

  function reference(p: RopeParams, x: Float32Array): number[] {
    const out = Array.from(x);
    const half = p.nRot / 2;
    positions.forEach((pos, t) => {
      for (let h = 0; h < nHeads; h++) {
        const base = (t * nHeads + h) * headDim;
        for (let i = 0; i < half; i++) {
          const extrap = (pos * p.freqBase ** ((-2 * i) / p.nRot)) / (p.freqFactors?.[i] ?? 1);
          let theta = p.freqScale * extrap;
          let m = p.attnFactor;
          if (p.extFactor) {
            // YaRN: blend interpolated and extrapolated angles by a ramp over the pair index
            const y = (i - p.corrDims[0]) / Math.max(0.001, p.corrDims[1] - p.corrDims[0]);
            const mix = (1 - Math.min(1, Math.max(0, y))) * p.extFactor;
            theta = theta * (1 - mix) + extrap * mix;
            m *= 1 + 0.1 * Math.log(1 / p.freqScale);
          }
          const [a, b] = p.neox ? [base + i, base + i + half] : [base + 2 * i, base + 2 * i + 1];
          out[a] = (x[a] * Math.cos(theta) - x[b] * Math.sin(theta)) * m;
          out[b] = (x[a] * Math.sin(theta) + x[b] * Math.cos(theta)) * m;
        }
      }
    });
    return out;
  }

  const cases: [string, Partial<RopeParams>][] = [
    ["NORM", { neox: false }],
    ["NEOX", { neox: true }],
    ["linear scaling", { neox: true, freqScale: 0.25 }],
    ["frequency factors", { neox: false, freqFactors: Float32Array.from({ length: headDim / 2 }, (_, i) => 1 + i) }],
    ["partial rotation", { neox: true, nRot: 8 }],
    ["YaRN", { neox: true, freqScale: 0.25, extFactor: 1, attnFactor: 0.9, corrDims: [2, 5] }],
  ];
  for (const [name, over] of cases) {
    it(name, () => {
      const p: RopeParams = { nRot: headDim, neox: false, freqBase: 10000, freqScale: 1, extFactor: 0, attnFactor: 1, corrDims: [0, 0], ...over };
      const x = values(positions.length * nHeads * headDim, 3);
      const table = new Float32Array(positions.length * p.nRot);
      ropeTable(p, positions, positions.length, table);
      const y = x.slice();
      rope(p, table, y, positions.length, nHeads, headDim);
      expect(maxRelErr(y, reference(p, x))).toBeLessThan(2e-5);
      // dimensions past nRot are untouched
      for (let t = 0; t < positions.length * nHeads; t++)
        for (let d = p.nRot; d < headDim; d++) expect(y[t * headDim + d]).toBe(x[t * headDim + d]);
    });
  }
});

describe("swiglu and softmax", () => {
  it("swiglu(g, u) = g * sigmoid(g) * u", () => {
    const g = values(50, 4);
    const u = values(50, 5);
    const want = Array.from(g, (v, i) => (v / (1 + Math.exp(-v))) * u[i]);
    swiglu(g, u, 50);
    expect(maxRelErr(g, want)).toBeLessThan(1e-6);
  });
  it("softmax sums to 1 and keeps ratios", () => {
    const v = values(40, 6);
    const x = Array.from(v);
    softmaxInPlace(v, 40);
    const z = x.reduce((a, b) => a + Math.exp(b), 0);
    expect(maxRelErr(v, x.map((b) => Math.exp(b) / z))).toBeLessThan(1e-6);
  });
});

describe("attention", () => {
  it("is causal grouped-query softmax attention over the cache", () => {
    const shape = { nHead: 4, nHeadKv: 2, headDimK: 8, headDimV: 8, scale: 1 / Math.sqrt(8) };
    const nTok = 5;
    const q = values(nTok * 4 * 8, 7);
    const k = values(nTok * 2 * 8, 8);
    const v = values(nTok * 2 * 8, 9);
    const cache = new KvCache(1, 8, shape, WASM_BYTES);
    // two batches: 3 tokens, then 2 tokens at positions 3..4
    const out = new Float32Array(nTok * 4 * 8);
    cache.store(0, 0, 3, k, v);
    attend(cache, 0, shape, q, 3, 0, out);
    cache.store(0, 3, 2, k.subarray(3 * 16), v.subarray(3 * 16));
    attend(cache, 0, shape, q.subarray(3 * 32), 2, 3, out.subarray(3 * 32));
    const want: number[] = [];
    for (let t = 0; t < nTok; t++)
      for (let h = 0; h < 4; h++) {
        const g = h >> 1;
        const s: number[] = [];
        for (let j = 0; j <= t; j++) {
          let d = 0;
          for (let i = 0; i < 8; i++) d += q[(t * 4 + h) * 8 + i] * k[(j * 2 + g) * 8 + i];
          s.push(d * shape.scale);
        }
        const m = Math.max(...s);
        const e = s.map((x) => Math.exp(x - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let i = 0; i < 8; i++) want.push(e.reduce((acc, p, j) => acc + (p / z) * v[(j * 2 + g) * 8 + i], 0));
      }
    expect(maxRelErr(out, want)).toBeLessThan(1e-5);
  });
});
