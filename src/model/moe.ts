/**
 * Expert routing for Mixture-of-Experts layers, with the runtime expert-count override.
 *
 * `createRouter(moe, nLayer)` returns a Router. The MoE FFN builder computes the router logits of a batch
 * (nTokens x nExpert, row-major, router bias already added) and calls
 * `router.route(logits, nTokens, cfg, layer)`, which returns for every token the experts to compute and
 * their weights (`Routing` in moe-types.ts: token t uses ids[t*maxK + j], weights[t*maxK + j] for
 * j < counts[t], highest selection score first). The router also accumulates per-layer statistics
 * (`stats()`, `resetStats()`). A Router is not re-entrant: route one batch at a time.
 *
 * Gating, as llama.cpp's build_moe_ffn does it (float32 numerics like ggml):
 *  1. probabilities p: softmax over all experts, an independent sigmoid per expert, or (softmax_topk,
 *     gpt-oss) the raw logits, which are softmaxed after selection;
 *  2. selection scores s = p + selectionBias (the bias only ranks experts, it never enters the weights);
 *  3. group-limited routing (nGroup > 1): a group's score is the sum of its two best selection scores;
 *     the experts of all but the nGroupUsed best groups get score -Infinity;
 *  4. the K best selection scores are selected, best first. Exact ties go to the lower expert id
 *     (llama.cpp sorts with std::sort, whose order of exact ties is unspecified; this is deterministic);
 *  5. weights: the unbiased p of the selected experts (softmaxed over the K for softmax_topk), divided by
 *     their sum when normTopK (the sum clamped below at 6.103515625e-5, as llama.cpp does), then multiplied
 *     by scale (a scale of 0 or 1 means none, as in llama.cpp).
 *
 * Override semantics, with k = the model's expert_used_count and N the override for the layer
 * (MoeOptions.layers when it names the layer, else MoeOptions.nExpert, else k):
 *  - soft mask (default): steps 4-5 with K = N: the top-N selection scores, weighted, normalised and scaled
 *    exactly as the model does its k. Identical to llama.cpp with
 *    `--override-kv <arch>.expert_used_count=int:N`.
 *  - hard mask: steps 4-5 with K = k (the model's routing and weights, normalised over k), then only the
 *    first N of those k experts are computed, their weights unchanged. N <= k.
 *  - N = k is the unmodified model in both modes. For models that do not normalise (OLMoE, Qwen2-MoE)
 *    soft and hard give the same experts and weights.
 *
 * Dynamic routing (per token and layer), applied to the candidates the mask chose above (the model's top-k
 * when no count is given), in rank order. A candidate's selection probability is its weight before
 * normalisation and scale (p, or the top-K softmax for softmax_topk):
 *  - cumP = P (MoeOptions.layerCumP for the layers it names): keep the fewest top-ranked candidates whose probabilities sum to >= P times the candidates'
 *    total (at least one); P = 1 keeps all of them.
 *  - ser = {kmin, t}: keep the first kmin candidates, and each further candidate whose probability is
 *    > t times the largest candidate probability. t = 0 is the model, t = 1 a fixed kmin.
 *  Given both, a candidate is kept only if both keep it. Under the soft mask the kept weights are
 *  renormalised over the kept experts where the model's top-k weights sum to 1 (normTopK: divided by their
 *  sum; softmax_topk: the softmax over the kept logits), otherwise only scaled; under the hard mask they
 *  stay as the model computed them over its k.
 *
 * Statistics per layer (MoeLayerStats): tokens routed; mean experts computed per token; router mass kept
 * (the router distribution's mass on the computed experts over its mass on the model's top-k; above 1
 * when a soft N > k); per-expert load (tokens routed to each expert); mean entropy in nats of the router
 * distribution over all experts (softmax of the logits for softmax and softmax_topk gating, the sigmoid
 * scores divided by their sum for sigmoid gating).
 */
import type { MoeLayerStats, MoeOptions } from "./api.ts";
import type { RouterConfig, Routing } from "./moe-types.ts";

export interface Router {
  /** Routes a batch: `logits` holds nTokens rows of cfg.nExpert router logits. */
  route(logits: Float32Array, nTokens: number, cfg: RouterConfig, layer: number): Routing;
  /** Statistics of every layer routed since creation or the last resetStats, in layer order. */
  stats(): MoeLayerStats[];
  resetStats(): void;
}

/** llama.cpp clamps the sum of the selected weights from below (smallest normal F16) before dividing. */
export const MIN_WEIGHT_SUM = 6.103515625e-5;

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

/** The routed-expert count N for a layer (no option: the model's k). */
export function layerExpertCount(moe: MoeOptions | undefined, layer: number, k: number): number {
  return moe?.layers?.get(layer) ?? moe?.nExpert ?? k;
}

/** The top-p threshold for a layer (MoeOptions.layerCumP when it names the layer, else cumP), if any. */
export function layerCumP(moe: MoeOptions | undefined, layer: number): number | undefined {
  return moe?.layerCumP?.get(layer) ?? moe?.cumP;
}

/**
 * Dynamic routing over the ranked candidate probabilities p[0..n): writes the positions (ascending) of the
 * candidates kept into `keep` and returns how many (1..n). cumP (the layer's threshold) keeps a prefix; ser
 * keeps the first kmin and any later candidate above t times the largest probability; with both, a
 * candidate must pass both.
 */
export function dynamicKeep(
  moe: MoeOptions | undefined,
  p: ArrayLike<number>,
  n: number,
  keep: Int32Array,
  cumP: number | undefined = moe?.cumP,
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
  if (moe?.ser !== undefined) for (let j = 0; j < n; j++) if (p[j] > top) top = p[j];
  let m = 0;
  for (let j = 0; j < Math.max(prefix, 1); j++) {
    if (moe?.ser === undefined || j < moe.ser.kmin || p[j] > moe.ser.t * top) keep[m++] = j;
  }
  return m;
}

/** Per-layer sums behind MoeLayerStats. */
interface LayerSums {
  tokens: number;
  experts: number;
  massKept: number;
  entropy: number;
  load: Float64Array;
}

/** Scores and selects the experts of one token at a time; holds the scratch buffers for nExpert experts. */
class TokenRouter {
  readonly probs: Float32Array;
  readonly sel: Float32Array;
  readonly dist: Float64Array;
  readonly groupScore: Float32Array;
  readonly groupKeep: Int32Array;
  readonly order: Int32Array;
  readonly modelTop: Int32Array;
  readonly p: Float32Array;
  readonly keep: Int32Array;
  readonly tmp: Float32Array;
  /** 0, 1, 2, ... */
  readonly identity: Int32Array;

  constructor(readonly nExpert: number) {
    this.probs = new Float32Array(nExpert);
    this.sel = new Float32Array(nExpert);
    this.dist = new Float64Array(nExpert);
    this.groupScore = new Float32Array(nExpert);
    this.groupKeep = new Int32Array(nExpert);
    this.order = new Int32Array(nExpert);
    this.modelTop = new Int32Array(nExpert);
    this.p = new Float32Array(nExpert);
    this.keep = new Int32Array(nExpert);
    this.tmp = new Float32Array(nExpert);
    this.identity = Int32Array.from({ length: nExpert }, (_, i) => i);
  }

  /** Steps 1-3: probabilities and selection scores of the token whose logits start at `off`. */
  score(cfg: RouterConfig, logits: Float32Array, off: number): void {
    const { nExpert, probs, sel } = this;
    if (cfg.gating === "softmax") softmaxF32(logits, off, nExpert, probs);
    else if (cfg.gating === "sigmoid") {
      for (let e = 0; e < nExpert; e++) probs[e] = f32(1 / f32(1 + f32(Math.exp(-logits[off + e]))));
    } else for (let e = 0; e < nExpert; e++) probs[e] = logits[off + e];
    const bias = cfg.selectionBias;
    if (bias) for (let e = 0; e < nExpert; e++) sel[e] = f32(probs[e] + bias[e]);
    else sel.set(probs);
    if (cfg.nGroup !== undefined && cfg.nGroup > 1) this.limitGroups(cfg.nGroup, cfg.nGroupUsed ?? cfg.nGroup);
  }

  /** Step 3: scores of experts outside the nGroupUsed best groups become -Infinity. */
  private limitGroups(nGroup: number, nGroupUsed: number): void {
    const { sel, groupScore, groupKeep } = this;
    const perGroup = Math.floor(this.nExpert / nGroup);
    for (let g = 0; g < nGroup; g++) {
      let a = -Infinity;
      let b = -Infinity;
      for (let i = g * perGroup; i < (g + 1) * perGroup; i++) {
        const x = sel[i];
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
      if (!kept) sel.fill(-Infinity, g * perGroup, (g + 1) * perGroup);
    }
  }

  /** Steps 4-5 up to normalisation: order[0..K) and their selection probabilities p[0..K). */
  select(cfg: RouterConfig, K: number): void {
    const { order, p, probs } = this;
    topK(this.sel, this.nExpert, K, order);
    for (let j = 0; j < K; j++) p[j] = probs[order[j]];
    if (cfg.gating === "softmax_topk") softmaxF32(p, 0, K, p);
  }

  /** softmax_topk after dynamic routing: the weights of the kept positions become the softmax over them. */
  resoftmaxKept(kept: number): void {
    const { order, p, probs, keep, tmp } = this;
    for (let i = 0; i < kept; i++) tmp[i] = probs[order[keep[i]]];
    softmaxF32(tmp, 0, kept, tmp);
    for (let i = 0; i < kept; i++) p[keep[i]] = tmp[i];
  }

  /** The router distribution over all experts into `dist`; returns its entropy in nats. */
  distribution(cfg: RouterConfig, logits: Float32Array, off: number): number {
    const { nExpert, dist, probs } = this;
    if (cfg.gating === "sigmoid") {
      let sum = 0;
      for (let e = 0; e < nExpert; e++) sum += probs[e];
      for (let e = 0; e < nExpert; e++) dist[e] = probs[e] / sum;
    } else {
      let max = -Infinity;
      for (let e = 0; e < nExpert; e++) if (logits[off + e] > max) max = logits[off + e];
      let sum = 0;
      for (let e = 0; e < nExpert; e++) sum += dist[e] = Math.exp(logits[off + e] - max);
      for (let e = 0; e < nExpert; e++) dist[e] /= sum;
    }
    let h = 0;
    for (let e = 0; e < nExpert; e++) if (dist[e] > 0) h -= dist[e] * Math.log(dist[e]);
    return h;
  }
}

/** Final weight of selection probability x: normalised by `denom` (when normalising) and scaled. */
function finalWeight(cfg: RouterConfig, x: number, denom: number): number {
  let w = cfg.normTopK ? f32(x / denom) : x;
  if (cfg.scale !== 0 && cfg.scale !== 1) w = f32(w * cfg.scale);
  return w;
}

/** The clamped normalisation denominator: the float32 sum (double accumulation) of p at positions pos[0..n). */
function weightSum(p: Float32Array, pos: Int32Array, n: number): number {
  let sum = 0;
  for (let i = 0; i < n; i++) sum += p[pos[i]];
  return Math.max(f32(sum), MIN_WEIGHT_SUM);
}

export function createRouter(moe: MoeOptions | undefined, nLayer: number): Router {
  const sums = new Map<number, LayerSums>();
  let tok: TokenRouter | undefined;
  const hard = moe?.mask === "hard";

  function layerSums(layer: number, nExpert: number): LayerSums {
    let a = sums.get(layer);
    if (!a || a.load.length !== nExpert) {
      a = { tokens: 0, experts: 0, massKept: 0, entropy: 0, load: new Float64Array(nExpert) };
      sums.set(layer, a);
    }
    return a;
  }

  function route(logits: Float32Array, nTokens: number, cfg: RouterConfig, layer: number): Routing {
    const nExpert = cfg.nExpert;
    const k = Math.min(cfg.nExpertUsed, nExpert);
    if (logits.length < nTokens * nExpert) throw new RangeError(`router logits: ${logits.length} values for ${nTokens} x ${nExpert}`);
    if (layer < 0 || layer >= nLayer) throw new RangeError(`router: layer ${layer} outside 0..${nLayer - 1}`);
    const n = Math.max(1, Math.min(layerExpertCount(moe, layer, k), nExpert));
    // K experts are selected and weighted together; `count` of them are computed
    const K = hard ? k : n;
    const count = hard ? Math.min(n, k) : n;
    const maxK = Math.max(count, 1);
    const ids = new Int32Array(nTokens * maxK);
    const weights = new Float32Array(nTokens * maxK);
    const counts = new Int32Array(nTokens);
    if (!tok || tok.nExpert !== nExpert) tok = new TokenRouter(nExpert);
    const r = tok;
    const st = layerSums(layer, nExpert);
    const cumP = layerCumP(moe, layer);
    const dynamic = cumP !== undefined || moe?.ser !== undefined;

    for (let t = 0; t < nTokens; t++) {
      const off = t * nExpert;
      r.score(cfg, logits, off);
      r.select(cfg, K);
      // positions (into the ranked candidates) of the experts computed
      const kept = dynamic ? dynamicKeep(moe, r.p, count, r.keep, cumP) : count;
      if (!dynamic) for (let i = 0; i < count; i++) r.keep[i] = i;
      else if (!hard && kept < count && cfg.gating === "softmax_topk") r.resoftmaxKept(kept);
      let denom = 1;
      if (cfg.normTopK) denom = hard ? weightSum(r.p, r.identity, K) : weightSum(r.p, r.keep, kept);
      const h = r.distribution(cfg, logits, off);
      const row = t * maxK;
      let keptMass = 0;
      for (let i = 0; i < kept; i++) {
        const j = r.keep[i];
        const e = r.order[j];
        ids[row + i] = e;
        weights[row + i] = finalWeight(cfg, r.p[j], denom);
        keptMass += r.dist[e];
        st.load[e]++;
      }
      counts[t] = kept;

      let topMass = 0;
      if (K >= k) for (let j = 0; j < k; j++) topMass += r.dist[r.order[j]];
      else {
        topK(r.sel, nExpert, k, r.modelTop);
        for (let j = 0; j < k; j++) topMass += r.dist[r.modelTop[j]];
      }
      st.tokens++;
      st.experts += kept;
      st.entropy += h;
      st.massKept += topMass > 0 ? keptMass / topMass : 1;
    }
    return { nTokens, maxK, counts, ids, weights };
  }

  return {
    route,
    stats(): MoeLayerStats[] {
      return [...sums.entries()]
        .sort((a, b) => a[0] - b[0])
        .map(([layer, a]) => ({
          layer,
          tokens: a.tokens,
          meanExperts: a.tokens ? a.experts / a.tokens : 0,
          massKept: a.tokens ? a.massKept / a.tokens : 0,
          load: Array.from(a.load),
          entropy: a.tokens ? a.entropy / a.tokens : 0,
        }));
    },
    resetStats(): void {
      sums.clear();
    },
  };
}
