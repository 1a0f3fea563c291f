/**
 * `qwen2moe`: Qwen1.5-MoE / Qwen2-MoE: q/k/v biases, NEOX RoPE, routed experts (softmax, top-k weights NOT
 * renormalised) plus a shared expert scaled by sigmoid(ffn_gate_inp_shexp . x); separate output head.
 * Mirrors llama.cpp src/models/qwen2moe.cpp.
 */
import { TsmoeError } from "../../errors.ts";
import type { Arch } from "../graph.ts";
import type { ModelHParams } from "../hparams.ts";
import type { MoeLayer, SharedExpertWeights } from "../weights.ts";
import { blk, loadAttention, loadEmbeddingsAndOutput, loadExperts, loadSharedExpert, requireFullRope } from "./common.ts";

export const qwen2moe: Arch<ModelHParams, MoeLayer & { shexp: SharedExpertWeights }> = {
  name: "qwen2moe",
  ropeType: "neox",

  hparams(r, hp) {
    requireFullRope(hp);
    if (hp.nExpert === 0) throw new TsmoeError("qwen2moe: expert_count must be > 0");
    return {
      ...hp,
      nFfExp: r.int("expert_feed_forward_length", 0) || Math.floor(hp.nFf / hp.nExpertUsed),
      nFfShexp: r.int("expert_shared_feed_forward_length", 0) || hp.nFf,
    };
  },

  tensors(t, hp) {
    const head = loadEmbeddingsAndOutput(t, hp, { tiedAllowed: false });
    const layers = [];
    for (let i = 0; i < hp.nLayer; i++) {
      layers.push({
        ...loadAttention(t, hp, i, hp.nEmbd),
        ffnNorm: t.vector(blk(i, "ffn_norm.weight"), hp.nEmbd),
        moe: loadExperts(t, hp, i),
        shexp: loadSharedExpert(t, hp, i),
      });
    }
    return { ...head, layers };
  },

  router: (hp) => ({ nExpert: hp.nExpert, nExpertUsed: hp.nExpertUsed, gating: "softmax", normTopK: false, scale: 1 }),

  layer(g, L, il) {
    const hp = g.hp;
    g.norm(g.x, L.attnNorm, g.cur);
    g.qkv(L, g.cur);
    g.rope(g.q, hp.nHead);
    g.rope(g.k, hp.nHeadKv);
    g.attention(L, il, g.tmp);
    g.add(g.x, g.tmp);

    g.norm(g.x, L.ffnNorm, g.cur);
    g.moeFfn(L.moe, g.cur, g.tmp, il);
    g.sharedExpert(L.shexp, g.cur, g.tmp);
    g.add(g.x, g.tmp);
  },
};
