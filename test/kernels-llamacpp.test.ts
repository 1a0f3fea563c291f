/**
 * The kernels against llama.cpp's own CPU matmul (through node-llama-cpp), for every weight type.
 *
 * A one-layer llama model whose attention and FFN weights are all zero leaves the residual stream equal to
 * the token embedding; the embeddings are +-1, so the final RMSNorm (epsilon 0) is exact and its output is
 * +-output_norm: the logits are then exactly one matrix product, output.weight (the type under test) times
 * activations we know bit for bit. Both sides quantize those activations the same way, so the results must
 * agree to float32 rounding (a single differently rounded activation quant would show as a far larger error).
 * Several positions are requested at once, so llama.cpp runs its batched (GEMM, and for repacked types its
 * 4-row activation quantizer) paths.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, type Llama, type Token } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { modelMetadata, modelTensors, resolveShape, type RandomModelOptions } from "../src/gguf/random-model.ts";
import { writeGguf, type TensorToWrite } from "../src/gguf/writer.ts";
import { GGMLType, typeName } from "../src/tensor/types.ts";
import { quantize, QUANTIZE_TYPES } from "../src/tensor/quantize.ts";
import { randn, randomBlocks, uniformRng } from "../src/tensor/random.ts";
import { matmul, type Weight } from "../src/kernels/matmul.ts";

const TYPES: GGMLType[] = [
  GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1,
  GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K, GGMLType.IQ4_NL, GGMLType.IQ4_XS, GGMLType.MXFP4,
];
const N_EMBD = 512; // two k-quant super-blocks per row
const N_VOCAB = 512;
const TOKENS = [1, 300, 301, 302, 303, 400, 511] as Token[];

const dir = mkdtempSync(join(tmpdir(), "tsmoe-kernels-"));
let llama: Llama;
beforeAll(async () => {
  llama = await getLlama({ gpu: false, build: "never" });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Probe {
  path: string;
  output: Weight;
  embd: Float32Array;
  outNorm: Float32Array;
}

function writeProbeModel(type: GGMLType, seed: number): Probe {
  const opts: RandomModelOptions = { arch: "llama", nLayer: 1, nEmbd: N_EMBD, nHead: 4, nHeadKv: 4, headDim: 128, nFf: 256, nVocab: N_VOCAB, rmsEps: 0, tiedOutput: false };
  const s = resolveShape(opts);
  const u = uniformRng(seed);
  const embd = new Float32Array(N_EMBD * N_VOCAB).map(() => (u() < 0.5 ? -1 : 1));
  const outNorm = randn(N_EMBD, seed + 1);
  const outValues = randn(N_EMBD * N_VOCAB, seed + 2, 0.1);
  const outData = QUANTIZE_TYPES.includes(type) ? quantize(type, outValues, N_VOCAB, N_EMBD) : randomBlocks(type, N_EMBD, N_VOCAB, seed + 3);
  const tensors: TensorToWrite[] = modelTensors("llama", s).map((spec) => {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    if (spec.name === "token_embd.weight") return { name: spec.name, type: GGMLType.F32, shape: spec.shape, data: new Uint8Array(embd.buffer) };
    if (spec.name === "output_norm.weight") return { name: spec.name, type: GGMLType.F32, shape: spec.shape, data: new Uint8Array(outNorm.buffer) };
    if (spec.name === "output.weight") return { name: spec.name, type, shape: spec.shape, data: outData };
    // every layer tensor: norms 1, projections 0 (the layer adds exactly 0 to the residual stream)
    const v = new Float32Array(n).fill(spec.shape.length === 1 ? 1 : 0);
    return { name: spec.name, type: GGMLType.F32, shape: spec.shape, data: new Uint8Array(v.buffer) };
  });
  if (!tensors.some((t) => t.name === "output.weight")) throw new Error("probe model has no separate output.weight");
  const path = join(dir, `probe-${typeName(type)}.gguf`);
  writeGguf(path, modelMetadata(opts, s), tensors);
  return { path, output: { type, ne0: N_EMBD, ne1: N_VOCAB, data: outData }, embd, outNorm };
}

/** llama.cpp's logits for TOKENS evaluated as one batch (GEMM paths), then for TOKENS[0] alone (GEMV paths). */
async function llamaLogits(path: string): Promise<{ batch: Float32Array[]; single: Float32Array }> {
  const model = await llama.loadModel({ modelPath: path });
  try {
    const ctx = await model.createContext({ contextSize: 64, threads: 1 });
    try {
      const seq = ctx.getSequence();
      const asRow = (m: ReadonlyMap<Token, number>): Float32Array => {
        const row = new Float32Array(N_VOCAB);
        for (let v = 0; v < N_VOCAB; v++) row[v] = m.get(v as Token)!;
        return row;
      };
      const items = TOKENS.map((t) => [t, { generateNext: { logits: true } }] as [Token, { generateNext: { logits: true } }]);
      const batch = (await seq.controlledEvaluate(items)).map((r) => asRow(r!.next!.logits!));
      await seq.clearHistory();
      const [one] = await seq.controlledEvaluate([[TOKENS[0]!, { generateNext: { logits: true } }]]);
      return { batch, single: asRow(one!.next!.logits!) };
    } finally {
      await ctx.dispose();
    }
  } finally {
    await model.dispose();
  }
}

/** Largest |a - b| over the rows, and the largest |b|. */
function compare(ours: Float32Array, ref: Float32Array[]): { worst: number; scale: number } {
  let worst = 0;
  let scale = 0;
  ref.forEach((row, t) => {
    for (let v = 0; v < N_VOCAB; v++) {
      expect(Number.isFinite(row[v]!)).toBe(true);
      scale = Math.max(scale, Math.abs(row[v]!));
      worst = Math.max(worst, Math.abs(ours[t * N_VOCAB + v]! - row[v]!));
    }
  });
  return { worst, scale };
}

describe("matmul kernels vs llama.cpp's CPU matmul (output.weight of a zero-layer probe model)", () => {
  for (const [k, type] of TYPES.entries()) {
    it(typeName(type), async () => {
      const p = writeProbeModel(type, 1000 + 17 * k);
      const ref = await llamaLogits(p.path);
      const x = new Float32Array(TOKENS.length * N_EMBD);
      for (let t = 0; t < TOKENS.length; t++) {
        for (let i = 0; i < N_EMBD; i++) x[t * N_EMBD + i] = p.embd[TOKENS[t]! * N_EMBD + i]! * p.outNorm[i]!;
      }
      const ours = new Float32Array(TOKENS.length * N_VOCAB);
      matmul(p.output, x, TOKENS.length, ours);
      const batch = compare(ours, ref.batch);
      const ours1 = new Float32Array(N_VOCAB);
      matmul(p.output, x.subarray(0, N_EMBD), 1, ours1);
      const single = compare(ours1, [ref.single]);
      console.log(
        `${typeName(type)}: max |ours - llama.cpp| ${batch.worst.toExponential(2)} (${TOKENS.length} tokens), ` +
          `${single.worst.toExponential(2)} (1 token); largest logit ${batch.scale.toFixed(2)}`,
      );
      expect(batch.scale).toBeGreaterThan(0.1);
      expect(batch.worst / batch.scale).toBeLessThan(2e-6);
      expect(single.worst / single.scale).toBeLessThan(2e-6);
    });
  }
});
