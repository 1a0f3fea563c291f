/**
 * `olmoe`: OLMoE: q/k RMSNorm over the whole projection (before the head split), NEOX RoPE, routed
 * experts (softmax, top-k weights NOT renormalised) of width feed_forward_length; separate output head.
 * Mirrors llama.cpp src/models/olmoe.cpp.
 */
import { TsmoeError } from "../../errors.ts";
import type { Arch } from "../graph.ts";
import type { ModelHParams } from "../hparams.ts";
import type { MoeLayer, QkNormLayer } from "../weights.ts";
import { blk, loadAttention, loadEmbeddingsAndOutput, loadExperts, requireFullRope } from "./common.ts";

export const olmoe: Arch<ModelHParams, QkNormLayer & MoeLayer> = {
  name: "olmoe",
  ropeType: "neox",

  hparams(_r, hp) {
    requireFullRope(hp);
    if (hp.nExpert === 0) throw new TsmoeError("olmoe: expert_count must be > 0");
    return { ...hp, nFfExp: hp.nFf };
  },

  tensors(t, hp) {
    const head = loadEmbeddingsAndOutput(t, hp, { tiedAllowed: false });
    const layers = [];
    for (let i = 0; i < hp.nLayer; i++) {
      layers.push({
        ...loadAttention(t, hp, i, hp.nEmbd),
        qNorm: t.vector(blk(i, "attn_q_norm.weight"), hp.nEmbd),
        kNorm: t.vector(blk(i, "attn_k_norm.weight"), hp.nEmbdHeadK * hp.nHeadKv),
        ffnNorm: t.vector(blk(i, "ffn_norm.weight"), hp.nEmbd),
        moe: loadExperts(t, hp, i),
      });
    }
    return { ...head, layers };
  },

  router: (hp) => ({ nExpert: hp.nExpert, nExpertUsed: hp.nExpertUsed, gating: "softmax", normTopK: false, scale: 1 }),

  layer(g, L, il) {
    const hp = g.hp;
    g.norm(g.x, L.attnNorm, g.cur);
    g.qkv(L, g.cur);
    g.normRows(g.q, L.qNorm, hp.nEmbd, 1); // over the whole projection
    g.normRows(g.k, L.kNorm, hp.nEmbdHeadK * hp.nHeadKv, 1);
    g.rope(g.q, hp.nHead);
    g.rope(g.k, hp.nHeadKv);
    g.attention(L, il, g.tmp);
    g.add(g.x, g.tmp);

    g.norm(g.x, L.ffnNorm, g.cur);
    g.moeFfn(L.moe, g.cur, g.tmp, il);
    g.add(g.x, g.tmp);
  },
};
