/**
 * Feed-forward builders (llama.cpp's build_ffn and build_moe_ffn):
 *  - denseFfn: SwiGLU, out = down(silu(gate x) * up x);
 *  - buildMoeFfn: router logits -> route() -> for each expert any token of the batch uses, gather those
 *    tokens, run that expert's gate/up/down on them only (cost scales with experts used, not experts that
 *    exist), weight each output, and sum each token's experts in its routing order (as llama.cpp adds them);
 *    optional per-layer pieces from MoeWeights: router bias, selection bias (exp_probs_b), per-expert
 *    gate/up/down biases and the clamped SwiGLU-OAI activation (gpt-oss);
 *  - sharedExpertFfn: Qwen2-MoE's shared expert, out += sigmoid(gateInp . x) * ffn(x) (ungated: out += ffn(x)).
 */
import type { MatmulBackend } from "../kernels/backend.ts";
import type { Weight } from "../kernels/matmul.ts";
import type { ModelHParams } from "./hparams.ts";
import type { Router } from "./moe.ts";
import type { RouterConfig } from "./moe-types.ts";
import { addRowBias, sigmoid, swiglu, swigluOai } from "./ops.ts";
import type { MoeWeights, SharedExpertWeights } from "./weights.ts";

/** Scratch buffers the FFN builders use (allocated by the graph, sized for the batch). */
export interface FfnBuffers {
  gate: Float32Array;
  up: Float32Array;
  routerLogits: Float32Array;
  /** gathered expert inputs / gate / up / outputs */
  xe: Float32Array;
  ge: Float32Array;
  ue: Float32Array;
  ye: Float32Array;
  shexpGate: Float32Array;
  slots: Float32Array;
}

export interface FfnContext {
  readonly n: number;
  readonly hp: ModelHParams;
  readonly backend: MatmulBackend;
  readonly b: FfnBuffers;
}

/** out = down(silu(gate x) * up x) for n rows of x */
function swigluFfn(
  backend: MatmulBackend,
  w: { gate: Weight; up: Weight; down: Weight },
  x: Float32Array,
  n: number,
  gate: Float32Array,
  up: Float32Array,
  out: Float32Array,
): void {
  backend.matmul(w.up, x, n, up);
  backend.matmul(w.gate, x, n, gate);
  swiglu(gate, up, n * w.gate.ne1);
  backend.matmul(w.down, gate, n, out);
}

export function denseFfn(g: FfnContext, w: { gate: Weight; up: Weight; down: Weight }, x: Float32Array, out: Float32Array): void {
  swigluFfn(g.backend, w, x, g.n, g.b.gate, g.b.up, out);
}

/** out += sigmoid(gateInp . x) * swiglu_ffn(x) (Qwen2-MoE shared expert; ungated when gateInp is absent) */
export function sharedExpertFfn(g: FfnContext, w: SharedExpertWeights, x: Float32Array, out: Float32Array): void {
  const { n, hp, b } = g;
  const nEmbd = hp.nEmbd;
  // the shared expert's output goes to xe/ye scratch (free outside buildMoeFfn)
  const y = b.ye;
  swigluFfn(g.backend, w, x, n, b.gate, b.up, y);
  if (w.gateInp) g.backend.matmul(w.gateInp, x, n, b.shexpGate);
  for (let t = 0; t < n; t++) {
    const s = w.gateInp ? sigmoid(b.shexpGate[t]) : 1;
    const o = t * nEmbd;
    for (let i = 0; i < nEmbd; i++) out[o + i] += y[o + i] * s;
  }
}

/**
 * Routed experts for a batch: out[t] = sum over token t's experts k (in routing order) of w_k * expert_k(x[t]).
 */
export function buildMoeFfn(
  g: FfnContext,
  w: MoeWeights,
  cfg: RouterConfig,
  router: Router,
  x: Float32Array,
  out: Float32Array,
  il: number,
): void {
  const { n, hp, backend, b } = g;
  const nEmbd = hp.nEmbd;
  const nFf = w.gate[0].ne1;

  backend.matmul(w.gateInp, x, n, b.routerLogits);
  if (w.gateInpBias) addRowBias(b.routerLogits, w.gateInpBias, n, cfg.nExpert);
  const layerCfg = w.selectionBias ? { ...cfg, selectionBias: w.selectionBias } : cfg;
  const r = router.route(b.routerLogits, n, layerCfg, il);
  const maxK = r.maxK;
  if (b.slots.length < n * maxK * nEmbd) b.slots = new Float32Array(n * maxK * nEmbd);
  const slots = b.slots;

  // which (token, slot) pairs each expert serves
  const nExpert = cfg.nExpert;
  const count = new Int32Array(nExpert);
  for (let t = 0; t < n; t++) for (let s = 0; s < r.counts[t]; s++) count[r.ids[t * maxK + s]]++;
  const start = new Int32Array(nExpert + 1);
  for (let e = 0; e < nExpert; e++) start[e + 1] = start[e] + count[e];
  const members = new Int32Array(start[nExpert]); // t * maxK + s, grouped by expert
  const fill = start.slice(0, nExpert);
  for (let t = 0; t < n; t++) for (let s = 0; s < r.counts[t]; s++) members[fill[r.ids[t * maxK + s]]++] = t * maxK + s;

  for (let e = 0; e < nExpert; e++) {
    const m = count[e];
    if (m === 0) continue;
    // gather the rows of the tokens routed to e
    for (let i = 0; i < m; i++) {
      const t = Math.floor(members[start[e] + i] / maxK);
      b.xe.set(x.subarray(t * nEmbd, (t + 1) * nEmbd), i * nEmbd);
    }
    backend.matmul(w.up[e], b.xe, m, b.ue);
    if (w.upBias) addRowBias(b.ue, w.upBias[e], m, nFf);
    backend.matmul(w.gate[e], b.xe, m, b.ge);
    if (w.gateBias) addRowBias(b.ge, w.gateBias[e], m, nFf);
    if (w.activation === "swiglu_oai") swigluOai(b.ge, b.ue, m * nFf);
    else swiglu(b.ge, b.ue, m * nFf);
    backend.matmul(w.down[e], b.ge, m, b.ye);
    if (w.downBias) addRowBias(b.ye, w.downBias[e], m, nEmbd);
    // weighted output into the token's slot
    for (let i = 0; i < m; i++) {
      const ts = members[start[e] + i];
      const wt = r.weights[ts];
      const so = ts * nEmbd;
      const yo = i * nEmbd;
      for (let j = 0; j < nEmbd; j++) slots[so + j] = b.ye[yo + j] * wt;
    }
  }

  // sum each token's experts in routing order
  for (let t = 0; t < n; t++) {
    const o = t * nEmbd;
    const k = r.counts[t];
    if (k === 0) {
      out.fill(0, o, o + nEmbd);
      continue;
    }
    out.set(slots.subarray(t * maxK * nEmbd, t * maxK * nEmbd + nEmbd), o);
    for (let s = 1; s < k; s++) {
      const so = (t * maxK + s) * nEmbd;
      for (let j = 0; j < nEmbd; j++) out[o + j] += slots[so + j];
    }
  }
}
