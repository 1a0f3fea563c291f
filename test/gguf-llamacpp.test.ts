/**
 * Conformance of generated random models with llama.cpp (through node-llama-cpp): every architecture, F32 and a
 * quantized type, plus non-default shape knobs, must load (llama.cpp checks every tensor's name and shape against
 * the hyper-parameters it read), report the hyper-parameters we wrote (llama.cpp's own `print_info` log lines),
 * and evaluate to a finite probability distribution over the whole vocabulary.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, LlamaLogLevel, type Llama, type Token } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { modelMetadata, modelTensors, resolveShape, writeRandomModel, type RandomModelOptions } from "../src/gguf/random-model.ts";
import { GGMLType } from "../src/tensor/types.ts";

const dir = mkdtempSync(join(tmpdir(), "tsmoe-llamacpp-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let llama: Llama;
let log: string[] = [];
beforeAll(async () => {
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.debug, logger: (_level, msg) => void log.push(msg) });
});

/** `print_info: key = value` lines of llama.cpp's model loader. */
function printInfo(lines: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const chunk of lines)
    for (const line of chunk.split("\n")) {
      const r = /print_info: ([^=]+?)\s*=\s*(.*)$/.exec(line.trim());
      if (r) m.set(r[1]!, r[2]!.trim());
    }
  return m;
}

/** Waits until llama.cpp's loader log for the model just loaded has arrived (it is delivered asynchronously). */
async function loadInfo(): Promise<Map<string, string>> {
  for (let waited = 0; waited < 10_000; waited += 20) {
    const info = printInfo(log);
    if (info.has("max token length")) return info;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error("llama.cpp print_info log lines did not arrive");
}

/** "922.88 K" -> { value: 922.88, unit: 1000 } */
function parseCount(s: string): { value: number; unit: number } {
  const m = /^([\d.]+)\s*([KMB]?)$/.exec(s);
  if (!m) throw new Error(`cannot parse count '${s}'`);
  return { value: Number(m[1]), unit: { "": 1, K: 1e3, M: 1e6, B: 1e9 }[m[2] as "" | "K" | "M" | "B"] };
}

/** each architecture in F32 and one quantized type */
const PER_ARCH: [string, RandomModelOptions, GGMLType][] = [
  ["llama dense", { arch: "llama", seed: 1 }, GGMLType.Q4_K],
  ["llama MoE (Mixtral)", { arch: "llama", seed: 2, nExpert: 8, nExpertUsed: 2 }, GGMLType.Q8_0],
  ["qwen2", { arch: "qwen2", seed: 3 }, GGMLType.Q4_0],
  ["qwen3", { arch: "qwen3", seed: 4 }, GGMLType.Q6_K],
  ["qwen2moe", { arch: "qwen2moe", seed: 5 }, GGMLType.Q4_K],
  ["qwen3moe", { arch: "qwen3moe", seed: 6 }, GGMLType.Q4_K],
  ["olmoe", { arch: "olmoe", seed: 7 }, GGMLType.Q5_K],
  ["glm4moe", { arch: "glm4moe", seed: 11 }, GGMLType.Q4_K],
  ["deepseek2", { arch: "deepseek2", seed: 12 }, GGMLType.Q8_0],
  ["gpt-oss", { arch: "gpt-oss", seed: 13 }, GGMLType.Q8_0],
];

const CASES: { label: string; opts: RandomModelOptions }[] = [
  ...PER_ARCH.flatMap(([label, opts, quant]) => [
    { label: `${label} F32`, opts },
    { label: `${label} ${GGMLType[quant]}`, opts: { ...opts, weightType: quant } },
  ]),
  {
    label: "deepseek2 custom knobs",
    opts: {
      arch: "deepseek2", seed: 14, nLayer: 3, nHead: 2, nExpert: 6, nExpertUsed: 2, ropeDims: 16,
      extra: { nLeadingDense: 2, nExpertGroups: 3, nGroupUsed: 2, qLoraRank: 64, kvLoraRank: 96, qkNopeDim: 32, vHeadDim: 48, nExpertShared: 2 },
    },
  },
  { label: "glm4moe custom knobs", opts: { arch: "glm4moe", seed: 15, nLayer: 3, headDim: 32, nHead: 8, nHeadKv: 4, extra: { nLeadingDense: 0, nExpertShared: 2 } } },
  {
    label: "qwen3moe custom knobs, tied output, Q8_0",
    opts: {
      arch: "qwen3moe", seed: 8, nLayer: 3, nEmbd: 128, nHead: 6, nHeadKv: 3, headDim: 32, nExpert: 6, nExpertUsed: 3,
      nFfExp: 64, nFf: 96, nVocab: 400, nCtx: 512, tiedOutput: true, ropeBase: 20000, rmsEps: 1e-5, weightType: GGMLType.Q8_0,
      chatTemplate: true,
    },
  },
  {
    label: "llama dense custom knobs, separate output, F16",
    opts: { arch: "llama", seed: 9, nLayer: 3, nHead: 8, nHeadKv: 8, headDim: 32, nFf: 384, tiedOutput: false, weightType: GGMLType.F16 },
  },
  {
    label: "qwen2moe custom knobs, BF16",
    opts: { arch: "qwen2moe", seed: 10, nExpert: 4, nExpertUsed: 1, nFfExp: 64, nFfShexp: 96, nHead: 8, nHeadKv: 4, headDim: 32, weightType: GGMLType.BF16 },
  },
];

describe("generated models load in llama.cpp with the hyper-parameters written", () => {
  for (const { label, opts } of CASES) {
    it(label, async () => {
      const path = await writeRandomModel(join(dir, `${label.replace(/[^a-z0-9]+/gi, "_")}.gguf`), opts);
      const s = resolveShape(opts);
      const meta = modelMetadata(opts, s);
      log = [];
      const model = await llama.loadModel({ modelPath: path });
      try {
        const info = await loadInfo();
        const num = (k: string): number => {
          expect(info.has(k), `llama.cpp print_info has ${k}`).toBe(true);
          return Number(info.get(k));
        };
        const written = (key: string): number => {
          const e = meta.find((m) => m.key === `${opts.arch}.${key}`);
          expect(e, key).toBeDefined();
          return e!.value as number;
        };
        expect(info.get("arch")).toBe(opts.arch);
        expect(num("n_layer")).toBe(s.nLayer);
        expect(num("n_embd")).toBe(s.nEmbd);
        expect(num("n_ctx_train")).toBe(s.nCtx);
        expect(num("n_head")).toBe(s.nHead);
        expect(num("n_head_kv")).toBe(written("attention.head_count_kv"));
        expect(num("n_embd_head_k")).toBe(written("attention.key_length"));
        expect(num("n_embd_head_v")).toBe(written("attention.value_length"));
        if (opts.arch !== "deepseek2") {
          expect(num("n_head_kv")).toBe(s.nHeadKv);
          expect(num("n_embd_head_k")).toBe(s.headDim);
        }
        expect(num("n_rot")).toBe(s.ropeDims);
        expect(num("n_ff")).toBe(written("feed_forward_length"));
        if (s.nExpert > 0) {
          expect(num("n_expert")).toBe(s.nExpert);
          expect(num("n_expert_used")).toBe(s.nExpertUsed);
        } else expect(info.get("n_expert") ?? "0").toBe("0");
        expect(num("freq_base_train")).toBe(s.ropeBase);
        expect(num("f_norm_rms_eps")).toBeCloseTo(s.rmsEps, 12);
        expect(num("n_vocab")).toBe(s.nVocab);
        expect(info.get("vocab type")).toBe("SPM");
        if (info.has("n_ff_exp")) expect(num("n_ff_exp")).toBe(s.nFfExp);
        if (opts.arch === "qwen2moe") expect(num("n_ff_shexp")).toBe(s.nFfShexp);
        // llama (Mixtral) and olmoe take the expert width from feed_forward_length
        if (s.nExpert > 0 && (opts.arch === "llama" || opts.arch === "olmoe")) expect(num("n_ff")).toBe(s.nFfExp);
        if (s.nExpert === 0 || opts.arch === "glm4moe" || opts.arch === "deepseek2") expect(num("n_ff")).toBe(s.nFf);
        if (opts.arch === "deepseek2") {
          expect(num("n_lora_q")).toBe(s.extra.qLoraRank);
          expect(num("n_lora_kv")).toBe(s.extra.kvLoraRank);
          expect(num("n_expert_groups")).toBe(s.extra.nExpertGroups);
          expect(num("n_group_used")).toBe(s.extra.nGroupUsed);
          expect(num("n_expert_shared")).toBe(s.extra.nExpertShared);
          expect(num("n_layer_dense_lead")).toBe(s.extra.nLeadingDense);
        }
        if (opts.arch === "gpt-oss") expect(num("n_swa")).toBe(s.extra.slidingWindow);

        expect(model.trainContextSize).toBe(s.nCtx);
        expect(model.embeddingVectorSize).toBe(s.nEmbd);
        expect(model.tokens.bos).toBe(1);
        expect(model.tokens.eos).toBe(2);
        const nParams = modelTensors(opts.arch, s).reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
        const { value, unit } = parseCount(info.get("model params")!);
        expect(Math.abs(value - nParams / unit)).toBeLessThanOrEqual(0.00500001); // printed with 2 decimals

        const ctx = await model.createContext({ contextSize: 64, threads: 1 });
        try {
          const res = await ctx.getSequence().controlledEvaluate([1 as Token, 300 as Token, [350 as Token, { generateNext: { probabilities: true } }]]);
          const probs = res.at(-1)!.next!.probabilities!;
          expect(probs.size).toBe(s.nVocab);
          let sum = 0;
          for (const p of probs.values()) {
            expect(Number.isFinite(p)).toBe(true);
            sum += p;
          }
          expect(sum).toBeCloseTo(1, 3);
        } finally {
          await ctx.dispose();
        }
      } finally {
        await model.dispose();
      }
    });
  }
});
