/**
 * Models larger than one WebAssembly memory: their weights spread over several memories ("arenas",
 * src/kernels/wasm/memory.ts), each with its own kernel instances in every thread, and compute the same
 * bits as in one memory. The arenas are made small here (setArenaBytes) instead of writing 5 GB files.
 * Weights that cannot get a WASM kernel are reported (src/model/kernel-report.ts).
 */
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { arenaCount, arenaOf, setArenaBytes, wasmDisabled, weightAllocator } from "../src/kernels/wasm/memory.ts";
import { matmulTsRange, quantizeActivations, type Weight } from "../src/kernels/matmul.ts";
import { wasmMatmulRange } from "../src/kernels/wasm/runtime.ts";
import { loadModel } from "../src/model/load.ts";
import { formatReferenceKernels, referenceKernels } from "../src/model/kernel-report.ts";
import { createPoolBackend, type PoolBackend } from "../src/pool/backend.ts";
import { quantize } from "../src/tensor/quantize.ts";
import { randn } from "../src/tensor/random.ts";
import { GGMLType } from "../src/tensor/types.ts";
import type { TensorEntry } from "../src/gguf/types.ts";
import { ROOT } from "./helpers.ts";

const EMBEDDED = join(ROOT, "models", "tiny-moe-32x8-q8_0.gguf");
const TOKENS = [1, 449, 466, 261, 413, 300, 12, 77, 5];
const pools: PoolBackend[] = [];
afterAll(async () => {
  await Promise.all(pools.map((p) => p.dispose()));
});

function sameBits(a: Float32Array, b: Float32Array): boolean {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length), y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

async function logits(threads: number): Promise<{ logits: Float32Array; arenas: Set<number>; slow: string | undefined }> {
  const model = await loadModel(EMBEDDED, { threads });
  try {
    const session = model.createSession({ nCtx: 64 });
    const prompt = await session.eval(TOKENS, { allLogits: true });
    const decode = await session.eval([42]);
    const out = new Float32Array(prompt.length + decode.length);
    out.set(prompt);
    out.set(decode, prompt.length);
    // where the weights went: read back through the loaded file's tensors
    const file = (model as unknown as { file: { tensors: Map<string, TensorEntry> } }).file;
    const arenas = new Set([...file.tensors.values()].filter((t) => t.shape.length >= 2).map((t) => arenaOf(t.data.buffer) ?? -1));
    return { logits: out, arenas, slow: model.slowKernels };
  } finally {
    await model.dispose();
  }
}

describe.skipIf(wasmDisabled())("weights spread over several WebAssembly memories", () => {
  it("a model over several small arenas gives the same logits as in one memory, on 1 and 2 threads", async () => {
    const one = await logits(1);
    expect([...one.arenas]).toEqual([0]);
    expect(one.slow).toBeUndefined();
    // arenas of 2 MiB: ~1.3 MiB of tensors each; the embedded model's 5.7 MiB of weights need several
    setArenaBytes(2 << 20);
    const before = arenaCount();
    for (const threads of [1, 2]) {
      const many = await logits(threads);
      expect(many.arenas.has(0)).toBe(false);
      expect(many.arenas.has(-1)).toBe(false);
      expect(many.arenas.size).toBeGreaterThanOrEqual(4);
      expect(many.slow).toBeUndefined();
      expect(sameBits(many.logits, one.logits)).toBe(true);
    }
    // the second load reused the arenas the first one freed
    expect(arenaCount() - before).toBeLessThanOrEqual(5);
  });

  it("workers started before an arena was made get it before their next job", async () => {
    setArenaBytes(2 << 20);
    const pool = await createPoolBackend(2, { workersOnly: true, minParallelMacs: 0 });
    pools.push(pool);
    const K = 256, N = 96, T = 3;
    const bytes = quantize(GGMLType.Q4_K, randn(K * N, 5), N, K);
    // more than the primary memory should take: weight arenas
    const alloc = weightAllocator(8 << 30).alloc;
    const arenasBefore = arenaCount();
    // fill arenas until a new one is made after the pool started
    let data = alloc(bytes.length);
    while (arenaCount() === arenasBefore) data = alloc(bytes.length);
    data.set(bytes);
    const w: Weight = { type: GGMLType.Q4_K, ne0: K, ne1: N, data };
    expect(arenaOf(data.buffer)).toBe(arenaCount() - 1);
    const x = randn(K * T, 6);
    const ref = new Float32Array(T * N);
    matmulTsRange(w, quantizeActivations(w.type, x, T, K), ref, N, 0, N);
    expect(wasmMatmulRange(w, quantizeActivations(w.type, x, T, K), new Float32Array(T * N), N, 0, N)).toBe(true);
    const out = new Float32Array(new SharedArrayBuffer(T * N * 4));
    pool.matmul(w, x, T, out);
    expect(sameBits(out, ref)).toBe(true);
  });

  it("a tensor larger than an arena is placed outside and reported, with the reason", async () => {
    setArenaBytes(1 << 20);
    const many = await logits(1);
    expect(many.arenas.has(-1)).toBe(true);
    expect(many.slow).toMatch(/^1 of 49 weight tensors \(544\.00 KiB of 5\.71 MiB\) run on the slower TypeScript reference kernels: larger than a WebAssembly memory/);
  });
});

describe("the reference-kernel report", () => {
  const entry = (name: string, type: GGMLType, shape: number[], nBytes: number): [string, TensorEntry] => [
    name,
    { name, type, shape, nElements: shape.reduce((a, b) => a * b, 1), nBytes, data: new Uint8Array(0) },
  ];

  it("names tensors without a WASM kernel; skips vectors and the looked-up token embedding", () => {
    // every type tsmoe multiplies has a WASM kernel: IQ2_XXS (which it does not multiply) stands for one without
    const tensors = new Map([
      entry("token_embd.weight", GGMLType.IQ2_XXS, [256, 100], 8400),
      entry("output.weight", GGMLType.Q8_0, [256, 100], 27200),
      entry("blk.0.ffn_up_exps.weight", GGMLType.IQ2_XXS, [256, 64, 8], 43008),
      entry("blk.0.ffn_down_exps.weight", GGMLType.IQ2_XXS, [64, 256, 8], 43008),
      entry("blk.0.attn_norm.weight", GGMLType.F32, [256], 1024),
    ]);
    const r = referenceKernels(tensors, false);
    expect(r.tensors).toBe(3);
    if (wasmDisabled()) return;
    expect(r.slow).toEqual([{ reason: "no WASM kernel for IQ2_XXS", tensors: 2, bytes: 86016 }]);
    expect(formatReferenceKernels(r)).toBe(
      "2 of 3 weight tensors (84.00 KiB of 110.56 KiB) run on the slower TypeScript reference kernels: no WASM kernel for IQ2_XXS (2 tensors, 84.00 KiB)",
    );
    tensors.delete("blk.0.ffn_up_exps.weight");
    tensors.delete("blk.0.ffn_down_exps.weight");
    expect(formatReferenceKernels(referenceKernels(tensors, false))).toBeUndefined();
  });
});
