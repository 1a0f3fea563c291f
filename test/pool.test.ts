/**
 * The worker-thread matmul pool: same bits as the serial kernels for 1, 2 and 3 threads on every weight
 * type, plain (non-shared) buffers accepted, and worker failures (throw, exit, silence, termination)
 * surfacing as TsmoeErrors instead of hangs.
 */
import { afterAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { pathToFileURL } from "node:url";
import { join } from "node:path";
import { createPoolBackend, type PoolBackend } from "../src/pool/backend.ts";
import { matmul, type Weight } from "../src/kernels/matmul.ts";
import { swigluRange } from "../src/kernels/glu.ts";
import { quantize } from "../src/tensor/quantize.ts";
import { randn } from "../src/tensor/random.ts";
import { GGMLType, typeName } from "../src/tensor/types.ts";
import { TsmoeError } from "../src/errors.ts";
import { loadModel } from "../src/model/load.ts";
import { allocTensorBytes } from "../src/kernels/wasm/memory.ts";
import { ROOT } from "./helpers.ts";
import { planChunks, type JobItem } from "../src/pool/job.ts";
import { SharedDecoder, SharedEncoder } from "../src/pool/shared-struct.ts";
import type { ControlMessage } from "../src/pool/protocol.ts";
import type { Activations } from "../src/kernels/activations.ts";

const WEIGHT_TYPES = [
  GGMLType.F32,
  GGMLType.F16,
  GGMLType.BF16,
  GGMLType.Q8_0,
  GGMLType.Q4_0,
  GGMLType.Q4_1,
  GGMLType.Q5_0,
  GGMLType.Q5_1,
  GGMLType.Q4_K,
  GGMLType.Q5_K,
  GGMLType.Q6_K,
];

/**
 * A weight allocated as the GGUF loader allocates tensors: in the shared WebAssembly memory (where the WASM
 * kernels read it), or in a SharedArrayBuffer of its own.
 */
function sharedWeight(type: GGMLType, ne0: number, ne1: number, seed: number, where: "wasm" | "sab" = "wasm"): Weight {
  const bytes = quantize(type, randn(ne0 * ne1, seed), ne1, ne0);
  const data = where === "wasm" ? allocTensorBytes(bytes.length) : new Uint8Array(new SharedArrayBuffer(bytes.length));
  data.set(bytes);
  return { type, ne0, ne1, data };
}

const pools: PoolBackend[] = [];
async function pool(nThreads: number, opts: Parameters<typeof createPoolBackend>[1] = {}): Promise<PoolBackend> {
  const p = await createPoolBackend(nThreads, opts);
  pools.push(p);
  return p;
}
afterAll(async () => {
  await Promise.all(pools.map((p) => p.dispose()));
});

describe("pool results", () => {
  // 100 rows: not a multiple of the chunk alignment; minParallelMacs 0 sends every product to the workers
  const shapes = [
    { ne0: 256, ne1: 100, nTokens: 1 },
    { ne0: 512, ne1: 300, nTokens: 5 },
  ];

  it("are bit-identical to the serial kernel for 1, 2 and 3 threads on every weight type (WASM and TS kernels)", async () => {
    // workersOnly: the workers compute every row (the main thread would otherwise take chunks too)
    const backends = [
      await pool(1),
      await pool(2, { minParallelMacs: 0 }),
      await pool(2, { minParallelMacs: 0, workersOnly: true }),
      await pool(3, { minParallelMacs: 0, workersOnly: true }),
    ];
    for (const type of WEIGHT_TYPES)
      for (const [si, s] of shapes.entries()) {
        const w = sharedWeight(type, s.ne0, s.ne1, 11 + si, si === 0 ? "wasm" : "sab");
        const x = randn(s.ne0 * s.nTokens, 5 + si);
        const expected = new Float32Array(s.ne1 * s.nTokens);
        matmul(w, x, s.nTokens, expected);
        expect(expected.some((v) => v !== 0)).toBe(true);
        for (const b of backends) {
          const out = b.allocF32(s.ne1 * s.nTokens);
          b.matmul(w, x, s.nTokens, out);
          const bad = out.findIndex((v, i) => !Object.is(v, expected[i]));
          expect(bad, `${typeName(type)} ${s.ne0}x${s.ne1}x${s.nTokens} with ${b.nThreads} threads differs at ${bad}`).toBe(-1);
        }
      }
  });

  it("run many products in one call (matmulMany) with the same bits as one at a time", async () => {
    const backends = [await pool(1), await pool(2, { minParallelMacs: 0 }), await pool(3, { minParallelMacs: 0, workersOnly: true })];
    // 70 items (more than one job holds), mixed types, token counts and row counts; inputs shared by
    // several items (as up and gate share theirs); outputs in plain and in shared buffers
    const types = [GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.F16, GGMLType.Q6_K, GGMLType.F32];
    const inputs = [randn(256 * 3, 31), randn(256 * 1, 32), randn(256 * 5, 33)];
    const tokens = [3, 1, 5];
    const items = Array.from({ length: 70 }, (_, i) => {
      const type = types[i % types.length]!;
      const ne1 = 16 + 48 * (i % 3) + (i % 7);
      const xi = i % inputs.length;
      return { w: sharedWeight(type, 256, ne1, 40 + i, i % 2 ? "wasm" : "sab"), x: inputs[xi]!, nTokens: tokens[xi]!, plainOut: i % 4 === 0 };
    });
    const expected = items.map(({ w, x, nTokens }) => {
      const out = new Float32Array(w.ne1 * nTokens);
      matmul(w, x, nTokens, out);
      return out;
    });
    for (const b of backends) {
      const outs = items.map(({ w, nTokens, plainOut }) => (plainOut ? new Float32Array(w.ne1 * nTokens) : b.allocF32(w.ne1 * nTokens)));
      b.matmulMany(items.map(({ w, x, nTokens }, i) => ({ w, x, nTokens, out: outs[i]! })));
      for (const [i, out] of outs.entries()) {
        const bad = out.findIndex((v, j) => !Object.is(v, expected[i]![j]));
        expect(bad, `item ${i} (${typeName(items[i]!.w.type)}) with ${b.nThreads} threads differs at ${bad}`).toBe(-1);
      }
    }
  });

  it("run fused gate/up products with SwiGLU (swigluMany) with the bits of two products and swigluRange", async () => {
    const backends = [await pool(1), await pool(2, { minParallelMacs: 0 }), await pool(3, { minParallelMacs: 0, workersOnly: true })];
    const types = [GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.F16];
    const inputs = [randn(256 * 3, 61), randn(256, 62)];
    const tokens = [3, 1];
    const items = Array.from({ length: 9 }, (_, i) => {
      const ne1 = 32 + 16 * (i % 3) + (i % 5);
      const xi = i % 2;
      // gate and up of different types in some items, as in Q4_K_M files
      return { gate: sharedWeight(types[i % 4]!, 256, ne1, 70 + i), up: sharedWeight(types[(i + (i % 2)) % 4]!, 256, ne1, 90 + i), x: inputs[xi]!, nTokens: tokens[xi]! };
    });
    const expected = items.map(({ gate, up, x, nTokens }) => {
      const g = new Float32Array(gate.ne1 * nTokens);
      const u = new Float32Array(up.ne1 * nTokens);
      matmul(gate, x, nTokens, g);
      matmul(up, x, nTokens, u);
      swigluRange(g, u, 0, g.length);
      return { g, u };
    });
    expect(expected.every(({ g }) => g.some((v) => v !== 0))).toBe(true);
    for (const b of backends) {
      const outs = items.map(({ gate, nTokens }) => ({ g: b.allocF32(gate.ne1 * nTokens), u: b.allocF32(gate.ne1 * nTokens) }));
      b.swigluMany(items.map((it, i) => ({ ...it, outGate: outs[i]!.g, outUp: outs[i]!.u })));
      for (const [i, { g, u }] of outs.entries()) {
        const bad = g.findIndex((v, j) => !Object.is(v, expected[i]!.g[j]));
        expect(bad, `item ${i} gate with ${b.nThreads} threads differs at ${bad}`).toBe(-1);
        expect(Array.from(u)).toEqual(Array.from(expected[i]!.u));
      }
    }
  });

  it("run down products with their expert sum (matmulSum) with the bits of the products and the sum in routing order", async () => {
    const backends = [await pool(1), await pool(2, { minParallelMacs: 0 }), await pool(3, { minParallelMacs: 0, workersOnly: true }), await pool(2)];
    // width 200: not a multiple of the 16-column groups; token 2 uses no expert; mixed types as in Q4_K_M
    const width = 200, nTokens = 4, maxK = 3;
    const counts = Int32Array.from([3, 2, 0, 1]);
    const types = [GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.Q8_0];
    const parts = [2, 1, 3].map((m, e) => ({ w: sharedWeight(types[e]!, 256, width, 120 + e), m }));
    // (token, slot) pairs grouped by expert: rows of ye in expert order
    const pairs = [[0, 0, 0], [1, 0, 1], [0, 1, 1], [0, 2, 2], [1, 1, 2], [3, 0, 2]] as const;
    const rowOf = new Int32Array(nTokens * maxK);
    const weights = new Float32Array(nTokens * maxK);
    pairs.forEach(([t, slot], j) => {
      rowOf[t * maxK + slot] = j;
      weights[t * maxK + slot] = Math.fround(0.1 + 0.37 * j);
    });
    const inputs = parts.map(({ m }, e) => randn(256 * m, 130 + e));
    const ye = new Float32Array(pairs.length * width);
    let row = 0;
    for (const [e, { w, m }] of parts.entries()) {
      matmul(w, inputs[e]!, m, ye.subarray(row * width, (row + m) * width));
      row += m;
    }
    const expected = new Float32Array(nTokens * width).fill(NaN);
    for (let t = 0; t < nTokens; t++)
      for (let c = 0; c < width; c++) {
        let acc = 0;
        for (let slot = 0; slot < counts[t]!; slot++) {
          const p = Math.fround(ye[rowOf[t * maxK + slot]! * width + c]! * weights[t * maxK + slot]!);
          acc = slot === 0 ? p : Math.fround(acc + p);
        }
        expected[t * width + c] = acc;
      }
    for (const b of backends) {
      const yeOut = b.allocF32(ye.length);
      const out = b.allocF32(nTokens * width).fill(NaN);
      let r0 = 0;
      const items = parts.map(({ w, m }, e) => {
        const it = { w, x: inputs[e]!, nTokens: m, out: yeOut.subarray(r0 * width, (r0 + m) * width) };
        r0 += m;
        return it;
      });
      for (let rep = 0; rep < 2; rep++) {
        b.matmulSum(items, { ye: yeOut, width, nTokens, maxK, counts, rowOf, weights, out });
        expect(Array.from(yeOut)).toEqual(Array.from(ye));
        const bad = out.findIndex((v, i) => !Object.is(v, expected[i]));
        expect(bad, `${b.nThreads} threads, round ${rep}: differs at ${bad}`).toBe(-1);
      }
    }
  });

  it("match a float64 reference for F32 weights", async () => {
    const b = await pool(2, { minParallelMacs: 0, workersOnly: true });
    const [ne0, ne1, nTokens] = [128, 70, 3];
    const w = sharedWeight(GGMLType.F32, ne0, ne1, 3);
    const wf = new Float32Array(w.data.buffer, w.data.byteOffset, ne0 * ne1);
    const x = randn(ne0 * nTokens, 4);
    const out = b.allocF32(ne1 * nTokens);
    b.matmul(w, x, nTokens, out);
    for (let t = 0; t < nTokens; t++)
      for (let r = 0; r < ne1; r++) {
        let s = 0;
        for (let i = 0; i < ne0; i++) s += wf[r * ne0 + i] * x[t * ne0 + i];
        expect(out[t * ne1 + r]).toBeCloseTo(s, 3);
      }
  });

  it("accept weights and outputs that are not in shared memory", async () => {
    const b = await pool(2, { minParallelMacs: 0, workersOnly: true });
    const w = sharedWeight(GGMLType.Q8_0, 256, 64, 8);
    const plain: Weight = { ...w, data: w.data.slice() };
    expect(plain.data.buffer instanceof SharedArrayBuffer).toBe(false);
    const x = randn(256 * 2, 9);
    const expected = new Float32Array(128);
    matmul(w, x, 2, expected);
    const out = new Float32Array(128);
    b.matmul(plain, x, 2, out);
    expect(Array.from(out)).toEqual(Array.from(expected));
    b.matmul(plain, x, 2, out); // the weight's shared copy is reused
    expect(Array.from(out)).toEqual(Array.from(expected));
  });

  it("reject inconsistent sizes and thread counts with a TsmoeError, and keep working", async () => {
    const b = await pool(2, { minParallelMacs: 0 });
    const w = sharedWeight(GGMLType.F32, 64, 64, 1);
    expect(() => b.matmul(w, new Float32Array(63), 1, b.allocF32(64))).toThrow(TsmoeError);
    expect(() => b.matmul(w, new Float32Array(64), 1, b.allocF32(10))).toThrow(/needs input 64 and output 64/);
    const short = { ...w, data: w.data.subarray(0, 100) };
    expect(() => b.matmul(short, new Float32Array(64), 1, b.allocF32(64))).toThrow(TsmoeError);
    const x = randn(64, 2);
    const expected = new Float32Array(64);
    matmul(w, x, 1, expected);
    const out = b.allocF32(64);
    b.matmul(w, x, 1, out);
    expect(Array.from(out)).toEqual(Array.from(expected));
    await expect(createPoolBackend(0)).rejects.toThrow(TsmoeError);
    await expect(createPoolBackend(1.5)).rejects.toThrow(/positive integer/);
  });
});

describe("shared structs", () => {
  const pair = () => {
    const decoder = new SharedDecoder();
    const encoder = new SharedEncoder((msg: ControlMessage) => {
      decoder.apply(structuredClone(msg));
    });
    return { encoder, decoder, slots: new Float64Array(256) };
  };
  const sab = <T extends Float32Array | Int8Array>(Ctor: new (b: SharedArrayBuffer) => T, n: number, fill: number): T => {
    const v = new Ctor(new SharedArrayBuffer(n * (Ctor === (Float32Array as unknown) ? 4 : 1)));
    v.fill(fill);
    return v;
  };

  it("decode what was encoded, with and without a shape name, and when a field changes kind", () => {
    const { encoder, decoder, slots } = pair();
    const a = { n: 3, f: sab(Float32Array, 4, 1.5), flag: true, name: "x" };
    const b = { n: 7, f: sab(Float32Array, 2, -2), flag: false, name: "x" };
    // same shape name, field f now an Int8Array: the cached layout no longer fits and a new one is made
    const c = { n: 9, f: sab(Int8Array, 3, 5), flag: true, name: "x" };
    let at = 0;
    const starts: number[] = [];
    for (const o of [a, b, c, a]) {
      starts.push(at);
      at = encoder.encode(o, slots, at, "volatile", 0, "thing");
    }
    for (const [i, o] of [a, b, c, a].entries()) {
      const { value } = decoder.decode<typeof o>(slots, starts[i]!);
      expect(value.n).toBe(o.n);
      expect(value.flag).toBe(o.flag);
      expect(value.name).toBe("x");
      expect(value.f.constructor).toBe(o.f.constructor);
      expect(Array.from(value.f)).toEqual(Array.from(o.f));
    }
    // shared: the same memory, not a copy
    const again = decoder.decode<typeof a>(slots, starts[0]!).value;
    a.f[2] = 42;
    expect(again.f[2]).toBe(42);
    a.f[2] = 1.5;
  });

  it("encode a bare view as { v } and copy non-shared volatile views into scratch", () => {
    const { encoder, decoder, slots } = pair();
    const shared = sab(Float32Array, 5, 2);
    const plain = new Float32Array([1, 2, 3]);
    const end = encoder.encodeView(shared, slots, 0, "volatile", 0);
    encoder.encodeView(plain, slots, end, "volatile", 1);
    const v0 = decoder.decode<{ v: Float32Array }>(slots, 0).value.v;
    const v1 = decoder.decode<{ v: Float32Array }>(slots, end).value.v;
    shared[4] = 9;
    expect(Array.from(v0)).toEqual([2, 2, 2, 2, 9]);
    expect(Array.from(v1)).toEqual([1, 2, 3]);
    expect(v1.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(() => encoder.encodeView(shared, new Float64Array(3), 0, "volatile")).toThrow(TsmoeError);
  });
});

describe("job plans", () => {
  // only the sizes matter to the planner: a product of ne0 x rows over one token
  const product = (ne0: number, rows: number): JobItem => ({
    kind: "matmul",
    w: { type: GGMLType.F32, ne0, ne1: rows, data: new Uint8Array(0) },
    act: { nTokens: 1 } as Activations,
    out: new Float32Array(0),
  });
  const chunksOf = (plan: ReturnType<typeof planChunks>) => {
    const out: { item: number; r0: number; r1: number }[] = [];
    for (let i = 0; i < plan.item.length; i++)
      for (let k = plan.firstChunk[i]!; k < plan.firstChunk[i + 1]!; k++) {
        const r0 = plan.rowStart[i]! + (k - plan.firstChunk[i]!) * plan.rowsPerChunk[i]!;
        out.push({ item: plan.item[i]!, r0, r1: Math.min(plan.rowEnd[i]!, r0 + plan.rowsPerChunk[i]!) });
      }
    return out;
  };

  it("cover every row of every item once, in item order, at multiples of the row alignment", () => {
    for (const items of [[product(2048, 4096)], [product(2048, 768), product(2048, 768), product(2048, 768)], [product(512, 100), product(64, 16), product(4096, 2000)]])
      for (const threads of [2, 3, 8]) {
        const plan = planChunks(items, threads, 4, 16);
        const chunks = chunksOf(plan);
        expect(chunks.length).toBe(plan.nChunks);
        for (const [i, it] of items.entries()) {
          const mine = chunks.filter((c) => c.item === i);
          expect(mine.length).toBeGreaterThan(0);
          const rows = it.kind === "matmul" ? it.w.ne1 : 0;
          let next = 0;
          for (const c of mine) {
            expect(c.r0).toBe(next);
            expect(c.r1).toBeGreaterThan(c.r0);
            if (c.r1 < rows) expect(c.r1 % 16).toBe(0);
            next = c.r1;
          }
          expect(next).toBe(rows);
        }
        expect(chunks.map((c) => c.item)).toEqual([...chunks.map((c) => c.item)].sort((a, b) => a - b));
      }
  });

  it("end with chunks finer than the bulk, so the threads run out of work together", () => {
    const plan = planChunks([product(2048, 8192)], 2, 4, 16);
    const sizes = chunksOf(plan).map((c) => c.r1 - c.r0);
    // 8 chunks of equal work, the last 2 of them cut 4 times finer
    expect(sizes.slice(0, 6)).toEqual(Array(6).fill(1024));
    expect(sizes.slice(6)).toEqual(Array(8).fill(256));
    // MoE-like jobs: the last items are the ones cut finer
    const moe = chunksOf(planChunks(Array.from({ length: 8 }, () => product(2048, 768)), 2, 4, 16));
    expect(moe.filter((c) => c.item < 6).map((c) => c.r1 - c.r0)).toEqual(Array(6).fill(768));
    expect(moe.filter((c) => c.item >= 6).every((c) => c.r1 - c.r0 < 768)).toBe(true);
  });

  it("stay within the chunk limit", () => {
    const plan = planChunks([product(64, 1 << 16)], 2, 4, 16, 100);
    expect(plan.nChunks).toBeLessThanOrEqual(100);
    expect(chunksOf(plan).at(-1)!.r1).toBe(1 << 16);
  });
});

describe("pool failures", () => {
  // enough rows that every worker takes chunks (a fault fires when its worker takes a chunk)
  const w = sharedWeight(GGMLType.Q8_0, 256, 2048, 21);
  const x = randn(256, 22);

  async function failingPool(opts: Parameters<typeof createPoolBackend>[1] = {}): Promise<PoolBackend> {
    const b = await pool(3, { minParallelMacs: 0, workersOnly: true, ...opts });
    b.matmul(w, x, 1, b.allocF32(2048)); // healthy first
    return b;
  }

  /** The error of the first of up to 200 matmuls that fails (the faulty worker may not get a chunk at once). */
  function firstFailure(b: PoolBackend): unknown {
    for (let i = 0; i < 200; i++) {
      try {
        b.matmul(w, x, 1, b.allocF32(2048));
      } catch (e) {
        return e;
      }
    }
    return undefined;
  }

  it("a worker that throws fails the run with its message, and later matmuls too", async () => {
    const b = await failingPool();
    b.injectFault(1, "throw");
    expect(firstFailure(b)).toEqual(new TsmoeError("worker thread 1: injected fault"));
    expect(() => b.matmul(w, x, 1, b.allocF32(2048))).toThrow(new TsmoeError("worker thread 1: injected fault"));
    await b.dispose();
  });

  it("a worker that exits fails the run", async () => {
    const b = await failingPool();
    b.injectFault(0, "exit");
    expect(firstFailure(b)).toEqual(new TsmoeError("worker thread 0 exited with code 7"));
    await b.dispose();
  });

  it("a worker that stops responding fails the run after the stall timeout", async () => {
    const b = await failingPool({ stallTimeoutMs: 300 });
    b.injectFault(1, "hang");
    const t0 = Date.now();
    const e = firstFailure(b);
    expect(e).toBeInstanceOf(TsmoeError);
    expect((e as Error).message).toMatch(/worker threads stopped responding/);
    expect(Date.now() - t0).toBeLessThan(10_000);
    await b.dispose();
  });

  it("a worker terminated between matmuls fails the next one", async () => {
    const b = await failingPool();
    await b.workerThreads[0]!.terminate();
    await new Promise((r) => setTimeout(r, 50)); // the exit event is delivered on the event loop
    expect(() => b.matmul(w, x, 1, b.allocF32(2048))).toThrow(/worker thread .*(exited|failed|stopped)/);
    await b.dispose();
  });
});

describe("pool in a whole model", () => {
  it("gives the embedded model the same logits with 1, 2 and 3 threads", async () => {
    const tokens = [1, 17, 42, 99, 123, 7, 300, 55, 81, 250, 12, 64];
    const logits: Float32Array[] = [];
    for (const threads of [1, 2, 3]) {
      const model = await loadModel(join(ROOT, "models", "tiny-moe-32x8-q8_0.gguf"), { threads });
      try {
        const s = model.createSession({ nCtx: 64 });
        const prompt = await s.eval(tokens, { allLogits: true });
        const next = await s.eval([5]);
        logits.push(Float32Array.from([...prompt, ...next]));
      } finally {
        await model.dispose();
      }
    }
    expect(logits[0]!.length).toBeGreaterThan(tokens.length * 100);
    expect(logits[0]!.every(Number.isFinite)).toBe(true);
    for (const l of logits.slice(1)) expect(l.findIndex((v, i) => !Object.is(v, logits[0]![i]))).toBe(-1);
  });
});

describe("pool outside vitest", () => {
  it("starts its TypeScript workers from a plain node process, as bin/tsmoe does", () => {
    const backend = pathToFileURL(join(ROOT, "src", "pool", "backend.ts")).href;
    const types = pathToFileURL(join(ROOT, "src", "tensor", "types.ts")).href;
    const script = `
      import { register } from "tsx/esm/api";
      register();
      const { createPoolBackend } = await import(${JSON.stringify(backend)});
      const { GGMLType } = await import(${JSON.stringify(types)});
      const p = await createPoolBackend(2, { minParallelMacs: 0 });
      const data = new Uint8Array(new SharedArrayBuffer(64 * 32 * 4));
      new Float32Array(data.buffer).fill(0.5);
      const out = p.allocF32(32);
      p.matmul({ type: GGMLType.F32, ne0: 64, ne1: 32, data }, new Float32Array(64).fill(2), 1, out);
      console.log(out[0], out[31]);
      await p.dispose();
    `;
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { cwd: ROOT, encoding: "utf8", timeout: 60_000 });
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).toBe("64 64");
    expect(r.status).toBe(0);
  });
});
