/**
 * bench/make-model.ts's generator (src/gguf/block-model.ts, src/gguf/random-blocks.ts): each real architecture
 * at tiny widths loads in tsmoe and gives finite logits and loads and generates in llama.cpp, llama-quantize-like type mixes, random blocks with the
 * asked-for weight scale, bad options.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, LlamaLogLevel, type Token } from "node-llama-cpp";
import { afterAll, describe, expect, it } from "vitest";
import { makeModelOptions } from "../bench/make-model.ts";
import { REAL_SHAPES } from "../bench/real-shapes.ts";
import { TsmoeError } from "../src/errors.ts";
import { useMoreBits, writeBlockModel } from "../src/gguf/block-model.ts";
import { randomBlocks } from "../src/gguf/random-blocks.ts";
import { loadGguf } from "../src/gguf/reader.ts";
import { writeGgufStreamed } from "../src/gguf/writer.ts";
import { loadModel } from "../src/model/load.ts";
import { dequantize } from "../src/tensor/dequantize.ts";
import { GGMLType, typeTraits } from "../src/tensor/types.ts";

const dir = mkdtempSync(join(tmpdir(), "tsmoe-make-model-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** the architecture's real options at tiny widths: 2 layers, vocabulary 512, rows of 256 */
function tiny(arch: string, type?: string) {
  const o = makeModelOptions(arch, { layers: 2, vocab: 512, type });
  const kv = arch === "olmoe" ? 4 : 2;
  return { ...o, nEmbd: 256, nHead: 4, nHeadKv: kv, headDim: 64, nFf: 256, nFfExp: 256, nExpert: arch === "mixtral" ? 8 : 4, nExpertUsed: 2, nCtx: 128 };
}

const EXPECTED_TYPES: Record<string, Record<string, GGMLType>> = {
  olmoe: {
    "output.weight": GGMLType.Q6_K, "token_embd.weight": GGMLType.Q4_K, "blk.0.ffn_down_exps.weight": GGMLType.Q4_K,
    "blk.1.ffn_down_exps.weight": GGMLType.Q6_K, "blk.1.attn_v.weight": GGMLType.Q6_K, "blk.0.ffn_gate_inp.weight": GGMLType.F32,
  },
  qwen3moe: { "output.weight": GGMLType.Q6_K, "blk.0.attn_q.weight": GGMLType.Q4_K, "blk.0.attn_k_norm.weight": GGMLType.F32 },
  "gpt-oss": {
    "output.weight": GGMLType.Q8_0, "token_embd.weight": GGMLType.Q8_0, "blk.0.attn_q.weight": GGMLType.Q8_0,
    "blk.0.ffn_up_exps.weight": GGMLType.MXFP4, "blk.1.ffn_down_exps.weight": GGMLType.MXFP4, "blk.0.ffn_up_exps.bias": GGMLType.F32,
  },
  // exactly 8 experts: llama-quantize's Mixtral rules
  mixtral: { "blk.0.attn_v.weight": GGMLType.Q8_0, "blk.0.attn_k.weight": GGMLType.Q8_0, "blk.0.attn_output.weight": GGMLType.Q5_K },
};

describe("make-model", () => {
  for (const arch of Object.keys(REAL_SHAPES))
    it(`writes a ${arch} model that tsmoe loads and evaluates to finite logits, and llama.cpp loads and runs`, async () => {
      const path = join(dir, `${arch}.gguf`);
      writeBlockModel(path, tiny(arch));
      const f = await loadGguf(path, { headerOnly: true });
      expect(f.tensors.get("token_embd.weight")!.shape).toEqual([256, 512]);
      expect((f.metadata.get("tokenizer.ggml.tokens")?.value as string[]).length).toBe(512);
      expect(f.metadata.get("general.file_type")?.value).toBe(arch === "gpt-oss" ? 38 : 15);
      for (const [name, type] of Object.entries(EXPECTED_TYPES[arch]!)) expect([name, f.tensors.get(name)?.type]).toEqual([name, type]);

      const model = await loadModel(path, { threads: 1 });
      try {
        const logits = await model.createSession({ nCtx: 16 }).eval([1, 300, 301, 302, 303]);
        expect(logits.length).toBe(512);
        expect(logits.every(Number.isFinite)).toBe(true);
        expect(Math.max(...logits)).toBeGreaterThan(Math.min(...logits));
      } finally {
        await model.dispose();
      }

      const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
      const lm = await llama.loadModel({ modelPath: path });
      const ctx = await lm.createContext({ contextSize: 16, threads: 1 });
      try {
        const got: number[] = [];
        for await (const tok of ctx.getSequence().evaluate([1, 300, 301] as Token[], { temperature: 0 })) if (got.push(tok) >= 2) break;
        expect(got.every((t) => t >= 0 && t < 512)).toBe(true);
      } finally {
        await ctx.dispose();
        await lm.dispose();
      }
    });

  it("writes Q8_0 everywhere with --type Q8_0, and any single ggml type by name", async () => {
    const a = join(dir, "q8.gguf");
    writeBlockModel(a, tiny("qwen3moe", "Q8_0"));
    const fa = await loadGguf(a, { headerOnly: true });
    expect(fa.metadata.get("general.file_type")?.value).toBe(7);
    for (const t of fa.tensors.values()) expect(t.type === GGMLType.Q8_0 || t.type === GGMLType.F32).toBe(true);
    // Q4_0 has no direct block writer: encoded from float draws
    const b = join(dir, "q4_0.gguf");
    expect(writeBlockModel(b, tiny("olmoe", "Q4_0")).blockBytes).toBe(0);
    expect((await loadGguf(b, { headerOnly: true })).tensors.get("blk.0.attn_q.weight")!.type).toBe(GGMLType.Q4_0);
  });

  it("random blocks decode to finite weights of about the asked-for spread", () => {
    for (const type of [GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K, GGMLType.MXFP4]) {
      const tr = typeTraits(type)!;
      const nBlocks = 512;
      const chunks = [...randomBlocks(type, nBlocks * tr.typeSize, 0.02, 100 * tr.typeSize)].map((c) => c.slice());
      expect(chunks.length).toBe(Math.ceil(nBlocks / 100));
      const data = new Uint8Array(nBlocks * tr.typeSize);
      let o = 0;
      for (const c of chunks) data.set(c, (o += c.length) - c.length);
      const w = dequantize(type, data, nBlocks * tr.blockSize);
      expect(w.every(Number.isFinite)).toBe(true);
      const rms = Math.sqrt(w.reduce((s, v) => s + v * v, 0) / w.length);
      expect([type, rms > 0.015 && rms < 0.027]).toEqual([type, true]);
    }
  });

  it("picks llama-quantize's use_more_bits layers (integer division)", () => {
    expect([...Array(16).keys()].filter((i) => useMoreBits(i, 16))).toEqual([0, 1, 4, 7, 10, 13, 14, 15]);
    expect([0, 1].filter((i) => useMoreBits(i, 2))).toEqual([1]);
  });

  it("rejects unknown architectures and types, and streamed tensors of the wrong size", () => {
    expect(() => makeModelOptions("gpt-5", {})).toThrow(TsmoeError);
    expect(() => writeBlockModel(join(dir, "x.gguf"), tiny("olmoe", "Q4_K_Z"))).toThrow(/unknown type 'Q4_K_Z'/);
    const t = { name: "w", type: GGMLType.Q8_0, shape: [32, 2], chunks: () => [new Uint8Array(34)] };
    expect(() => writeGgufStreamed(join(dir, "y.gguf"), [], [t])).toThrow(/needs 68 bytes, got 34/);
  });
});
