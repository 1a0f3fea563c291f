/**
 * `qwen3moe`: Qwen3-30B-A3B, Qwen3-Coder-30B-A3B / 480B-A35B: per-head q/k RMSNorm, NEOX RoPE, head dim
 * from key_length, routed experts (softmax, top-k weights renormalised) of width
 * expert_feed_forward_length (feed_forward_length is not the expert width). Mirrors llama.cpp
 * src/models/qwen3moe.cpp.
 */
import { TsmoeError } from "../../errors.ts";
import type { Arch } from "../graph.ts";
import type { ModelHParams } from "../hparams.ts";
import type { MoeLayer, QkNormLayer } from "../weights.ts";
import { blk, loadAttention, loadEmbeddingsAndOutput, loadExperts, loadHeadQkNorm, requireFullRope } from "./common.ts";

export const qwen3moe: Arch<ModelHParams, QkNormLayer & MoeLayer> = {
  name: "qwen3moe",
  ropeType: "neox",

  hparams(r, hp) {
    requireFullRope(hp);
    if (hp.nExpert === 0) throw new TsmoeError("qwen3moe: expert_count must be > 0");
    return { ...hp, nFfExp: r.int("expert_feed_forward_length", 0) || Math.floor(hp.nFf / hp.nExpertUsed) };
  },

  tensors(t, hp) {
    const head = loadEmbeddingsAndOutput(t, hp, { tiedAllowed: true });
    const layers = [];
    for (let i = 0; i < hp.nLayer; i++) {
      layers.push({
        ...loadAttention(t, hp, i, hp.nEmbdHeadK * hp.nHead),
        ...loadHeadQkNorm(t, hp, i),
        ffnNorm: t.vector(blk(i, "ffn_norm.weight"), hp.nEmbd),
        moe: loadExperts(t, hp, i),
      });
    }
    return { ...head, layers };
  },

  router: (hp) => ({ nExpert: hp.nExpert, nExpertUsed: hp.nExpertUsed, gating: "softmax", normTopK: true, scale: 1 }),

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
    g.moeFfn(L.moe, g.cur, g.tmp, il);
    g.add(g.x, g.tmp);
  },
};
