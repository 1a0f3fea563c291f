/**
 * `granitemoe`: IBM Granite 3.x MoE (and Granite MoE Shared): Llama-style layers (NORM RoPE unless
 * rope.scaling.finetuned is false, optional rope_freqs, optional attention-output bias), routed experts of
 * width feed_forward_length (softmax router, top-k weights renormalised), an optional ungated shared
 * expert (expert_shared_feed_forward_length), and Granite's multipliers: embedding_scale on the token
 * embeddings, attention.scale as the kq scale, residual_scale on each branch before it joins the residual
 * stream, and logits divided by logit_scale. Mirrors llama.cpp src/models/granite-moe.cpp / granite.cpp.
 */
import { TsmoeError } from "../../errors.ts";
import type { Arch } from "../graph.ts";
import type { ModelHParams } from "../hparams.ts";
import { scaleInPlace } from "../ops.ts";
import type { MoeLayer } from "../weights.ts";
import { blk, loadAttention, loadEmbeddingsAndOutput, loadExperts, requireFullRope } from "./common.ts";
import { loadUngatedSharedExpert } from "./routed-moe.ts";

/** Granite MoE hyperparameters: the common ones, Granite's multipliers (0 = none) and whether RoPE is applied. */
export interface GraniteMoeHParams extends ModelHParams {
  residualScale: number;
  embeddingScale: number;
  logitScale: number;
  rope: boolean;
}

export const granitemoe: Arch<GraniteMoeHParams, MoeLayer> = {
  name: "granitemoe",
  ropeType: "norm",

  hparams(r, hp) {
    requireFullRope(hp);
    if (hp.nExpert === 0) throw new TsmoeError("granitemoe: expert_count must be > 0");
    const logitScale = r.float("logit_scale");
    if (logitScale === 0) throw new TsmoeError(`${r.file.path}: '${r.key("logit_scale")}' must not be 0`);
    return {
      ...hp,
      nFfExp: hp.nFf,
      nFfShexp: r.int("expert_shared_feed_forward_length", 0),
      attentionScale: r.float("attention.scale", 0),
      residualScale: r.float("residual_scale", 0),
      embeddingScale: r.float("embedding_scale", 0),
      logitScale,
      rope: r.bool("rope.scaling.finetuned", true),
    };
  },

  tensors(t, hp) {
    const head = loadEmbeddingsAndOutput(t, hp, { tiedAllowed: true });
    const layers = [];
    for (let i = 0; i < hp.nLayer; i++) {
      layers.push({
        ...loadAttention(t, hp, i, hp.nEmbdHeadK * hp.nHead, { outputBias: true }),
        ffnNorm: t.vector(blk(i, "ffn_norm.weight"), hp.nEmbd),
        moe: loadExperts(t, hp, i),
        shexp: hp.nFfShexp > 0 ? loadUngatedSharedExpert(t, hp, i) : undefined,
      });
    }
    const ropeFreqs = t.vector("rope_freqs.weight", hp.nRot / 2, true);
    return {
      ...head,
      ropeFreqs,
      layers,
      ...(hp.embeddingScale !== 0 ? { embeddingScale: hp.embeddingScale } : {}),
      logitScale: Math.fround(1 / hp.logitScale),
    };
  },

  router: (hp) => ({
    nExpert: hp.nExpert,
    nExpertUsed: hp.nExpertUsed,
    gating: "softmax",
    normTopK: true,
    scale: hp.expertWeightsScale || 1,
  }),

  layer(g, L, il) {
    const hp = g.hp;
    const n = g.n * hp.nEmbd;
    g.norm(g.x, L.attnNorm, g.cur);
    g.qkv(L, g.cur);
    if (hp.rope) {
      g.rope(g.q, hp.nHead);
      g.rope(g.k, hp.nHeadKv);
    }
    g.attention(L, il, g.tmp);
    if (hp.residualScale) scaleInPlace(g.tmp, hp.residualScale, n);
    g.add(g.x, g.tmp); // ffn_inp

    g.norm(g.x, L.ffnNorm, g.cur);
    g.moeFfn(L.moe, g.cur, g.tmp, il);
    if (L.shexp) g.sharedExpert(L.shexp, g.cur, g.tmp);
    if (hp.residualScale) scaleInPlace(g.tmp, hp.residualScale, n);
    g.add(g.x, g.tmp);
  },
};
