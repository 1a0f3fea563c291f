/**
 * `llama`: Llama 2/3 dense models, and Mixtral-style MoE when expert_count > 0 (softmax router, top-k
 * weights renormalised, expert width = feed_forward_length). NORM RoPE with optional Llama 3 frequency
 * factors (rope_freqs.weight). Mirrors llama.cpp src/models/llama.cpp.
 */
import { TsmoeError } from "../../errors.ts";
import type { Arch } from "../graph.ts";
import { blk, loadAttention, loadDenseFfn, loadEmbeddingsAndOutput, loadExperts, requireFullRope } from "./common.ts";

export const llama: Arch = {
  name: "llama",
  ropeType: "norm",

  hparams(_r, hp) {
    requireFullRope(hp);
    return { ...hp, nFfExp: hp.nExpert > 0 ? hp.nFf : 0 };
  },

  tensors(t, hp) {
    const head = loadEmbeddingsAndOutput(t, hp, { tiedAllowed: true });
    const layers = [];
    for (let i = 0; i < hp.nLayer; i++) {
      for (const b of ["ffn_gate.bias", "ffn_up.bias", "ffn_down.bias"])
        if (t.has(blk(i, b))) throw new TsmoeError(`llama: FFN bias tensors (${blk(i, b)}) are not supported`);
      layers.push({
        ...loadAttention(t, hp, i, hp.nEmbdHeadK * hp.nHead, { outputBias: true }),
        ffnNorm: t.vector(blk(i, "ffn_norm.weight"), hp.nEmbd),
        ...(hp.nExpert === 0 ? loadDenseFfn(t, hp, i) : { moe: loadExperts(t, hp, i) }),
      });
    }
    const ropeFreqs = t.vector("rope_freqs.weight", hp.nRot / 2, true);
    return { ...head, ropeFreqs, layers };
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
    g.norm(g.x, L.attnNorm, g.cur);
    g.qkv(L, g.cur);
    g.rope(g.q, hp.nHead);
    g.rope(g.k, hp.nHeadKv);
    g.attention(L, il, g.tmp);
    g.add(g.x, g.tmp); // ffn_inp

    g.norm(g.x, L.ffnNorm, g.cur);
    g.layerFfn(L, g.cur, g.tmp, il); // routed experts (Mixtral) or dense
    g.add(g.x, g.tmp);
  },
};
