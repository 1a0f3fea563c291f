/**
 * Expert routing for Mixture-of-Experts layers, with the runtime expert-count override.
 *
 * `createRouter(policy, nLayer, observer?)` returns a Router for a session's expert policy (MoePolicy,
 * from checkMoeOptions in moe-check.ts). The MoE FFN builder computes the router logits of a batch
 * (nTokens x nExpert, row-major, router bias already added: llama.cpp's `ffn_moe_logits`) and calls
 * `router.route(logits, nTokens, cfg, layer)`, which returns for every token the experts to compute and
 * their weights (`Routing` in moe-types.ts: token t uses ids[t*maxK + j], weights[t*maxK + j] for
 * j < counts[t], highest selection score first). A Router is not re-entrant: route one batch at a time.
 *
 * Each token goes through named stages, called as llama.cpp's build_moe_ffn names its intermediate tensors
 * (float32 numerics like ggml):
 *  1. `ffn_moe_probs`: softmax over all experts, an independent sigmoid per expert, or (softmax_topk,
 *     gpt-oss) the raw logits, which are softmaxed after selection;
 *  2. `ffn_moe_probs_biased`: selection scores = probs + selectionBias (the bias only ranks experts, it never
 *     enters the weights); with expert groups (nGroup > 1) a group scores the sum of its two best selection
 *     scores and the experts of all but the nGroupUsed best groups get -Infinity;
 *  3. `ffn_moe_topk`: the K best selection scores, best first. Exact ties go to the lower expert id
 *     (llama.cpp sorts with std::sort, whose order of exact ties is unspecified; this is deterministic);
 *  4. the policy: the session's MoePolicy gives the layer its {K, computed, cumP} (soft mask: K = computed =
 *     N; hard mask: K = k, the first N computed; cumP the layer's top-p threshold), and dynamic routing
 *     (the layer's cumP, the session's ser) may keep fewer of the computed candidates;
 *  5. `ffn_moe_weights`: the unbiased probs of the selected experts (`ffn_moe_weights_softmax` over the K for
 *     softmax_topk), `ffn_moe_weights_norm`: divided by their sum when normTopK (`ffn_moe_weights_sum`,
 *     clamped below at 6.103515625e-5 as llama.cpp does; under the hard mask the sum of all K, under the
 *     soft mask of the experts kept), `ffn_moe_weights_scaled`: times scale (0 or 1 means none).
 *
 * Override semantics, with k = the model's expert_used_count and N the override for the layer
 * (MoeOptions.layers when it names the layer, else MoeOptions.nExpert, else k):
 *  - soft mask (default): the top-N selection scores, weighted, normalised and scaled exactly as the model
 *    does its k. Identical to llama.cpp with `--override-kv <arch>.expert_used_count=int:N`.
 *  - hard mask: the model's routing and weights over its k, then only the first N of those k experts are
 *    computed, their weights unchanged. N <= k.
 *  - N = k is the unmodified model in both modes. For models that do not normalise (OLMoE, Qwen2-MoE)
 *    soft and hard give the same experts and weights.
 *
 * Dynamic routing (per token and layer), applied to the candidates the mask chose (in rank order). A
 * candidate's selection probability is its weight before normalisation and scale (stage 5's
 * `ffn_moe_weights`):
 *  - cumP = P (MoeOptions.layerCumP for the layers it names, else MoeOptions.cumP): keep the fewest
 *    top-ranked candidates whose probabilities sum to >= P times the candidates' total (at least one);
 *    P = 1 keeps all of them.
 *  - ser = {kmin, t}: keep the first kmin candidates, and each further candidate whose probability is
 *    > t times the largest candidate probability. t = 0 is the model, t = 1 a fixed kmin.
 *  Given both, a candidate is kept only if both keep it. Under the soft mask the kept weights are
 *  renormalised over the kept experts where the model's top-k weights sum to 1 (normTopK: divided by their
 *  sum; softmax_topk: the softmax over the kept logits), otherwise only scaled; under the hard mask they
 *  stay as the model computed them over its k.
 *
 * The router counts the tokens and experts computed per layer (cheap; `stats()`); the rest of the
 * statistics (--moe-stats) come from an optional RoutingObserver (moe-stats.ts) that sees every token.
 */
import type { MoeLayerStats, MoeOptions } from "./api.ts";
import type { LayerPolicy, MoePolicy, RouterConfig, Routing } from "./moe-types.ts";

export interface Router {
  /** Routes a batch: `logits` holds nTokens rows of cfg.nExpert router logits. */
  route(logits: Float32Array, nTokens: number, cfg: RouterConfig, layer: number): Routing;
  /**
   * Statistics of every layer routed since creation or the last resetStats, in layer order: tokens and mean
   * experts computed; with an observer, its statistics too.
   */
  stats(): MoeLayerStats[];
  resetStats(): void;
}

/** llama.cpp clamps the sum of the selected weights from below (smallest normal F16) before dividing. */
export const MIN_WEIGHT_SUM = 6.103515625e-5;

/**
 * Sees every routed token after its stages ran (--moe-stats, moe-stats.ts): `s.topk[s.keep[i]]` for
 * i < kept are the experts computed; K experts were selected; k is the model's experts per token.
 */
export interface RoutingObserver {
  token(layer: number, cfg: RouterConfig, logits: Float32Array, off: number, s: TokenStages, K: number, k: number, kept: number): void;
  /** the observer's statistics of a layer it has seen */
  layerStats(layer: number): Pick<MoeLayerStats, "massKept" | "load" | "entropy"> | undefined;
  reset(): void;
}

const f32 = Math.fround;

/** Softmax of src[off..off+n) into dst[0..n) the way ggml computes it: float exps, double sum, float scale. */
function softmaxF32(src: Float32Array, off: number, n: number, dst: Float32Array): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (src[off + i] > max) max = src[off + i];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = f32(Math.exp(f32(src[off + i] - max)));
    dst[i] = e;
    sum += e;
  }
  const inv = f32(1 / sum);
  for (let i = 0; i < n; i++) dst[i] = f32(dst[i] * inv);
}

/**
 * Writes into out[0..k) the indices of the k largest of v[0..n), largest first; equal values keep index
 * order (lower index first).
 */
export function topK(v: ArrayLike<number>, n: number, k: number, out: Int32Array): void {
  let filled = 0;
  for (let i = 0; i < n; i++) {
    const x = v[i];
    if (filled === k && !(x > v[out[k - 1]])) continue;
    let j = filled < k ? filled++ : k - 1;
    while (j > 0 && x > v[out[j - 1]]) {
      out[j] = out[j - 1];
      j--;
    }
    out[j] = i;
  }
}

/**
 * Dynamic routing over the ranked candidate probabilities p[0..n): writes the positions (ascending) of the
 * candidates kept into `keep` and returns how many (1..n). cumP keeps a prefix; ser keeps the first kmin
 * and any later candidate above t times the largest probability; with both, a candidate must pass both.
 */
export function dynamicKeep(
  cumP: number | undefined,
  ser: MoeOptions["ser"],
  p: ArrayLike<number>,
  n: number,
  keep: Int32Array,
): number {
  let prefix = n;
  if (cumP !== undefined) {
    let total = 0;
    for (let j = 0; j < n; j++) total += p[j];
    const target = cumP * total;
    let acc = 0;
    prefix = 0;
    while (prefix < n) {
      acc += p[prefix++];
      if (acc >= target) break;
    }
  }
  let top = 0;
  if (ser !== undefined) for (let j = 0; j < n; j++) if (p[j] > top) top = p[j];
  let m = 0;
  for (let j = 0; j < Math.max(prefix, 1); j++) {
    if (ser === undefined || j < ser.kmin || p[j] > ser.t * top) keep[m++] = j;
  }
  return m;
}

/**
 * The stages of one token at a time, each filling its buffer (named as llama.cpp's build_moe_ffn tensors);
 * holds the scratch space for nExpert experts.
 */
export class TokenStages {
  /** ffn_moe_probs */
  readonly probs: Float32Array;
  /** ffn_moe_probs_biased, after group limiting */
  readonly selection: Float32Array;
  /** ffn_moe_topk: expert ids, best selection score first */
  readonly topk: Int32Array;
  /** ffn_moe_weights: the selection probability of each topk position (before normalisation and scale) */
  readonly weights: Float32Array;
  /** the topk positions computed (policy and dynamic routing), ascending */
  readonly keep: Int32Array;
  private readonly groupScore: Float32Array;
  private readonly groupKeep: Int32Array;
  private readonly tmp: Float32Array;
  /** 0, 1, 2, ... */
  readonly identity: Int32Array;

  constructor(readonly nExpert: number) {
    this.probs = new Float32Array(nExpert);
    this.selection = new Float32Array(nExpert);
    this.topk = new Int32Array(nExpert);
    this.weights = new Float32Array(nExpert);
    this.keep = new Int32Array(nExpert);
    this.groupScore = new Float32Array(nExpert);
    this.groupKeep = new Int32Array(nExpert);
    this.tmp = new Float32Array(nExpert);
    this.identity = Int32Array.from({ length: nExpert }, (_, i) => i);
  }

  /** Stage 1 (ffn_moe_probs) of the token whose logits start at `off`. */
  scoreProbs(cfg: RouterConfig, logits: Float32Array, off: number): void {
    const { nExpert, probs } = this;
    if (cfg.gating === "softmax") softmaxF32(logits, off, nExpert, probs);
    else if (cfg.gating === "sigmoid") {
      for (let e = 0; e < nExpert; e++) probs[e] = f32(1 / f32(1 + f32(Math.exp(-logits[off + e]))));
    } else for (let e = 0; e < nExpert; e++) probs[e] = logits[off + e];
  }

  /** Stage 2 (ffn_moe_probs_biased): selection scores, then group limiting. */
  biasSelection(cfg: RouterConfig): void {
    const { nExpert, probs, selection } = this;
    const bias = cfg.selectionBias;
    if (bias) for (let e = 0; e < nExpert; e++) selection[e] = f32(probs[e] + bias[e]);
    else selection.set(probs);
    if (cfg.nGroup !== undefined && cfg.nGroup > 1) this.limitGroups(cfg.nGroup, cfg.nGroupUsed ?? cfg.nGroup);
  }

  /** Scores of experts outside the nGroupUsed best groups become -Infinity. */
  private limitGroups(nGroup: number, nGroupUsed: number): void {
    const { selection, groupScore, groupKeep } = this;
    const perGroup = Math.floor(this.nExpert / nGroup);
    for (let g = 0; g < nGroup; g++) {
      let a = -Infinity;
      let b = -Infinity;
      for (let i = g * perGroup; i < (g + 1) * perGroup; i++) {
        const x = selection[i];
        if (x > a) {
          b = a;
          a = x;
        } else if (x > b) b = x;
      }
      groupScore[g] = perGroup >= 2 ? f32(a + b) : a;
    }
    const used = Math.min(nGroupUsed, nGroup);
    topK(groupScore, nGroup, used, groupKeep);
    for (let g = 0; g < nGroup; g++) {
      let kept = false;
      for (let j = 0; j < used; j++) if (groupKeep[j] === g) kept = true;
      if (!kept) selection.fill(-Infinity, g * perGroup, (g + 1) * perGroup);
    }
  }

  /** Stage 3 (ffn_moe_topk) and the gathered ffn_moe_weights (ffn_moe_weights_softmax for softmax_topk). */
  selectTopK(cfg: RouterConfig, K: number): void {
    const { topk, weights, probs } = this;
    topK(this.selection, this.nExpert, K, topk);
    for (let j = 0; j < K; j++) weights[j] = probs[topk[j]];
    if (cfg.gating === "softmax_topk") softmaxF32(weights, 0, K, weights);
  }

  /**
   * Stage 4's dynamic part: the positions of the layer's `computed` first candidates that dynamic routing
   * (the layer's cumP, the session's ser) keeps, into `keep`; returns how many. Under the soft mask a
   * softmax_topk model's kept weights become the softmax over the kept logits.
   */
  keepComputed(policy: MoePolicy, lp: LayerPolicy, cfg: RouterConfig): number {
    const { computed, cumP } = lp;
    if (cumP === undefined && policy.ser === undefined) {
      for (let i = 0; i < computed; i++) this.keep[i] = i;
      return computed;
    }
    const kept = dynamicKeep(cumP, policy.ser, this.weights, computed, this.keep);
    if (!policy.hard && kept < computed && cfg.gating === "softmax_topk") this.resoftmaxKept(kept);
    return kept;
  }

  private resoftmaxKept(kept: number): void {
    const { topk, weights, probs, keep, tmp } = this;
    for (let i = 0; i < kept; i++) tmp[i] = probs[topk[keep[i]]];
    softmaxF32(tmp, 0, kept, tmp);
    for (let i = 0; i < kept; i++) weights[keep[i]] = tmp[i];
  }

  /**
   * Stage 5's ffn_moe_weights_sum (clamped, as the divisor of ffn_moe_weights_norm): the float32 sum
   * (double accumulation) of the weights at positions pos[0..n).
   */
  weightsSum(pos: Int32Array, n: number): number {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += this.weights[pos[i]];
    return Math.max(f32(sum), MIN_WEIGHT_SUM);
  }
}

/** ffn_moe_weights_norm and ffn_moe_weights_scaled of selection probability x. */
function scaledWeight(cfg: RouterConfig, x: number, sum: number): number {
  let w = cfg.normTopK ? f32(x / sum) : x;
  if (cfg.scale !== 0 && cfg.scale !== 1) w = f32(w * cfg.scale);
  return w;
}

export function createRouter(policy: MoePolicy, nLayer: number, observer?: RoutingObserver): Router {
  /** per layer: tokens routed, experts computed */
  const counts = new Map<number, { tokens: number; experts: number }>();
  let stages: TokenStages | undefined;

  function route(logits: Float32Array, nTokens: number, cfg: RouterConfig, layer: number): Routing {
    const nExpert = cfg.nExpert;
    const k = Math.min(cfg.nExpertUsed, nExpert);
    if (logits.length < nTokens * nExpert) throw new RangeError(`router logits: ${logits.length} values for ${nTokens} x ${nExpert}`);
    if (layer < 0 || layer >= nLayer) throw new RangeError(`router: layer ${layer} outside 0..${nLayer - 1}`);
    const lp = policy.layer(layer, k, nExpert);
    const { K, computed } = lp;
    const maxK = Math.max(computed, 1);
    const ids = new Int32Array(nTokens * maxK);
    const weights = new Float32Array(nTokens * maxK);
    const kepts = new Int32Array(nTokens);
    if (!stages || stages.nExpert !== nExpert) stages = new TokenStages(nExpert);
    const s = stages;
    let c = counts.get(layer);
    if (!c) counts.set(layer, (c = { tokens: 0, experts: 0 }));

    for (let t = 0; t < nTokens; t++) {
      const off = t * nExpert;
      s.scoreProbs(cfg, logits, off);
      s.biasSelection(cfg);
      s.selectTopK(cfg, K);
      const kept = s.keepComputed(policy, lp, cfg);
      const sum = !cfg.normTopK ? 1 : policy.hard ? s.weightsSum(s.identity, K) : s.weightsSum(s.keep, kept);
      const row = t * maxK;
      for (let i = 0; i < kept; i++) {
        const j = s.keep[i];
        ids[row + i] = s.topk[j];
        weights[row + i] = scaledWeight(cfg, s.weights[j], sum);
      }
      kepts[t] = kept;
      c.experts += kept;
      observer?.token(layer, cfg, logits, off, s, K, k, kept);
    }
    c.tokens += nTokens;
    return { nTokens, maxK, counts: kepts, ids, weights };
  }

  return {
    route,
    stats(): MoeLayerStats[] {
      return [...counts.entries()]
        .sort((a, b) => a[0] - b[0])
        .map(([layer, c]) => ({ layer, tokens: c.tokens, meanExperts: c.tokens ? c.experts / c.tokens : 0, ...observer?.layerStats(layer) }));
    },
    resetStats(): void {
      counts.clear();
      observer?.reset();
    },
  };
}
