/**
 * What GLM-4.5 (`glm4moe`) and DeepSeek-V2/V3 (`deepseek2`) share beyond the common builders: the routing
 * keys (expert_gating_func, expert_weights_norm, expert_weights_scale, expert groups), leading dense
 * layers, NextN/MTP layers that are skipped, and the MoE layer with its selection bias (exp_probs_b) and
 * ungated shared experts of width n_ff_exp * expert_shared_count.
 */
import { TsmoeError } from "../../errors.ts";
import type { ModelHParams, MetaReader } from "../hparams.ts";
import type { RouterConfig } from "../moe-types.ts";
import type { LayerWeights, SharedExpertWeights, TensorSource } from "../weights.ts";
import { blk, loadDenseFfn, loadExperts } from "./common.ts";

export type Gating = RouterConfig["gating"];

/** The hyperparameters of these architectures: the common ones plus their routing keys. */
export interface RoutedMoeHParams extends ModelHParams {
  nLeadingDense: number;
  nExpertShared: number;
  gating: Gating;
  normTopK: boolean;
  nGroup: number;
  nGroupUsed: number;
}

/** llama.cpp's llama_expert_gating_func_type values */
const GATING: Record<number, Gating> = { 1: "softmax", 2: "sigmoid", 3: "softmax_topk" };

/**
 * Reads the routing keys into a new record. The NextN/MTP layers (nextn_predict_layers) are not run, as in
 * llama.cpp: nLayer is block_count without them (read here, once). `defaultGating` (given the layer count
 * without them) applies when expert_gating_func is absent or 0 (none).
 */
export function readRoutedMoe(r: MetaReader, hp: ModelHParams, defaultGating: (nLayer: number) => Gating): RoutedMoeHParams {
  if (hp.nExpert === 0) throw new TsmoeError(`${hp.arch}: expert_count must be > 0`);
  const nextn = r.int("nextn_predict_layers", 0);
  if (nextn >= hp.nLayer) throw new TsmoeError(`${hp.arch}: nextn_predict_layers ${nextn} must be < block_count ${hp.nLayer}`);
  const nLayer = hp.nLayer - nextn;
  const nFfExp = r.int("expert_feed_forward_length");
  const func = r.int("expert_gating_func", 0);
  const gating = func === 0 ? defaultGating(nLayer) : GATING[func];
  if (!gating) throw new TsmoeError(`${hp.arch}: expert gating function ${func} is not supported`);
  const nExpertShared = r.int("expert_shared_count");
  const x: RoutedMoeHParams = {
    ...hp,
    nLayer,
    nFfExp,
    nFfShexp: nFfExp * nExpertShared,
    expertWeightsScale: r.float("expert_weights_scale", 0),
    nLeadingDense: r.int("leading_dense_block_count", 0),
    nExpertShared,
    gating,
    normTopK: r.bool("expert_weights_norm", false),
    nGroup: r.int("expert_group_count", 0),
    nGroupUsed: r.int("expert_group_used_count", 0),
  };
  if (x.nGroup > 1 && (hp.nExpert % x.nGroup !== 0 || x.nGroupUsed < 1 || x.nGroupUsed > x.nGroup))
    throw new TsmoeError(`${hp.arch}: ${x.nGroup} expert groups (${x.nGroupUsed} used) do not fit ${hp.nExpert} experts`);
  return x;
}

export function routedMoeRouter(hp: RoutedMoeHParams): RouterConfig {
  return {
    nExpert: hp.nExpert,
    nExpertUsed: hp.nExpertUsed,
    gating: hp.gating,
    normTopK: hp.normTopK,
    scale: hp.expertWeightsScale,
    ...(hp.nGroup > 1 ? { nGroup: hp.nGroup, nGroupUsed: hp.nGroupUsed } : {}),
  };
}

/**
 * The FFN weights of layer i: dense ffn_{gate,up,down} for the leading dense layers, else routed experts
 * (+ optional exp_probs_b) and the ungated shared experts.
 */
export function loadRoutedMoeFfn(t: TensorSource, hp: RoutedMoeHParams, i: number): Pick<LayerWeights, "ffn" | "moe" | "shexp"> {
  if (i < hp.nLeadingDense) return loadDenseFfn(t, hp, i);
  const moe = { ...loadExperts(t, hp, i), selectionBias: t.vector(blk(i, "exp_probs_b.bias"), hp.nExpert, true) };
  return { moe, shexp: hp.nFfShexp > 0 ? loadUngatedSharedExpert(t, hp, i) : undefined };
}

/** ffn_{gate,up,down}_shexp of width hp.nFfShexp, added to the routed output without a gate */
export function loadUngatedSharedExpert(t: TensorSource, hp: ModelHParams, i: number): SharedExpertWeights {
  const { nEmbd, nFfShexp } = hp;
  return {
    gate: t.weight(blk(i, "ffn_gate_shexp.weight"), nEmbd, nFfShexp),
    up: t.weight(blk(i, "ffn_up_shexp.weight"), nEmbd, nFfShexp),
    down: t.weight(blk(i, "ffn_down_shexp.weight"), nFfShexp, nEmbd),
  };
}
