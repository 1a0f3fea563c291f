/**
 * The WASM SIMD activation quantizers (src/kernels/wasm/quantize-kernels.ts) against the TypeScript
 * references (src/tensor/quantize-act.ts): identical bytes and float bits for Q8_0 and Q8_K on random rows
 * and edge cases, and quantizeActivations takes the WASM path.
 */
import { describe, expect, it } from "vitest";
import { quantizeQ8Blocks, quantizeQ8KBlocks } from "../src/tensor/quantize-act.ts";
import { quantizeKernels, quantizeQ8KWasm, quantizeQ8Wasm, quantizeWasmRuns } from "../src/kernels/wasm/quantize-kernels.ts";
import { quantizeActivations } from "../src/kernels/activations.ts";
import { GGMLType } from "../src/tensor/types.ts";
import { allocTensorBytes, isWasmBuffer } from "../src/kernels/wasm/memory.ts";
import { rng } from "./tokenizer-helpers.ts";

/** n elements of type V in the WASM memory (allocTensorBytes) */
function inWasm<V extends Float32Array | Int8Array | Int32Array>(Ctor: { new (b: ArrayBufferLike, o: number, n: number): V; BYTES_PER_ELEMENT: number }, n: number): V {
  const bytes = allocTensorBytes(n * Ctor.BYTES_PER_ELEMENT);
  expect(isWasmBuffer(bytes.buffer)).toBe(true);
  return new Ctor(bytes.buffer, bytes.byteOffset, n);
}

function randomRow(n: number, r: () => number, scale: number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (r() * 2 - 1) * scale * (r() < 0.05 ? 8 : 1);
  return x;
}

/** edge-case blocks written into x (n a multiple of 256): one kind per 256-value block, cycling */
function withEdgeCases(x: Float32Array, r: () => number): Float32Array {
  const kinds = 7;
  for (let b = 0; b < x.length / 256; b++) {
    const o = b * 256;
    const blk = x.subarray(o, o + 256);
    switch (b % kinds) {
      case 0: // all zeros
        blk.fill(0);
        break;
      case 1: // exact ties: amax (Q8_0) / max (Q8_K) = -127 makes the multiplier 1 (resp. -1 ... 1)
        for (let j = 0; j < 256; j++) blk[j] = Math.floor(r() * 250 - 125) + 0.5;
        for (let j = 0; j < 256; j += 32) blk[j + ((j / 32) % 32)] = -127;
        break;
      case 2: // the largest magnitude twice, with different signs (first positive, then negative, and the reverse)
        for (let j = 0; j < 256; j++) blk[j] = r() * 2 - 1;
        blk[37] = b % 2 ? 3.5 : -3.5;
        blk[200] = -blk[37]!;
        for (let j = 0; j < 256; j += 32) blk[j + 5] = b % 2 ? -1.75 : 1.75;
        break;
      case 3: // very large values
        for (let j = 0; j < 256; j++) blk[j] = (r() * 2 - 1) * 3e38;
        break;
      case 4: // very small values, including subnormals (127 / amax overflows to infinity)
        for (let j = 0; j < 256; j++) blk[j] = (r() * 2 - 1) * (j < 128 ? 1e-38 : 1e-42);
        break;
      case 5: // zeros mixed with tiny and sign-flipped values; a negative subnormal maximum
        for (let j = 0; j < 256; j++) blk[j] = j % 3 === 0 ? 0 : (r() * 2 - 1) * 1e-44;
        blk[3] = -3e-44;
        break;
      case 6: // signed zeros and infinities
        for (let j = 0; j < 256; j++) blk[j] = j % 2 ? -0 : (r() * 2 - 1);
        blk[100] = Infinity;
        blk[300 % 256] = -Infinity;
        break;
    }
  }
  return x;
}

function bits(f: Float32Array): Uint32Array {
  return new Uint32Array(f.buffer, f.byteOffset, f.length);
}

function checkQ8_0(x: Float32Array): void {
  const n = x.length;
  const qsRef = new Int8Array(n), dRef = new Float32Array(n / 32);
  const qs = new Int8Array(n + 64).fill(99), d = new Float32Array(n / 32 + 4).fill(99);
  quantizeQ8Blocks(x, 0, n, qsRef, 0, dRef, 0);
  expect(quantizeQ8Wasm(x, 0, n, qs, 64, d, 4)).toBe(true);
  expect(qs.subarray(64)).toEqual(qsRef);
  expect(bits(d.subarray(4))).toEqual(bits(dRef));
  expect(qs[63]).toBe(99);
  expect(d[3]).toBe(99);
}

function checkQ8K(x: Float32Array): void {
  const n = x.length;
  const qsRef = new Int8Array(n), dRef = new Float32Array(n / 256), bsRef = new Int32Array(n / 16);
  const qs = new Int8Array(n), d = new Float32Array(n / 256 + 1).fill(99), bs = new Int32Array(n / 16 + 16).fill(99);
  quantizeQ8KBlocks(x, 0, n, qsRef, 0, dRef, 0, bsRef);
  expect(quantizeQ8KWasm(x, 0, n, qs, 0, d, 1, bs)).toBe(true);
  expect(qs).toEqual(qsRef);
  expect(bits(d.subarray(1))).toEqual(bits(dRef));
  expect(bs.subarray(16)).toEqual(bsRef);
  expect(d[0]).toBe(99);
  expect(bs[15]).toBe(99);
}

describe("WASM activation quantizers", () => {
  it("are available (WASM is on in the tests)", () => {
    expect(quantizeKernels()).toBeDefined();
  });

  it("Q8_0: bit-identical to quantizeQ8Blocks on random rows and edge cases, K = 256..4096", () => {
    const r = rng(1);
    for (const K of [256, 512, 1024, 2048, 4096]) {
      for (const scale of [1, 0.01, 100]) checkQ8_0(randomRow(K, r, scale));
      checkQ8_0(withEdgeCases(randomRow(K, r, 1), r));
    }
    // block counts that are not a multiple of 4 (the kernel's one-block tail): every edge-case block once in the tail
    for (const K of [32, 96, 224, 416, 2080]) checkQ8_0(randomRow(K, r, 1));
    const e = withEdgeCases(randomRow(7 * 256, r, 1), r);
    const nE = e.length / 32;
    for (let o = 0; o < nE; o++) {
      const x = new Float32Array(5 * 32);
      for (let k = 0; k < 5; k++) x.set(e.subarray(((o + k) % nE) * 32, ((o + k) % nE) * 32 + 32), k * 32);
      checkQ8_0(x);
    }
    // ties with multiplier 1 in every 32-block: amax = 127
    const t = new Float32Array(2048);
    for (let i = 0; i < t.length; i++) t[i] = i % 32 === 7 ? (i % 64 ? 127 : -127) : Math.floor(r() * 250 - 125) + 0.5;
    checkQ8_0(t);
  });

  it("Q8_K: bit-identical to quantizeQ8KBlocks on random rows and edge cases, K = 256..4096", () => {
    const r = rng(2);
    for (const K of [256, 512, 1024, 2048, 4096]) {
      for (const scale of [1, 0.01, 100]) checkQ8K(randomRow(K, r, scale));
      checkQ8K(withEdgeCases(randomRow(K, r, 1), r));
    }
  });

  it("long inputs (more than one kernel call of 65536 values) give the same results", () => {
    const r = rng(6);
    const n = 65536 + 1280;
    const x = randomRow(n, r, 1);
    x.set(withEdgeCases(randomRow(7 * 256, r, 1), r), 65536 - 512);
    const runs = quantizeWasmRuns();
    checkQ8_0(x);
    checkQ8K(x);
    expect(quantizeWasmRuns()).toBe(runs + 4);
  });

  it("NaN values are ignored for the scale and quantize to 0, as in the reference", () => {
    const r = rng(3);
    const x = randomRow(1024, r, 1);
    x[5] = NaN;
    x[300] = NaN;
    x[600] = -NaN;
    checkQ8_0(x);
    checkQ8K(x);
  });

  it("reads and writes arrays in place when they live in the WASM memory", () => {
    const r = rng(5);
    const K = 1024;
    const src = withEdgeCases(randomRow(K, r, 3), r);
    const x = inWasm(Float32Array, K + 8);
    x.set(src, 8);
    const qs = inWasm(Int8Array, K + 32), d = inWasm(Float32Array, K / 32 + 2), bs = inWasm(Int32Array, K / 16 + 32);
    const qsRef = new Int8Array(K), dRef = new Float32Array(K / 32), bsRef = new Int32Array(K / 16);
    quantizeQ8Blocks(src, 0, K, qsRef, 0, dRef, 0);
    expect(quantizeQ8Wasm(x, 8, K, qs, 32, d, 2)).toBe(true);
    expect(qs.subarray(32)).toEqual(qsRef);
    expect(bits(d.subarray(2))).toEqual(bits(dRef));
    const dKRef = new Float32Array(K / 256);
    quantizeQ8KBlocks(src, 0, K, qsRef, 0, dKRef, 0, bsRef);
    expect(quantizeQ8KWasm(x, 8, K, qs, 32, d, 2, bs)).toBe(true);
    expect(qs.subarray(32)).toEqual(qsRef);
    expect(bits(d.subarray(2, 2 + K / 256))).toEqual(bits(dKRef));
    expect(bs.subarray(32)).toEqual(bsRef);
    expect(bs.subarray(0, 32)).toEqual(new Int32Array(32));
  });

  it("quantizeActivations takes the WASM path and matches the TypeScript reference for several tokens", () => {
    const r = rng(4);
    for (const [wtype, dotType] of [
      [GGMLType.Q4_0, GGMLType.Q8_0],
      [GGMLType.Q4_K, GGMLType.Q8_K],
    ] as const) {
      for (const nTokens of [1, 3, 5]) {
        const K = 768;
        const x = withEdgeCases(randomRow(nTokens * K, r, 2), r);
        const runs = quantizeWasmRuns();
        const act = quantizeActivations(wtype, x, nTokens, K);
        expect(quantizeWasmRuns()).toBe(runs + 1);
        expect(act.dotType).toBe(dotType);
        const bs = dotType === GGMLType.Q8_K ? 256 : 32;
        const qsRef = new Int8Array(nTokens * K), dRef = new Float32Array((nTokens * K) / bs), bsRef = new Int32Array((nTokens * K) / 16);
        for (let t = 0; t < nTokens; t++) {
          if (dotType === GGMLType.Q8_K) quantizeQ8KBlocks(x, t * K, K, qsRef, t * K, dRef, (t * K) / bs, bsRef);
          else quantizeQ8Blocks(x, t * K, K, qsRef, t * K, dRef, (t * K) / bs);
        }
        expect(act.qs).toEqual(qsRef);
        expect(bits(act.d)).toEqual(bits(dRef));
        if (dotType === GGMLType.Q8_K) expect(act.bsums).toEqual(bsRef);
      }
    }
  });
});
