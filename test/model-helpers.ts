/**
 * Helpers of the model and conformance tests: the random-model cases of every supported architecture, and
 * a llama.cpp context (node-llama-cpp) configured like tsmoe's default F32 attention.
 * (Comparing logits: ./model-compare.ts.)
 */
import type { Llama, LlamaContext } from "node-llama-cpp";

/** a generated model of each architecture (llama also as a Mixtral-style MoE) */
export const RANDOM_ARCH_CASES: { name: string; arch: string; nExpert?: number; nExpertUsed?: number }[] = [
  { name: "llama", arch: "llama" },
  { name: "llama-moe", arch: "llama", nExpert: 8, nExpertUsed: 2 },
  { name: "qwen2", arch: "qwen2" },
  { name: "qwen3", arch: "qwen3" },
  { name: "qwen2moe", arch: "qwen2moe" },
  { name: "qwen3moe", arch: "qwen3moe" },
  { name: "olmoe", arch: "olmoe" },
];

/**
 * Runs fn with a llama.cpp context on the model at path: flash attention off and an F32 KV cache (what
 * tsmoe's default attention computes), one thread, batches of up to 64 tokens.
 */
export async function withLlamaCppContext<T>(
  llama: Llama,
  path: string,
  fn: (ctx: LlamaContext) => Promise<T>,
  attention: { cache: "F32" | "F16"; flash: boolean } = { cache: "F32", flash: false },
): Promise<T> {
  const model = await llama.loadModel({ modelPath: path });
  try {
    const ctx = await model.createContext({
      contextSize: 64,
      batchSize: 64,
      threads: 1,
      flashAttention: attention.flash,
      experimentalKvCacheKeyType: attention.cache,
      experimentalKvCacheValueType: attention.cache,
    });
    try {
      return await fn(ctx);
    } finally {
      await ctx.dispose();
    }
  } finally {
    await model.dispose();
  }
}
