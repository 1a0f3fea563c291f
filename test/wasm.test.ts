/**
 * The WebAssembly SIMD kernels (src/kernels/wasm/) against the plain-TypeScript reference kernels: results
 * must be bit-identical for every adopted type, shape, token count and row split, in the main thread and
 * in a worker thread sharing the memory. Also the emitter's encodings and the shared-memory allocator.
 */
import { describe, expect, it } from "vitest";
import { MessageChannel, Worker, receiveMessageOnPort } from "node:worker_threads";
import { GGMLType, rowBytes, typeName } from "../src/tensor/types.ts";
import { QUANTIZE_TYPES, quantize } from "../src/tensor/quantize.ts";
import { randn, randomBlocks, uniformRng } from "../src/tensor/random.ts";
import { blockCodec } from "../src/tensor/decode.ts";
import { matmulRange, matmulTsRange, quantizeActivations, vecDotType, type Weight } from "../src/kernels/matmul.ts";
import { packedPairs } from "../src/kernels/activations.ts";
import { Code, I32, Op, Simd, V128, encodeModule, sleb, uleb } from "../src/kernels/wasm/emitter.ts";
import { allocTensorBytes, isWasmBuffer, wasmAlloc, wasmMemory } from "../src/kernels/wasm/memory.ts";
import { MAX_DECODE_TOKENS } from "../src/kernels/wasm/decode-kernels.ts";
import { type KernelChoice, decodeKernelName, kernelModuleBytes, kernelName, tileKernelName, wasmMatmulRange, wasmRuntime } from "../src/kernels/wasm/runtime.ts";

/** Types with a batch (tile) kernel, and all the block-quantized types with a row kernel. */
const TILE_TYPES = [
  GGMLType.Q8_0, GGMLType.Q5_0, GGMLType.Q4_0, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K, GGMLType.IQ4_NL, GGMLType.MXFP4,
  GGMLType.IQ4_XS, GGMLType.Q2_K, GGMLType.Q3_K,
];
const TYPES = [...TILE_TYPES, GGMLType.Q4_1, GGMLType.Q5_1];

function wasmWeight(type: GGMLType, ne0: number, ne1: number, bytes: Uint8Array): Weight {
  const data = allocTensorBytes(bytes.length);
  data.set(bytes);
  return { type, ne0, ne1, data };
}

/** Random blocks (every bit pattern of quants) or, for types with a quantizer, quantized normal weights. */
function weightBytes(type: GGMLType, K: number, N: number, seed: number, random: boolean): Uint8Array {
  return random || !QUANTIZE_TYPES.includes(type) ? randomBlocks(type, K, N, seed) : quantize(type, randn(K * N, seed, 0.2), N, K);
}

/** Activations with some awkward rows: all zero, one huge value, tiny values. */
function activations(K: number, T: number, seed: number): Float32Array {
  const x = randn(K * T, seed);
  const u = uniformRng(seed + 1);
  for (let t = 0; t < T; t++) {
    const kind = Math.floor(u() * 4);
    if (kind === 0) x.fill(0, t * K, t * K + 32);
    if (kind === 1) x[t * K + Math.floor(u() * K)] = 1e4;
    if (kind === 2) for (let i = 0; i < K; i++) x[t * K + i]! *= 1e-6;
  }
  return x;
}

function expectSameBits(a: Float32Array, b: Float32Array, what: string): void {
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) throw new Error(`${what}: element ${i}: TS ${a[i]} vs WASM ${b[i]}`);
  }
}

/**
 * Blocks with every quant and scale at its largest magnitude (random f16 scales): K-quants (Q4_K, Q5_K,
 * Q6_K), and Q8_0 (quants -128), Q5_0 (-16), Q4_0 (-8), IQ4_NL (-127), those with every 4th block scale at
 * +-65504; Q4_1, Q5_1 (15, 31) the same; MXFP4 (-12) with the smallest exponents; Q2_K, Q3_K, IQ4_XS
 * (random f16 scales).
 */
function extremeBlocks(type: GGMLType, K: number, N: number): Uint8Array {
  const bytes = randomBlocks(type, K, N, 77);
  const q8Family = type === GGMLType.Q8_0 || type === GGMLType.Q5_0 || type === GGMLType.Q4_0 || type === GGMLType.IQ4_NL;
  const q8_1Family = type === GGMLType.Q4_1 || type === GGMLType.Q5_1;
  const bs = blockCodec(type)!.typeSize;
  for (let o = 0; o < bytes.length; o += bs) {
    if (type === GGMLType.MXFP4) {
      // quants -12 (doubled E2M1 -6), exponents 2^-128, 2^-127 (float32 subnormals), 2^-126, 2^22
      bytes.fill(0xff, o + 1, o + bs);
      bytes[o] = [0, 1, 2, 150][(o / bs) % 4]!;
    } else if (q8_1Family) {
      // quants 15 / 31, every 4th block's d and m +-65504
      bytes.fill(0xff, o + 4, o + bs);
      if ((o / bs) % 4 === 1) bytes.set([0xff, (o / bs) % 8 === 1 ? 0xfb : 0x7b, 0xff, 0x7b], o);
    } else if (q8Family) {
      bytes.fill(type === GGMLType.Q8_0 ? 0x80 : 0, o + 2, o + bs);
      if ((o / bs) % 4 === 1) bytes.set([0xff, (o / bs) % 8 === 1 ? 0xfb : 0x7b], o);
    } else if (type === GGMLType.Q6_K) {
      bytes.fill(0xff, o, o + 192);
      bytes.fill(0x80, o + 192, o + 208);
    } else if (type === GGMLType.Q2_K) bytes.fill(0xff, o, o + 80); // scales and mins 15, quants 3
    else if (type === GGMLType.Q3_K) bytes.fill(0, o, o + 108); // quants -4, scales -32
    else if (type === GGMLType.IQ4_XS) bytes.fill(0, o + 2, o + bs); // quants -127, scales -32
    else bytes.fill(0xff, o + 4, o + bs);
  }
  return bytes;
}

/**
 * The TypeScript kernels over all rows vs the WASM kernel over random row splits (each range on its own)
 * and vs the dispatching matmulRange: every output bit-identical, nothing written outside.
 */
function compareKernels(w: Weight, x: Float32Array, T: number, u: () => number, what: string, choice: KernelChoice = "auto", cuts?: number[]): void {
  const N = w.ne1;
  const act = quantizeActivations(w.type, x, T, w.ne0);
  const ref = new Float32Array(T * N + 5).fill(-1);
  matmulTsRange(w, act, ref, N, 0, N);
  const got = new Float32Array(T * N + 5).fill(-1);
  let r = 0;
  // the ranges end at the given cuts, then at random ones
  for (const cut of cuts ?? []) {
    expect(wasmMatmulRange(w, act, got, N, r, cut, choice)).toBe(true);
    r = cut;
  }
  while (r < N) {
    const end = Math.min(N, r + 1 + Math.floor(u() * N));
    expect(wasmMatmulRange(w, act, got, N, r, end, choice)).toBe(true);
    r = end;
  }
  expectSameBits(ref, got, what);
  const viaDispatch = new Float32Array(T * N + 5).fill(-1);
  matmulRange(w, act, viaDispatch, N, 0, N);
  expectSameBits(ref, viaDispatch, `${what} (matmulRange)`);
}

describe("wasm emitter", () => {
  it("encodes LEB128", () => {
    expect(uleb(0)).toEqual([0]);
    expect(uleb(127)).toEqual([127]);
    expect(uleb(128)).toEqual([0x80, 1]);
    expect(uleb(624485)).toEqual([0xe5, 0x8e, 0x26]);
    expect(uleb(2 ** 32 - 1)).toEqual([0xff, 0xff, 0xff, 0xff, 0x0f]);
    expect(sleb(-1)).toEqual([0x7f]);
    expect(sleb(63)).toEqual([63]);
    expect(sleb(64)).toEqual([0xc0, 0]);
    expect(sleb(-64)).toEqual([0x40]);
    expect(sleb(-65)).toEqual([0xbf, 0x7f]);
    expect(sleb(-123456)).toEqual([0xc0, 0xbb, 0x78]);
  });

  it("builds modules that run: loops, memory, SIMD dot products", () => {
    // f(a, n): sum over i < n of dot(i8 x 16 at a + 16 i, itself) via i32x4.dot_i16x8_s, plus a scalar check
    const c = new Code(2);
    const i = c.local(I32), s = c.local(I32), v = c.local(V128);
    c.i32(0).set(s);
    c.forLoop(i, () => c.i32(0), () => c.get(1), 1, () => {
      c.get(0).get(i).i32(4).op(Op.i32Shl, Op.i32Add).simdMem(Simd.v128Load).set(v);
      c.get(v).simd(Simd.i16x8ExtendLowI8x16S).get(v).simd(Simd.i16x8ExtendLowI8x16S).simd(Simd.i32x4DotI16x8S);
      c.get(v).simd(Simd.i16x8ExtendHighI8x16S).get(v).simd(Simd.i16x8ExtendHighI8x16S).simd(Simd.i32x4DotI16x8S);
      c.simd(Simd.i32x4Add).sumI32x4().get(s).op(Op.i32Add).set(s);
    });
    c.get(s);
    const bytes = encodeModule([{ name: "f", params: [I32, I32], results: [I32], code: c }], 1, 2);
    const mem = new WebAssembly.Memory({ initial: 1, maximum: 2, shared: true });
    const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory: mem } });
    const q = new Int8Array(mem.buffer, 64, 48);
    const u = uniformRng(3);
    let want = 0;
    for (let k = 0; k < q.length; k++) {
      q[k] = Math.floor(u() * 256) - 128;
      want += q[k]! * q[k]!;
    }
    expect((inst.exports.f as (a: number, n: number) => number)(64, 3)).toBe(want);
  });

  it("emits a kernel module that validates", () => {
    expect(WebAssembly.validate(kernelModuleBytes())).toBe(true);
    expect(wasmRuntime()).toBeDefined();
  });
});

describe("wasm kernels vs TypeScript kernels (bit-identical)", () => {
  for (const type of TYPES) {
    it(`${typeName(type)}: random blocks and quantized weights, shapes, token counts, row splits`, () => {
      const bs = blockCodec(type)!.blockSize;
      const u = uniformRng(type + 100);
      let seed = 1;
      for (const K of [bs, 2 * bs, 5 * bs, 2048]) {
        for (const N of [1, 3, 16, 37]) {
          const random = seed % 2 === 0;
          const bytes = weightBytes(type, K, N, seed, random);
          const w = wasmWeight(type, K, N, bytes);
          for (const T of [1, 2, 3, 4, 7]) {
            seed++;
            compareKernels(w, activations(K, T, seed), T, u, `${typeName(type)} K=${K} N=${N} T=${T}`);
          }
        }
      }
    });
  }

  for (const type of [GGMLType.F32, GGMLType.F16, GGMLType.BF16]) {
    it(`${typeName(type)}: random values and bit patterns, odd lengths, token counts around the groups of 4, row splits`, () => {
      const u = uniformRng(type + 200);
      let seed = 500;
      for (const K of [1, 2, 3, 5, 8, 13, 64, 67, 300]) {
        for (const N of [1, 4, 11]) {
          seed++;
          let bytes: Uint8Array;
          if (type !== GGMLType.F32 && seed % 2 === 0) {
            // every 16-bit pattern can occur: zeros, subnormals, infinities, NaNs
            bytes = new Uint8Array(K * N * 2);
            for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(u() * 256);
          } else bytes = quantize(type, randn(K * N, seed, 0.5), N, K);
          const w = wasmWeight(type, K, N, bytes);
          for (const T of [1, 2, 3, 4, 5, 8, 9]) compareKernels(w, activations(K, T, seed + T), T, u, `${typeName(type)} K=${K} N=${N} T=${T}`);
        }
      }
    });
  }

  // the batch (tile) kernels, forced for every token count (the dispatcher uses them from 2 or 4 tokens on)
  for (const type of TILE_TYPES) {
    it(`${typeName(type)} batch kernel: token counts 1..64, row ranges not starting at 0, odd row counts`, () => {
      const bs = blockCodec(type)!.blockSize;
      const u = uniformRng(type + 300);
      let seed = 700;
      for (const [K, N] of [[bs, 37], [5 * bs, 3], [2 * bs, 16], [2048, 19]] as const) {
        seed++;
        const bytes = weightBytes(type, K, N, seed, seed % 2 === 0);
        const w = wasmWeight(type, K, N, bytes);
        for (const T of [1, 2, 3, 4, 5, 7, 8, 9, 16, 33, 64]) {
          // Q6_K, Q3_K, IQ4_XS: the single-token TypeScript kernel rounds (da * d) * isum, the batch one
          // da * (d * isum) (the tile kernel's formula); the dispatcher never sends one token to a tile kernel
          if (T === 1 && kernelName(type, 1) !== kernelName(type, 2)) continue;
          compareKernels(w, activations(K, T, seed + T), T, u, `${typeName(type)} tile K=${K} N=${N} T=${T}`, "tile");
        }
      }
    });
  }

  // the single-token (decode) kernels of Q4_K, Q5_K and Q6_K, and the row kernels they replace for one token
  for (const type of [GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K]) {
    it(`${typeName(type)} single-token kernels: K up to 4096, odd row ranges, extreme quants and scales`, () => {
      const u = uniformRng(type + 400);
      let seed = 900;
      // (ranges of 64 rows or more go two rows at a time: 150 and 131 rows give such ranges, odd ones too)
      for (const [K, N] of [[256, 1], [256, 37], [512, 16], [1280, 7], [2048, 19], [4096, 9], [256, 150], [768, 131]] as const) {
        seed++;
        const bytes = weightBytes(type, K, N, seed, seed % 2 === 0);
        const w = wasmWeight(type, K, N, bytes);
        for (const choice of ["decode", "rows"] as const) compareKernels(w, activations(K, 1, seed), 1, u, `${typeName(type)} ${choice} K=${K} N=${N}`, choice);
      }
      // every quant and scale at its largest magnitude, activations all of one sign (|q8| = 127): the
      // integer sums at their bounds
      // (one row at a time, and two at a time for 67 rows)
      for (const [K, N] of [[4096, 5], [1024, 67]] as const) {
        const w = wasmWeight(type, K, N, extremeBlocks(type, K, N));
        for (const sign of [1, -1]) compareKernels(w, new Float32Array(K).fill(sign), 1, u, `${typeName(type)} extreme N=${N}, sign ${sign}`, "decode");
      }
    });
  }

  // one token of the 32-value block types: ranges of 64 rows or more go two rows at a time (rows r and r + n / 2)
  for (const type of [GGMLType.Q8_0, GGMLType.Q5_0, GGMLType.Q4_0, GGMLType.IQ4_NL, GGMLType.MXFP4, GGMLType.Q4_1, GGMLType.Q5_1]) {
    it(`${typeName(type)} single token, two rows at a time: ranges of 63 to 150 rows, odd counts, extreme quants and scales`, () => {
      const u = uniformRng(type + 600);
      let seed = 2900;
      // cuts: ranges of 64 (even), 65 and 63 (one row at a time) rows, then random ones
      for (const [K, N, cuts] of [[32, 150, [64, 129]], [2048, 131, [3, 68, 131]], [96, 64, [64]], [4096, 67, []], [160, 200, [63, 127]]] as const) {
        seed++;
        const bytes = weightBytes(type, K, N, seed, seed % 2 === 0);
        const w = wasmWeight(type, K, N, bytes);
        compareKernels(w, activations(K, 1, seed), 1, u, `${typeName(type)} pairs K=${K} N=${N}`, "rows", [...cuts]);
      }
      // every quant at its most negative, scales up to the largest f16, activations all of one sign (|q8| = 127)
      for (const [K, N] of [[2048, 67], [64, 128]] as const) {
        const w = wasmWeight(type, K, N, extremeBlocks(type, K, N));
        for (const sign of [1, -1]) compareKernels(w, new Float32Array(K).fill(sign * 1e3), 1, u, `${typeName(type)} pairs extreme N=${N}, sign ${sign}`, "rows", [N]);
      }
    });
  }

  // MXFP4's one-token kernel (./mxfp4-kernels.ts): table values + 12 against staged int16 activations,
  // the scales' f64 bits made from the exponent byte; rows two at a time from 64 rows on
  it("MXFP4 one-token kernel: ranges of 1 to 200 rows, every exponent byte, extreme quants", () => {
    const type = GGMLType.MXFP4;
    const u = uniformRng(type + 650);
    let seed = 3900;
    for (const [K, N, cuts] of [[32, 150, [64, 129]], [2048, 131, [3, 68, 131]], [96, 64, [64]], [2880, 67, []], [160, 200, [63, 127]], [64, 5, []]] as const) {
      seed++;
      const w = wasmWeight(type, K, N, randomBlocks(type, K, N, seed));
      compareKernels(w, activations(K, 1, seed), 1, u, `MXFP4 decode K=${K} N=${N}`, "decode", [...cuts]);
    }
    // every exponent byte 0..255 (2^-128 .. 2^127), each block of a row with its own
    const K = 256 * 32, N = 66;
    const bytes = randomBlocks(type, K, N, 17);
    for (let b = 0; b < (K / 32) * N; b++) bytes[17 * b] = (b * 7) % 256;
    compareKernels(wasmWeight(type, K, N, bytes), activations(K, 1, 18), 1, u, "MXFP4 decode, every exponent", "decode", [N]);
    for (const [K, N] of [[2048, 67], [64, 128]] as const) {
      const w = wasmWeight(type, K, N, extremeBlocks(type, K, N));
      for (const sign of [1, -1]) compareKernels(w, new Float32Array(K).fill(sign * 1e3), 1, u, `MXFP4 decode extreme N=${N}, sign ${sign}`, "decode", [N]);
    }
    expect(decodeKernelName(type, 1)).toBe("mxfp4_1tok");
    expect(decodeKernelName(type, 2)).toBeUndefined();
  });

  // the multi-token decode kernels (2 to MAX_DECODE_TOKENS tokens, one row at a time)
  for (const type of [GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K]) {
    it(`${typeName(type)} few-token decode kernels: 2..${MAX_DECODE_TOKENS} tokens, odd row ranges, extreme quants and scales`, () => {
      const u = uniformRng(type + 500);
      let seed = 1900;
      for (const [K, N] of [[256, 1], [512, 37], [1280, 7], [2048, 5], [768, 131]] as const) {
        seed++;
        const bytes = weightBytes(type, K, N, seed, seed % 2 === 0);
        const w = wasmWeight(type, K, N, bytes);
        for (let T = 2; T <= MAX_DECODE_TOKENS; T++) compareKernels(w, activations(K, T, seed + T), T, u, `${typeName(type)} decode K=${K} N=${N} T=${T}`, "decode");
      }
      for (const [K, N] of [[4096, 3], [1024, 66]] as const) {
        const w = wasmWeight(type, K, N, extremeBlocks(type, K, N));
        for (const T of [2, 3, MAX_DECODE_TOKENS]) {
          // tokens alternating in sign, all |q8| = 127
          const x = new Float32Array(K * T);
          for (let t = 0; t < T; t++) x.fill(t % 2 ? -1 : 1, t * K, (t + 1) * K);
          compareKernels(w, x, T, u, `${typeName(type)} decode extreme N=${N} T=${T}`, "decode");
        }
      }
    });
  }

  // the row kernels of the K-family types whose scales are read one at a time, at their integer bounds
  for (const type of [GGMLType.IQ4_XS, GGMLType.Q2_K, GGMLType.Q3_K]) {
    it(`${typeName(type)} row and batch kernels: extreme quants and scales`, () => {
      const u = uniformRng(type + 800);
      for (const [K, N] of [[4096, 5], [512, 67]] as const) {
        const w = wasmWeight(type, K, N, extremeBlocks(type, K, N));
        for (const [T, choice] of [[1, "rows"], [2, "rows"], [3, "rows"], [2, "tile"], [5, "tile"]] as const) {
          const x = new Float32Array(K * T);
          for (let t = 0; t < T; t++) x.fill(t % 2 ? -1 : 1, t * K, (t + 1) * K);
          compareKernels(w, x, T, u, `${typeName(type)} extreme N=${N} T=${T} ${choice}`, choice);
        }
      }
    });
  }

  it("dispatches batches to the tile kernels and single tokens to the row kernels", () => {
    expect(tileKernelName(GGMLType.Q8_0, 1)).toBeUndefined();
    expect(tileKernelName(GGMLType.Q8_0, 8)).toBe("q8_0");
    expect(tileKernelName(GGMLType.Q4_K, 4)).toBe("q4_k");
    expect(tileKernelName(GGMLType.Q6_K, 4)).toBe("q6_k");
    expect(tileKernelName(GGMLType.Q6_K, 1)).toBeUndefined();
    expect(tileKernelName(GGMLType.F32, 64)).toBeUndefined();
    expect(kernelName(GGMLType.MXFP4, 1)).toBe("mxfp4");
    expect(tileKernelName(GGMLType.MXFP4, 2)).toBeUndefined();
    expect(tileKernelName(GGMLType.MXFP4, 3)).toBe("mxfp4");
    expect(tileKernelName(GGMLType.IQ4_NL, 3)).toBe("iq4_nl");
    expect(kernelName(GGMLType.IQ4_XS, 1)).toBe("iq4_xs_single");
    expect(kernelName(GGMLType.Q3_K, 2)).toBe("q3_k_batch");
    expect(tileKernelName(GGMLType.Q2_K, 2)).toBe("q2_k");
    expect(tileKernelName(GGMLType.Q4_1, 64)).toBeUndefined();
    expect(kernelName(GGMLType.Q6_K, 1)).toBe("q6_k_single");
    expect(decodeKernelName(GGMLType.Q4_K, 1)).toBe("q4_k_1tok");
    expect(decodeKernelName(GGMLType.Q8_0, 1)).toBeUndefined();
    // 2 to 4 tokens of K-quants: the multi-token decode kernels where they beat the tile kernels, else the tile ones
    const few: [GGMLType, number, string | undefined][] = [
      [GGMLType.Q4_K, 2, "q4_k_2tok"],
      [GGMLType.Q4_K, 3, "q4_k_3tok"],
      [GGMLType.Q4_K, 4, undefined],
      [GGMLType.Q5_K, 4, "q5_k_4tok"],
      [GGMLType.Q5_K, 5, undefined],
      [GGMLType.Q6_K, 3, "q6_k_3tok"],
      [GGMLType.Q6_K, 4, undefined],
      [GGMLType.Q6_K, 0, undefined],
    ];
    for (const [type, T, name] of few) {
      expect(decodeKernelName(type, T)).toBe(name);
      if (T > 0) expect(tileKernelName(type, T)).toBe(name ? undefined : typeName(type).toLowerCase());
    }
    // every token count up to MAX_DECODE_TOKENS has a kernel (KernelChoice "decode")
    expect(decodeKernelName(GGMLType.Q4_K, MAX_DECODE_TOKENS, true)).toBe(`q4_k_${MAX_DECODE_TOKENS}tok`);
    expect(decodeKernelName(GGMLType.Q4_K, MAX_DECODE_TOKENS + 1, true)).toBeUndefined();
  });

  it("gives each row the same result whichever rows and tokens it is computed with", () => {
    // a row's result must not depend on the row tile (pairs vs a lone last row) or the token group it is in
    const type = GGMLType.Q8_0, K = 64, N = 5, T = 11;
    const w = wasmWeight(type, K, N, randomBlocks(type, K, N, 31));
    const act = quantizeActivations(type, activations(K, T, 32), T, K);
    const all = new Float32Array(T * N);
    expect(wasmMatmulRange(w, act, all, N, 0, N, "tile")).toBe(true);
    for (let r = 0; r < N; r++) {
      const one = new Float32Array(T * N).fill(-1);
      expect(wasmMatmulRange(w, act, one, N, r, r + 1, "tile")).toBe(true);
      for (let t = 0; t < T; t++) expect(Object.is(one[t * N + r], all[t * N + r])).toBe(true);
    }
  });

  it("writes with an output stride wider than the row count, leaving other entries alone", () => {
    // 4 tokens: the tile kernel; 2: the decode kernel
    for (const T of [4, 2]) {
      const K = 256, N = 9, stride = 20;
      const w = wasmWeight(GGMLType.Q4_K, K, N, randomBlocks(GGMLType.Q4_K, K, N, 5));
      const act = quantizeActivations(GGMLType.Q4_K, randn(K * T, 6), T, K);
      const ref = new Float32Array(T * stride).fill(7);
      const got = new Float32Array(T * stride).fill(7);
      matmulTsRange(w, act, ref, stride, 2, 8);
      expect(wasmMatmulRange(w, act, got, stride, 2, 8)).toBe(true);
      expectSameBits(ref, got, `strided T=${T}`);
      expect(got[0]).toBe(7);
      expect(got[stride + 8]).toBe(7);
    }
  });

  it("leaves out the packed token pairs where a WASM kernel runs; the TypeScript kernels make them when they run", () => {
    // Q8_0 and Q8_K activations (Q8_1 ones are quantized in TypeScript and keep their pairs)
    for (const type of TYPES.filter((t) => vecDotType(t) !== GGMLType.Q8_1)) {
      const K = 512, N = 5, T = 5;
      const w = wasmWeight(type, K, N, randomBlocks(type, K, N, 21));
      const act = quantizeActivations(type, randn(K * T, 22), T, K);
      expect(act.pk.length, typeName(type)).toBe(0);
      const a = new Float32Array(T * N), b = new Float32Array(T * N), c = new Float32Array(T * N);
      matmulTsRange(w, act, a, N, 0, N);
      matmulTsRange(w, { ...act, pk: packedPairs(act.qs, T, K) }, b, N, 0, N);
      expect(wasmMatmulRange(w, act, c, N, 0, N)).toBe(true);
      expectSameBits(a, b, `${typeName(type)} TypeScript, pairs made here or given`);
      expectSameBits(c, a, `${typeName(type)} WASM and TypeScript`);
    }
  });

  it("falls back to TypeScript for weights outside the WASM memory; every weight type has a kernel", () => {
    const K = 64, N = 4;
    const plain: Weight = { type: GGMLType.Q8_0, ne0: K, ne1: N, data: quantize(GGMLType.Q8_0, randn(K * N, 9), N, K) };
    const act = quantizeActivations(GGMLType.Q8_0, randn(K, 10), 1, K);
    expect(wasmMatmulRange(plain, act, new Float32Array(N), N, 0, N)).toBe(false);
    const a = new Float32Array(N), b = new Float32Array(N);
    matmulRange(plain, act, a, N, 0, N);
    matmulTsRange(plain, act, b, N, 0, N);
    expectSameBits(b, a, "fallback");
    const f32Plain: Weight = { type: GGMLType.F32, ne0: K, ne1: N, data: quantize(GGMLType.F32, randn(K * N, 13), N, K) };
    expect(wasmMatmulRange(f32Plain, quantizeActivations(GGMLType.F32, randn(K, 14), 1, K), new Float32Array(N), N, 0, N)).toBe(false);
    const weightTypes = Object.values(GGMLType).filter((t): t is GGMLType => typeof t === "number" && blockCodec(t) !== undefined);
    for (const type of [GGMLType.F32, GGMLType.F16, GGMLType.BF16, ...weightTypes]) {
      for (const T of [1, 2]) expect(kernelName(type, T), `${typeName(type)} x ${T}`).toBeDefined();
    }
  });
});

describe("wasm shared memory", () => {
  it("allocates aligned, disjoint tensor bytes inside the memory and refuses more than 4 GiB", () => {
    const mem = wasmMemory()!;
    const a = allocTensorBytes(100);
    const b = allocTensorBytes(1000);
    expect(a.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(a.byteOffset % 64).toBe(0);
    expect(b.byteOffset).toBeGreaterThanOrEqual(a.byteOffset + 100);
    expect(isWasmBuffer(b.buffer)).toBe(true);
    expect(b.byteOffset + b.length).toBeLessThanOrEqual(mem.buffer.byteLength);
    expect(wasmAlloc(2 ** 33)).toBeUndefined();
    const c = allocTensorBytes(10);
    expect(c.byteOffset).toBeGreaterThanOrEqual(b.byteOffset + 1000);
    expect(isWasmBuffer(new SharedArrayBuffer(mem.buffer.byteLength))).toBe(false);
  });

  it("recognises the memory's buffer when it arrives as another object (posted between threads)", () => {
    const data = allocTensorBytes(64);
    const { port1, port2 } = new MessageChannel();
    port1.postMessage(data.buffer);
    const received = receiveMessageOnPort(port2)!.message as SharedArrayBuffer;
    port1.close();
    expect(received).not.toBe(data.buffer);
    expect(isWasmBuffer(received)).toBe(true);
  });

  it("runs the kernels in a worker thread over the same memory, with the same results", async () => {
    const type = GGMLType.Q6_K, K = 512, N = 24, T = 3;
    const w = wasmWeight(type, K, N, randomBlocks(type, K, N, 21));
    const act = quantizeActivations(type, randn(K * T, 22), T, K);
    const ref = new Float32Array(T * N);
    matmulTsRange(w, act, ref, N, 0, N);
    const out = new Float32Array(new SharedArrayBuffer(T * N * 4));
    const runtimeUrl = new URL("../src/kernels/wasm/runtime.ts", import.meta.url).href;
    const memoryUrl = new URL("../src/kernels/wasm/memory.ts", import.meta.url).href;
    const code = `
      const { workerData, parentPort } = require("node:worker_threads");
      (async () => {
        (await import("tsx/esm/api")).register();
        const mem = await import(${JSON.stringify(memoryUrl)});
        const rt = await import(${JSON.stringify(runtimeUrl)});
        mem.attachWasmMemory(workerData.memory);
        const ok = rt.wasmMatmulRange(workerData.w, workerData.act, workerData.out, ${N}, 5, ${N});
        parentPort.postMessage({ ok });
      })().catch((e) => parentPort.postMessage({ error: String(e) }));`;
    const worker = new Worker(code, { eval: true, workerData: { memory: wasmMemory(), w, act, out } });
    const reply = await new Promise<{ ok?: boolean; error?: string }>((resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
    });
    await worker.terminate();
    expect(reply.error).toBeUndefined();
    expect(reply.ok).toBe(true);
    expect(wasmMatmulRange(w, act, out, N, 0, 5)).toBe(true);
    expectSameBits(ref, out, "worker");
    expect(rowBytes(type, K) * N).toBe(w.data.length);
  });
});
