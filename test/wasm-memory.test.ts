/**
 * The WASM memory's allocator gives tensor space back: freed ranges are reused first-fit and merged, and a
 * model loaded again after dispose() lands in the space the first load freed (a process that loads models
 * one after another, e.g. `bench -t 1,2` once per thread count; without reuse the 4 GiB address space fills
 * and later loads silently fall back to the slower TypeScript kernels).
 */
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { allocTensorBytes, freeTensorBytes, isWasmBuffer, wasmDisabled, wasmFreeBytes } from "../src/kernels/wasm/memory.ts";
import { loadModel } from "../src/model/load.ts";
import { ROOT } from "./helpers.ts";

const EMBEDDED = join(ROOT, "models", "tiny-moe-32x8-q8_0.gguf");

describe.skipIf(wasmDisabled())("WASM tensor memory is given back", () => {
  it("reuses freed ranges first-fit, merges neighbours, zero-fills, and rejects a double free", () => {
    const a = allocTensorBytes(1000);
    const b = allocTensorBytes(5000);
    const c = allocTensorBytes(64);
    expect(isWasmBuffer(a.buffer)).toBe(true);
    a.fill(7);
    const free0 = wasmFreeBytes();
    freeTensorBytes(a);
    expect(wasmFreeBytes()).toBe(free0 + 1024);
    const d = allocTensorBytes(900);
    expect(d.byteOffset).toBe(a.byteOffset);
    expect(d.every((v) => v === 0)).toBe(true);
    freeTensorBytes(d);
    freeTensorBytes(b);
    // a and b were adjacent: one merged range of 1024 + 5056 bytes now holds a 6000-byte tensor
    const e = allocTensorBytes(6000);
    expect(e.byteOffset).toBe(a.byteOffset);
    expect(() => freeTensorBytes(c)).not.toThrow();
    expect(() => freeTensorBytes(c)).toThrow(/already free/);
    freeTensorBytes(e);
  });

  it("a model loaded again after dispose() reuses the freed space and computes the same logits", async () => {
    const tokens = [1, 449, 466, 261, 413];
    const first = await loadModel(EMBEDDED, { threads: 1 });
    const logits1 = await first.createSession({ nCtx: 16 }).eval(tokens, { allLogits: true });
    const before = wasmFreeBytes();
    await first.dispose();
    await first.dispose(); // idempotent
    const freed = wasmFreeBytes() - before;
    expect(freed).toBeGreaterThan(5_000_000); // the model's ~6 MB of tensors
    const second = await loadModel(EMBEDDED, { threads: 1 });
    expect(wasmFreeBytes()).toBeLessThan(before + freed - 5_000_000);
    const logits2 = await second.createSession({ nCtx: 16 }).eval(tokens, { allLogits: true });
    await second.dispose();
    expect(logits2).toEqual(logits1);
  });
});
