/**
 * `deepseek2`: DeepSeek-V2 / V2-Lite / V3, Moonlight, Kimi-K2 and relatives: multi-head latent attention
 * in the absorbed form (src/model/mla.ts; q through a LoRA or one projection), NORM RoPE on the rope part
 * with YaRN when the file asks for it (the kq scale pre-multiplied by mscale^2 as llama.cpp does), leading
 * dense layers, then routed experts (softmax or sigmoid gating, optional exp_probs_b selection bias,
 * group-limited routing with expert_group_count / expert_group_used_count, expert_weights_norm,
 * expert_weights_scale) plus ungated shared experts. NextN/MTP layers are not run. Files with the legacy
 * unsplit attn_kv_b (no key_length_mla) and attention temperature scaling are refused. Mirrors llama.cpp
 * src/models/deepseek2.cpp.
 */
import { TsmoeError } from "../../errors.ts";
import type { Arch } from "../graph.ts";
import { mlaAttention, type MlaShape } from "../mla.ts";
import { ropeParams } from "../ops.ts";
import type { MlaLayer } from "../weights.ts";
import { blk, loadEmbeddingsAndOutput } from "./common.ts";
import { loadRoutedMoeFfn, readRoutedMoe, routedMoeRouter, type RoutedMoeHParams } from "./routed-moe.ts";

/** DeepSeek-2 hyperparameters: the routed-MoE ones and the MLA dimensions. */
export interface Deepseek2HParams extends RoutedMoeHParams {
  mla: MlaShape;
}

const f32 = Math.fround;

export const deepseek2: Arch<Deepseek2HParams, MlaLayer> = {
  name: "deepseek2",
  ropeType: "norm",

  hparams(r, hp) {
    const kvLora = r.int("attention.kv_lora_rank");
    const qLora = r.int("attention.q_lora_rank", 0);
    const kMla = r.int("attention.key_length_mla", 0);
    const vMla = r.int("attention.value_length_mla", 0);
    if (kMla === 0 || vMla === 0)
      throw new TsmoeError("deepseek2: files without attention.key_length_mla (legacy attn_kv_b) are not supported; reconvert with a current llama.cpp");
    const nope = kMla - hp.nRot;
    if (nope < 1) throw new TsmoeError(`deepseek2: key_length_mla ${kMla} must exceed the rope dimensions ${hp.nRot}`);
    if (hp.nHeadKv !== 1 || hp.nEmbdHeadK !== kvLora + hp.nRot || hp.nEmbdHeadV !== kvLora)
      throw new TsmoeError(
        `deepseek2: absorbed MLA needs head_count_kv 1, key_length ${kvLora + hp.nRot} and value_length ${kvLora} (got ${hp.nHeadKv}, ${hp.nEmbdHeadK}, ${hp.nEmbdHeadV})`,
      );
    if (r.float("attention.temperature_scale", 0) !== 0) throw new TsmoeError("deepseek2: attention temperature scaling is not supported");

    // GLM-4.7 Lite files without expert_gating_func route with a sigmoid, older DeepSeek-V2 with a softmax
    const glmLite = (nLayer: number) => (nLayer === 47 || nLayer === 48) && hp.nVocab === 154880;
    const routed = readRoutedMoe(r, hp, (nLayer) => (glmLite(nLayer) ? "sigmoid" : "softmax"));

    // YaRN: the file stores 0.1 * mscale_all_dim (llama.cpp divides it back out). llama_context then
    // takes mscale = mscale_all_dim for DeepSeek-2, so its YaRN magnitude ratio is 1: the common rule
    // gives the same with a log multiplier of 1. The kq scale is pre-multiplied by mscale^2.
    const logMul = r.has("rope.scaling.yarn_log_multiplier") ? f32(r.float("rope.scaling.yarn_log_multiplier") / f32(0.1)) : 0;
    const ropeYarnLogMul = logMul !== 0 ? 1 : hp.ropeYarnLogMul;
    const invScale = f32(1 / hp.ropeFreqScale);
    const attnFactorOrg = f32(ropeParams({ ...hp, ropeYarnLogMul }).attnFactor * f32(1 + f32(0.1 * Math.log(invScale))));
    const mscale = f32(attnFactorOrg * f32(1 + f32(0.1 * logMul * Math.log(invScale))));
    return {
      ...routed,
      ropeYarnLogMul,
      attentionScale: f32(f32(mscale * mscale) / f32(Math.sqrt(kMla))),
      mla: { nHead: hp.nHead, qLora, kvLora, nope, rope: hp.nRot, vDim: vMla },
    };
  },

  tensors(t, hp) {
    const s = hp.mla;
    const head = loadEmbeddingsAndOutput(t, hp, { tiedAllowed: true });
    const { nEmbd, nHead } = hp;
    const qWidth = nHead * (s.nope + s.rope);
    const layers = [];
    for (let i = 0; i < hp.nLayer; i++) {
      const q =
        s.qLora > 0
          ? {
              wqA: t.weight(blk(i, "attn_q_a.weight"), nEmbd, s.qLora),
              qANorm: t.vector(blk(i, "attn_q_a_norm.weight"), s.qLora),
              wqB: t.weight(blk(i, "attn_q_b.weight"), s.qLora, qWidth),
            }
          : { wq: t.weight(blk(i, "attn_q.weight"), nEmbd, qWidth) };
      layers.push({
        attnNorm: t.vector(blk(i, "attn_norm.weight"), nEmbd),
        mla: {
          ...q,
          wkvA: t.weight(blk(i, "attn_kv_a_mqa.weight"), nEmbd, s.kvLora + s.rope),
          kvANorm: t.vector(blk(i, "attn_kv_a_norm.weight"), s.kvLora),
          wkB: t.experts(blk(i, "attn_k_b.weight"), s.nope, s.kvLora, nHead),
          wvB: t.experts(blk(i, "attn_v_b.weight"), s.kvLora, s.vDim, nHead),
        },
        wo: t.weight(blk(i, "attn_output.weight"), nHead * s.vDim, nEmbd),
        ffnNorm: t.vector(blk(i, "ffn_norm.weight"), nEmbd),
        ...loadRoutedMoeFfn(t, hp, i),
      });
    }
    return { ...head, layers };
  },

  router: routedMoeRouter,

  layer(g, L, il) {
    const hp = g.hp;
    g.norm(g.x, L.attnNorm, g.cur);
    const heads = mlaAttention(g, L, hp.mla, g.cur, il);
    g.project(L.wo, heads, g.tmp);
    g.add(g.x, g.tmp); // ffn_inp

    g.norm(g.x, L.ffnNorm, g.cur);
    g.layerFfn(L, g.cur, g.tmp, il); // leading dense layers, then routed + shared experts
    g.add(g.x, g.tmp);
  },
};
