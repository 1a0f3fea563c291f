/**
 * `qwen2`: Qwen2 / Qwen2.5 dense models: q/k/v biases, NEOX RoPE, optional tied output (and output bias).
 * Mirrors llama.cpp src/models/qwen2.cpp.
 */
import type { Arch } from "../graph.ts";
import type { ModelHParams } from "../hparams.ts";
import type { DenseLayer } from "../weights.ts";
import { blk, loadAttention, loadDenseFfn, loadEmbeddingsAndOutput, requireFullRope } from "./common.ts";

export const qwen2: Arch<ModelHParams, DenseLayer> = {
  name: "qwen2",
  ropeType: "neox",

  hparams(_r, hp) {
    requireFullRope(hp);
    return hp;
  },

  tensors(t, hp) {
    const head = loadEmbeddingsAndOutput(t, hp, { tiedAllowed: true, outputBias: true });
    const layers = [];
    for (let i = 0; i < hp.nLayer; i++) {
      layers.push({
        ...loadAttention(t, hp, i, hp.nEmbd),
        ffnNorm: t.vector(blk(i, "ffn_norm.weight"), hp.nEmbd),
        ...loadDenseFfn(t, hp, i),
      });
    }
    return { ...head, layers };
  },

  layer(g, L, il) {
    const hp = g.hp;
    g.norm(g.x, L.attnNorm, g.cur);
    g.qkv(L, g.cur); // with biases
    g.rope(g.q, hp.nHead);
    g.rope(g.k, hp.nHeadKv);
    g.attention(L, il, g.tmp);
    g.add(g.x, g.tmp);

    g.norm(g.x, L.ffnNorm, g.cur);
    g.ffn(L.ffn, g.cur, g.tmp);
    g.add(g.x, g.tmp);
  },
};
