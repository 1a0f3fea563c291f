/**
 * The shapes of real MoE models, as options of the random-model generator (src/gguf/random-model.ts):
 * the hyper-parameters of their published GGUF files, with their real layer count and vocabulary.
 */
import type { RandomModelOptions } from "../src/gguf/random-model.ts";

export interface RealShape {
  label: string;
  /** the llama.cpp file type the published GGUF files are most often used in */
  defaultType: string;
  opts: RandomModelOptions;
}

export const REAL_SHAPES: Record<string, RealShape> = {
  olmoe: {
    label: "OLMoE-1B-7B",
    defaultType: "Q4_K_M",
    opts: {
      arch: "olmoe", nLayer: 16, nEmbd: 2048, nHead: 16, nHeadKv: 16, headDim: 128, nExpert: 64, nExpertUsed: 8, nFfExp: 1024,
      nVocab: 50304, nCtx: 4096, ropeBase: 10000, rmsEps: 1e-5,
    },
  },
  qwen3moe: {
    label: "Qwen3-30B-A3B",
    defaultType: "Q4_K_M",
    opts: {
      arch: "qwen3moe", nLayer: 48, nEmbd: 2048, nHead: 32, nHeadKv: 4, headDim: 128, nExpert: 128, nExpertUsed: 8, nFfExp: 768, nFf: 6144,
      nVocab: 151936, nCtx: 40960, ropeBase: 1e6, rmsEps: 1e-6,
    },
  },
  "gpt-oss": {
    label: "gpt-oss-20b",
    defaultType: "MXFP4_MOE",
    opts: {
      arch: "gpt-oss", nLayer: 24, nEmbd: 2880, nHead: 64, nHeadKv: 8, headDim: 64, nExpert: 32, nExpertUsed: 4, nFfExp: 2880,
      nVocab: 201088, nCtx: 131072, ropeBase: 150000, rmsEps: 1e-5, extra: { slidingWindow: 128, yarnFactor: 32, yarnOrigCtx: 4096 },
    },
  },
  // Mixtral 8x7B: llama.cpp's "llama" architecture with experts
  mixtral: {
    label: "Mixtral-8x7B",
    defaultType: "Q4_K_M",
    opts: {
      arch: "llama", nLayer: 32, nEmbd: 4096, nHead: 32, nHeadKv: 8, headDim: 128, nExpert: 8, nExpertUsed: 2, nFfExp: 14336,
      nVocab: 32000, nCtx: 32768, ropeBase: 1e6, rmsEps: 1e-5, tiedOutput: false,
    },
  },
};
