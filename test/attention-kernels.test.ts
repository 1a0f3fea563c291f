/**
 * Attention over a float32 KV cache (src/kernels/attention.ts): the WASM SIMD kernels give the bits of the
 * TypeScript loops (cache in the WASM memory vs in a plain SharedArrayBuffer), any split of the heads gives
 * the same bits, the pool's threads too, and the result is the float64 definition up to float32 rounding.
 */
import { afterAll, describe, expect, it } from "vitest";
import { attendHeads, type AttentionTask } from "../src/kernels/attention.ts";
import { attentionKernels } from "../src/kernels/wasm/attention-kernels.ts";
import { allocTensorBytes } from "../src/kernels/wasm/memory.ts";
import { createPoolBackend, type PoolBackend } from "../src/pool/backend.ts";
import { roundToF16 } from "../src/tensor/f16.ts";
import { randn } from "../src/tensor/random.ts";
import { FLASH_AVX512FP16_LANES, FLASH_F32_LANES, FLASH_NONE } from "../src/kernels/attention-task.ts";

function f32Array(n: number, where: "wasm" | "sab"): Float32Array {
  if (where === "sab") return new Float32Array(new SharedArrayBuffer(4 * n));
  const b = allocTensorBytes(4 * n);
  return new Float32Array(b.buffer, b.byteOffset, n);
}

interface Case {
  nHead: number;
  nHeadKv: number;
  dk: number;
  dv: number;
  nTokens: number;
  pos0: number;
  window?: number;
  sinks?: boolean;
}

const CASES: Case[] = [
  { nHead: 4, nHeadKv: 4, dk: 64, dv: 64, nTokens: 1, pos0: 0 },
  { nHead: 8, nHeadKv: 2, dk: 128, dv: 128, nTokens: 5, pos0: 37 },
  // head sizes that are not multiples of 4 or 16, odd key counts, MLA-like dk != dv
  { nHead: 3, nHeadKv: 1, dk: 42, dv: 18, nTokens: 4, pos0: 6 },
  { nHead: 2, nHeadKv: 2, dk: 7, dv: 5, nTokens: 3, pos0: 0 },
  { nHead: 4, nHeadKv: 1, dk: 160, dv: 128, nTokens: 2, pos0: 20 },
  { nHead: 4, nHeadKv: 2, dk: 64, dv: 64, nTokens: 6, pos0: 10, window: 4, sinks: true },
  // several queries at once: 8 heads per KV head (two passes of 4), 6 per KV head (4 + 2), and one head of
  // consecutive tokens (4 + 3), with head sizes off the vector width
  { nHead: 16, nHeadKv: 2, dk: 36, dv: 20, nTokens: 3, pos0: 9 },
  { nHead: 12, nHeadKv: 2, dk: 17, dv: 14, nTokens: 2, pos0: 4 },
  { nHead: 3, nHeadKv: 3, dk: 64, dv: 30, nTokens: 7, pos0: 2, sinks: true },
  { nHead: 2, nHeadKv: 2, dk: 9, dv: 11, nTokens: 5, pos0: 0 },
];

function makeTask(c: Case, where: "wasm" | "sab", seed: number, flash = FLASH_NONE): AttentionTask {
  const nKeys = c.pos0 + c.nTokens;
  const kRow = c.nHeadKv * c.dk;
  const vRow = c.nHeadKv * c.dv;
  const k = f32Array(nKeys * kRow, where);
  k.set(randn(nKeys * kRow, seed));
  const v = f32Array(nKeys * vRow, where);
  v.set(randn(nKeys * vRow, seed + 1));
  // flash attention reads an F16 cache
  if (flash !== FLASH_NONE) for (const a of [k, v]) for (let j = 0; j < a.length; j++) a[j] = roundToF16(a[j]!);
  const q = new Float32Array(new SharedArrayBuffer(4 * c.nTokens * c.nHead * c.dk));
  q.set(randn(q.length, seed + 2, 2));
  return {
    q, qRow: c.nHead * c.dk, k, v, kRow, vRow,
    out: new Float32Array(new SharedArrayBuffer(4 * c.nTokens * c.nHead * c.dv)), oRow: c.nHead * c.dv,
    nTokens: c.nTokens, pos0: c.pos0, nHead: c.nHead, nHeadKv: c.nHeadKv, dk: c.dk, dv: c.dv,
    scale: 1 / Math.sqrt(c.dk), window: c.window ?? 0,
    sinks: c.sinks ? randn(c.nHead, seed + 3) : new Float32Array(0),
    roundF16: 0,
    flash,
  };
}

/** the definition in float64 */
function reference(t: AttentionTask): Float64Array {
  const out = new Float64Array(t.nTokens * t.oRow);
  const group = t.nHead / t.nHeadKv;
  for (let i = 0; i < t.nTokens; i++) {
    const p = t.pos0 + i;
    const j0 = t.window > 0 ? Math.max(0, p - t.window + 1) : 0;
    for (let h = 0; h < t.nHead; h++) {
      const g = Math.floor(h / group);
      const s: number[] = [];
      for (let j = j0; j <= p; j++) {
        let d = 0;
        for (let e = 0; e < t.dk; e++) d += t.q[i * t.qRow + h * t.dk + e]! * t.k[j * t.kRow + g * t.dk + e]!;
        s.push(d * t.scale);
      }
      const sink = t.sinks.length ? t.sinks[h]! : -Infinity;
      const max = Math.max(sink, ...s);
      const e = s.map((x) => Math.exp(x - max));
      const z = e.reduce((a, b) => a + b, 0) + Math.exp(sink - max);
      for (let jj = 0; jj < e.length; jj++)
        for (let d = 0; d < t.dv; d++) out[i * t.oRow + h * t.dv + d] += (e[jj]! / z) * t.v[(j0 + jj) * t.vRow + g * t.dv + d]!;
    }
  }
  return out;
}

const pools: PoolBackend[] = [];
afterAll(async () => {
  await Promise.all(pools.map((p) => p.dispose()));
});

describe("attention kernels", () => {
  it("have WASM SIMD available here", () => {
    expect(attentionKernels()).toBeDefined();
  });

  it.each(CASES.map((c, i) => [i, c] as const))("case %i: WASM = TypeScript bits, any head split, float64 definition", (i, c) => {
    const wasm = makeTask(c, "wasm", 100 + 10 * i);
    const ts = { ...makeTask(c, "sab", 100 + 10 * i) };
    expect(Array.from(ts.k)).toEqual(Array.from(wasm.k));
    attendHeads(wasm, 0, c.nHead);
    attendHeads(ts, 0, c.nHead);
    const bad = wasm.out.findIndex((v, j) => !Object.is(v, ts.out[j]));
    expect(bad, `WASM and TypeScript differ at ${bad}`).toBe(-1);
    // heads in two uneven parts
    const split = { ...wasm, out: new Float32Array(wasm.out.length) };
    const cut = Math.max(1, c.nHead - 1);
    attendHeads(split, cut, c.nHead);
    attendHeads(split, 0, cut);
    expect(Array.from(split.out)).toEqual(Array.from(wasm.out));
    // one query at a time (the kernels' M = 1 path) gives the same bits, on both paths
    for (const t of [wasm, ts]) {
      const one = { ...t, out: new Float32Array(t.out.length) };
      attendHeads(one, 0, c.nHead, 1);
      const diff = one.out.findIndex((v, j) => !Object.is(v, wasm.out[j]));
      expect(diff, `one query at a time differs at ${diff}`).toBe(-1);
    }
    const ref = reference(wasm);
    let err = 0;
    for (let j = 0; j < ref.length; j++) err = Math.max(err, Math.abs(ref[j]! - wasm.out[j]!));
    expect(err).toBeLessThan(2e-5);
    expect(wasm.out.some((v) => v !== 0)).toBe(true);
  });

  it("with roundF16 (F16 cache, flash attention off): WASM = TypeScript bits; the query and the weights rounded to F16", () => {
    let err = 0;
    for (const [i, c] of CASES.entries()) {
      const wasm = { ...makeTask(c, "wasm", 300 + 10 * i), roundF16: 1 };
      const ts = { ...makeTask(c, "sab", 300 + 10 * i), roundF16: 1 };
      for (const t of [wasm, ts]) for (let j = 0; j < t.k.length; j++) t.k[j] = roundToF16(t.k[j]!);
      attendHeads(wasm, 0, c.nHead);
      attendHeads(ts, 0, c.nHead);
      const bad = wasm.out.findIndex((v, j) => !Object.is(v, ts.out[j]));
      expect(bad, `case ${i}: WASM and TypeScript differ at ${bad}`).toBe(-1);
      // = float32 attention of an F16-rounded query (the weights' rounding moves the output by < 1e-3 relative)
      const plain = makeTask(c, "sab", 300 + 10 * i);
      plain.k.set(ts.k);
      for (let j = 0; j < plain.q.length; j++) plain.q[j] = roundToF16(plain.q[j]!);
      attendHeads(plain, 0, c.nHead);
      for (let j = 0; j < plain.out.length; j++) err = Math.max(err, Math.abs(plain.out[j]! - ts.out[j]!));
    }
    expect(err).toBeGreaterThan(0);
    expect(err).toBeLessThan(2e-3);
  });

  it("give the same bits through the pool with 1, 2 and 3 threads (float32, and flash over an F16 cache)", async () => {
    for (const n of [1, 2, 3]) pools.push(await createPoolBackend(n, { minParallelMacs: 0, workersOnly: n === 3 }));
    for (const flash of [FLASH_NONE, FLASH_F32_LANES, FLASH_AVX512FP16_LANES])
      for (const [i, c] of CASES.entries()) {
        const want = makeTask(c, "wasm", 200 + 10 * i, flash);
        attendHeads(want, 0, c.nHead);
        expect(want.out.some((v) => v !== 0)).toBe(true);
        for (const p of pools) {
          const got = { ...want, out: p.allocF32(want.out.length) };
          p.attention(got);
          const bad = got.out.findIndex((v, j) => !Object.is(v, want.out[j]));
          expect(bad, `case ${i}, flash ${flash}, ${p.nThreads} threads: differs at ${bad}`).toBe(-1);
        }
        if (flash === FLASH_NONE || c.nTokens >= 64) continue;
        // flash attention is attention (F16 accumulation: within 1e-2 of the float64 definition)
        const ref = reference(want);
        let err = 0;
        for (let j = 0; j < ref.length; j++) err = Math.max(err, Math.abs(ref[j]! - want.out[j]!));
        expect(err, `case ${i}, flash ${flash}`).toBeLessThan(1e-2);
      }
  });
});
