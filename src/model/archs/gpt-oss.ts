/**
 * `gpt-oss` (llama.cpp's OPENAI_MOE): q/k/v/o biases, attention sinks (one logit per head joining the
 * softmax), sliding-window attention on the layers the sliding_window_pattern picks (period 2: even
 * layers), NEOX RoPE with YaRN, post_attention_norm as the pre-FFN norm, routed experts with a router bias
 * and per-expert biases, gating = softmax over the selected top-k logits, clamped SwiGLU-OAI (alpha 1.702,
 * limit 7). MXFP4 expert tensors load like any other type. Mirrors llama.cpp src/models/openai-moe.cpp.
 */
import { TsmoeError } from "../../errors.ts";
import type { Arch } from "../graph.ts";
import type { ModelHParams } from "../hparams.ts";
import type { MoeLayer } from "../weights.ts";
import { blk, loadAttention, loadEmbeddingsAndOutput, loadExperts, requireFullRope } from "./common.ts";

/** gpt-oss hyperparameters: the common ones, the sliding window size and the layers that use it. */
export interface GptOssHParams extends ModelHParams {
  nSwa: number;
  swaPeriod: number;
}

/** llama_hparams::set_swa_pattern (dense last): layer il slides when il % period < period - 1 */
function layerWindow(hp: GptOssHParams, il: number): number {
  const period = hp.swaPeriod;
  return period === 0 || il % period < period - 1 ? hp.nSwa : 0;
}

export const gptOss: Arch<GptOssHParams, MoeLayer> = {
  name: "gpt-oss",
  ropeType: "neox",

  hparams(r, hp) {
    if (hp.nExpert === 0) throw new TsmoeError("gpt-oss: expert_count must be > 0");
    requireFullRope(hp);
    if (r.has("rope.freq_base_swa") && r.float("rope.freq_base_swa") !== hp.ropeBase)
      throw new TsmoeError("gpt-oss: a separate RoPE base for sliding-window layers (rope.freq_base_swa) is not supported");
    return {
      ...hp,
      nFfExp: r.int("expert_feed_forward_length"),
      nSwa: r.int("attention.sliding_window"),
      swaPeriod: r.int("attention.sliding_window_pattern", 2),
    };
  },

  tensors(t, hp) {
    const head = loadEmbeddingsAndOutput(t, hp, { tiedAllowed: false });
    const { nEmbd, nFfExp, nExpert } = hp;
    const layers = [];
    for (let i = 0; i < hp.nLayer; i++) {
      layers.push({
        ...loadAttention(t, hp, i, hp.nHead * hp.nRot, { outputBias: true }),
        attnSinks: t.vector(blk(i, "attn_sinks.weight"), hp.nHead),
        ffnNorm: t.vector(blk(i, "post_attention_norm.weight"), nEmbd),
        moe: {
          ...loadExperts(t, hp, i),
          gateInpBias: t.vector(blk(i, "ffn_gate_inp.bias"), nExpert),
          gateBias: t.vectors(blk(i, "ffn_gate_exps.bias"), nFfExp, nExpert),
          upBias: t.vectors(blk(i, "ffn_up_exps.bias"), nFfExp, nExpert),
          downBias: t.vectors(blk(i, "ffn_down_exps.bias"), nEmbd, nExpert),
          activation: "swiglu_oai" as const,
        },
      });
    }
    return { ...head, layers };
  },

  router: (hp) => ({
    nExpert: hp.nExpert,
    nExpertUsed: hp.nExpertUsed,
    gating: "softmax_topk",
    normTopK: false,
    scale: 1,
  }),

  layer(g, L, il) {
    const hp = g.hp;
    g.norm(g.x, L.attnNorm, g.cur);
    g.qkv(L, g.cur); // with biases
    g.rope(g.q, hp.nHead);
    g.rope(g.k, hp.nHeadKv);
    g.attention(L, il, g.tmp, layerWindow(hp, il)); // sinks, window, output bias
    g.add(g.x, g.tmp); // ffn_inp

    g.norm(g.x, L.ffnNorm, g.cur);
    g.moeFfn(L.moe, g.cur, g.tmp, il);
    g.add(g.x, g.tmp);
  },
};
