/**
 * `qwen3vlmoe`: the language model of Qwen3-VL-30B-A3B / 235B-A22B, text only. Its layers are Qwen3-MoE
 * layers (per-head q/k RMSNorm, softmax router with renormalised top-k weights); its RoPE is llama.cpp's
 * interleaved multi-section RoPE (IMROPE, rope.dimension_sections). For text every token carries the same
 * position in all sections, so each section's angle is the same pos * base^(-2i/n_rot) and IMROPE equals
 * NEOX RoPE over n_rot dims; the deepstack injections add the padding of text embeddings, i.e. zeros.
 * Image (and video) inputs are out of scope: tsmoe evaluates token ids only and never reads an mmproj file.
 * Mirrors llama.cpp src/models/qwen3vlmoe.cpp for text batches.
 */
import { TsmoeError } from "../../errors.ts";
import { metaArray } from "../../gguf/meta.ts";
import type { Arch } from "../graph.ts";
import type { ModelHParams } from "../hparams.ts";
import type { MoeLayer, QkNormLayer } from "../weights.ts";
import { qwen3moe } from "./qwen3moe.ts";

export const qwen3vlmoe: Arch<ModelHParams, QkNormLayer & MoeLayer> = {
  ...qwen3moe,
  name: "qwen3vlmoe",

  hparams(r, hp) {
    const sections = metaArray(r.file, r.key("rope.dimension_sections"));
    if (!sections || sections.length < 3)
      throw new TsmoeError(`${r.file.path}: qwen3vlmoe needs '${r.key("rope.dimension_sections")}' (the multi-section RoPE layout)`);
    const dims = sections.slice(0, 4).reduce((a: number, v) => a + Number(v), 0);
    if (dims > hp.nRot / 2) throw new TsmoeError(`${r.file.path}: rope sections sum to ${dims}, more than half the rope dimensions ${hp.nRot}`);
    return qwen3moe.hparams(r, hp);
  },
};
