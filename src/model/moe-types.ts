/**
 * The contract between the MoE FFN builder (src/model/ffn.ts, buildMoeFfn) and expert routing
 * (src/model/moe.ts). The builder computes router logits, asks `route` which experts each token uses with
 * which weights, then runs only those experts. The per-session expert policy (which K experts each layer
 * selects and how many of them it computes) comes from src/model/moe-check.ts.
 */

/** How a model turns router logits into expert choices and weights (from GGUF metadata). */
export interface RouterConfig {
  /** routed experts */
  nExpert: number;
  /** the model's experts per token (expert_used_count after --override-kv) */
  nExpertUsed: number;
  /**
   * softmax: probabilities over all experts (Mixtral, Qwen, OLMoE)
   * sigmoid: independent sigmoid per expert (GLM-4.5, DeepSeek-V3)
   * softmax_topk: softmax over the selected top-k logits only (gpt-oss)
   */
  gating: "softmax" | "sigmoid" | "softmax_topk";
  /** renormalise the selected weights to sum to 1 (expert_weights_norm / norm_topk_prob) */
  normTopK: boolean;
  /** multiply the final weights (expert_weights_scale; 1 when absent) */
  scale: number;
  /** per-expert selection bias (exp_probs_b): added to scores for ranking only, not to the weights */
  selectionBias?: Float32Array;
  /** group-limited routing (DeepSeek): experts split into nGroup groups, the best nGroupUsed groups kept */
  nGroup?: number;
  nGroupUsed?: number;
}

/**
 * What the session's policy gives a layer: K experts selected and weighted together, the first `computed`
 * run, and the layer's top-p threshold (--moe-cum-p or its --moe-cum-p-layers entry; undefined: none).
 */
export interface LayerPolicy {
  K: number;
  computed: number;
  cumP?: number;
}

/** The expert setting of a session, validated against the model (checkMoeOptions in moe-check.ts). */
export interface MoePolicy {
  /** hard mask: the weights are normalised over all K selected; soft: over the experts computed */
  readonly hard: boolean;
  /** {K, computed, cumP} of layer `il`, for a model with k experts per token out of nExpert */
  layer(il: number, k: number, nExpert: number): LayerPolicy;
  /** dynamic routing of every layer: --moe-ser KMIN,T (undefined when not asked for) */
  readonly ser?: { kmin: number; t: number };
}

/** The routing decision for a batch of tokens. */
export interface Routing {
  nTokens: number;
  /** row stride of ids/weights (max experts any token may use) */
  maxK: number;
  /** experts actually computed for token t: ids[t*maxK .. t*maxK + counts[t]) */
  counts: Int32Array;
  ids: Int32Array;
  weights: Float32Array;
}
