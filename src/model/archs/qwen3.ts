/**
 * `qwen3`: Qwen3 dense models: per-head RMSNorm of q and k before NEOX RoPE, head dim from key_length
 * (n_head * head_dim may differ from n_embd), optional tied output. Mirrors llama.cpp src/models/qwen3.cpp.
 */
import type { Arch } from "../graph.ts";
import type { ModelHParams } from "../hparams.ts";
import type { DenseLayer, QkNormLayer } from "../weights.ts";
import { blk, loadAttention, loadDenseFfn, loadEmbeddingsAndOutput, loadHeadQkNorm, requireFullRope } from "./common.ts";

export const qwen3: Arch<ModelHParams, QkNormLayer & DenseLayer> = {
  name: "qwen3",
  ropeType: "neox",

  hparams(_r, hp) {
    requireFullRope(hp);
    return hp;
  },

  tensors(t, hp) {
    const head = loadEmbeddingsAndOutput(t, hp, { tiedAllowed: true });
    const layers = [];
    for (let i = 0; i < hp.nLayer; i++) {
      layers.push({
        ...loadAttention(t, hp, i, hp.nEmbdHeadK * hp.nHead),
        ...loadHeadQkNorm(t, hp, i),
        ffnNorm: t.vector(blk(i, "ffn_norm.weight"), hp.nEmbd),
        ...loadDenseFfn(t, hp, i),
      });
    }
    return { ...head, layers };
  },

  layer(g, L, il) {
    const hp = g.hp;
    g.norm(g.x, L.attnNorm, g.cur);
    g.qkv(L, g.cur);
    g.normRows(g.q, L.qNorm, hp.nEmbdHeadK, hp.nHead); // per head
    g.normRows(g.k, L.kNorm, hp.nEmbdHeadK, hp.nHeadKv);
    g.rope(g.q, hp.nHead);
    g.rope(g.k, hp.nHeadKv);
    g.attention(L, il, g.tmp);
    g.add(g.x, g.tmp);

    g.norm(g.x, L.ffnNorm, g.cur);
    g.ffn(L.ffn, g.cur, g.tmp);
    g.add(g.x, g.tmp);
  },
};
