/**
 * `glm4moe`: GLM-4.5 / 4.5-Air / 4.6: q/k/v biases, optional per-head q/k RMSNorm, partial NEOX RoPE
 * (rope.dimension_count may be below the head dim), post_attention_norm as the pre-FFN norm, leading dense
 * layers, then routed experts (sigmoid gating by default, exp_probs_b selection bias, expert_weights_norm,
 * expert_weights_scale) plus ungated shared experts. NextN/MTP layers (nextn_predict_layers) are not run.
 * Multi-section RoPE files (GLM-4.5V, rope.dimension_sections) are refused. Mirrors llama.cpp
 * src/models/glm4-moe.cpp.
 */
import { TsmoeError } from "../../errors.ts";
import { metaArray } from "../../gguf/meta.ts";
import type { Arch } from "../graph.ts";
import { blk, loadAttention, loadEmbeddingsAndOutput, loadHeadQkNorm } from "./common.ts";
import { loadRoutedMoeFfn, readRoutedMoe, routedMoeRouter, type RoutedMoeHParams } from "./routed-moe.ts";

export const glm4moe: Arch<RoutedMoeHParams> = {
  name: "glm4moe",
  ropeType: "neox",

  hparams(r, hp) {
    if (hp.nEmbdHeadK !== hp.nEmbdHeadV) throw new TsmoeError(`glm4moe: key length ${hp.nEmbdHeadK} != value length ${hp.nEmbdHeadV}`);
    if (hp.nRot > hp.nEmbdHeadK || hp.nRot % 2 !== 0) throw new TsmoeError(`glm4moe: rope dimensions ${hp.nRot} do not fit head dim ${hp.nEmbdHeadK}`);
    const sections = metaArray(r.file, r.key("rope.dimension_sections"));
    if (sections && Number(sections[0]) > 0 && Number(sections[1]) > 0)
      throw new TsmoeError("glm4moe: multi-section RoPE (vision GLM-4.5V files) is not supported; only the text model is");
    return readRoutedMoe(r, hp, () => "sigmoid");
  },

  tensors(t, hp) {
    const head = loadEmbeddingsAndOutput(t, hp, { tiedAllowed: true });
    const layers = [];
    for (let i = 0; i < hp.nLayer; i++) {
      layers.push({
        ...loadAttention(t, hp, i, hp.nEmbdHeadK * hp.nHead),
        ...loadHeadQkNorm(t, hp, i, { optional: true }),
        ffnNorm: t.vector(blk(i, "post_attention_norm.weight"), hp.nEmbd),
        ...loadRoutedMoeFfn(t, hp, i),
      });
    }
    return { ...head, layers };
  },

  router: routedMoeRouter,

  layer(g, L, il) {
    const hp = g.hp;
    g.norm(g.x, L.attnNorm, g.cur);
    g.qkv(L, g.cur); // with biases
    if (L.qNorm) g.normRows(g.q, L.qNorm, hp.nEmbdHeadK, hp.nHead);
    if (L.kNorm) g.normRows(g.k, L.kNorm, hp.nEmbdHeadK, hp.nHeadKv);
    g.rope(g.q, hp.nHead); // the first nRot dims of each head
    g.rope(g.k, hp.nHeadKv);
    g.attention(L, il, g.tmp);
    g.add(g.x, g.tmp); // ffn_inp

    g.norm(g.x, L.ffnNorm, g.cur);
    g.layerFfn(L, g.cur, g.tmp, il); // leading dense layers, then routed + shared experts
    g.add(g.x, g.tmp);
  },
};
