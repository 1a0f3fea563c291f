/**
 * The routing statistics of --moe-stats, as an observer of the router (moe.ts RoutingObserver) that a
 * session attaches only when asked for (SessionOptions.moeStats): per layer, the mean router mass kept (the
 * router distribution's mass on the computed experts over its mass on the model's top-k; above 1 when a
 * soft N > k), the per-expert load (tokens routed to each expert) and the mean entropy in nats of the router
 * distribution over all experts (softmax of the logits for softmax and softmax_topk gating, the sigmoid
 * scores divided by their sum for sigmoid gating).
 */
import type { MoeLayerStats } from "./api.ts";
import { topK, type RoutingObserver, type TokenStages } from "./moe.ts";
import type { RouterConfig } from "./moe-types.ts";

interface LayerSums {
  tokens: number;
  massKept: number;
  entropy: number;
  load: Float64Array;
}

export class RoutingStats implements RoutingObserver {
  private readonly sums = new Map<number, LayerSums>();
  private dist = new Float64Array(0);
  private modelTop = new Int32Array(0);

  token(layer: number, cfg: RouterConfig, logits: Float32Array, off: number, s: TokenStages, K: number, k: number, kept: number): void {
    const nExpert = s.nExpert;
    let a = this.sums.get(layer);
    if (!a || a.load.length !== nExpert) {
      a = { tokens: 0, massKept: 0, entropy: 0, load: new Float64Array(nExpert) };
      this.sums.set(layer, a);
    }
    if (this.dist.length !== nExpert) {
      this.dist = new Float64Array(nExpert);
      this.modelTop = new Int32Array(nExpert);
    }
    const dist = this.dist;
    const h = distribution(cfg, logits, off, s.probs, dist);
    let keptMass = 0;
    for (let i = 0; i < kept; i++) {
      const e = s.topk[s.keep[i]];
      keptMass += dist[e];
      a.load[e]++;
    }
    // the model's top-k: the first k of ffn_moe_topk when at least k were selected
    let top = s.topk;
    if (K < k) {
      topK(s.selection, nExpert, k, this.modelTop);
      top = this.modelTop;
    }
    let topMass = 0;
    for (let j = 0; j < k; j++) topMass += dist[top[j]];
    a.tokens++;
    a.entropy += h;
    a.massKept += topMass > 0 ? keptMass / topMass : 1;
  }

  layerStats(layer: number): Pick<MoeLayerStats, "massKept" | "load" | "entropy"> | undefined {
    const a = this.sums.get(layer);
    if (!a) return undefined;
    return { massKept: a.tokens ? a.massKept / a.tokens : 0, load: Array.from(a.load), entropy: a.tokens ? a.entropy / a.tokens : 0 };
  }

  reset(): void {
    this.sums.clear();
  }
}

/** The router distribution over all experts into `dist`; returns its entropy in nats. */
function distribution(cfg: RouterConfig, logits: Float32Array, off: number, probs: Float32Array, dist: Float64Array): number {
  const nExpert = dist.length;
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
