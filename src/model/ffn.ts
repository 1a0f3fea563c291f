/**
 * Feed-forward builders (llama.cpp's build_ffn and build_moe_ffn):
 *  - denseFfn: SwiGLU, out = down(silu(gate x) * up x);
 *  - buildMoeFfn: router logits -> route() -> for each expert any token of the batch uses, gather those
 *    tokens, run that expert's gate/up/down on them only (cost scales with experts used, not experts that
 *    exist), weight each output, and sum each token's experts in its routing order (as llama.cpp adds them;
 *    the pool does it inside the down products' job, see MatmulBackend.matmulSum);
 *    optional per-layer pieces from MoeWeights: router bias, selection bias (exp_probs_b), per-expert
 *    gate/up/down biases and the clamped SwiGLU-OAI activation (gpt-oss);
 *  - sharedExpertFfn: Qwen2-MoE's shared expert, out += sigmoid(gateInp . x) * ffn(x) (ungated: out += ffn(x)).
 */
import type { MatmulBackend } from "../kernels/backend.ts";
import { sumExpertRows } from "../kernels/expert-sum.ts";
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
  /** gathered expert inputs / gate / up / outputs, one row per (token, expert) pair (grown on demand) */
  xe: Float32Array;
  ge: Float32Array;
  ue: Float32Array;
  ye: Float32Array;
  shexpGate: Float32Array;
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
  backend.swigluMany([{ gate: w.gate, up: w.up, x, nTokens: n, outGate: gate, outUp: up }]);
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

  // the (token, slot) pairs each expert serves, grouped by expert: row j of the gathered buffers serves
  // members[j] = t * maxK + s; rowOf is the inverse
  const nExpert = cfg.nExpert;
  const count = new Int32Array(nExpert);
  for (let t = 0; t < n; t++) for (let s = 0; s < r.counts[t]; s++) count[r.ids[t * maxK + s]]++;
  const start = new Int32Array(nExpert + 1);
  for (let e = 0; e < nExpert; e++) start[e + 1] = start[e] + count[e];
  const nRows = start[nExpert];
  const members = new Int32Array(nRows);
  const rowOf = new Int32Array(n * maxK);
  const fill = start.slice(0, nExpert);
  for (let t = 0; t < n; t++)
    for (let s = 0; s < r.counts[t]; s++) {
      const j = fill[r.ids[t * maxK + s]]++;
      members[j] = t * maxK + s;
      rowOf[t * maxK + s] = j;
    }
  if (b.xe.length < nRows * nEmbd) b.xe = backend.allocF32(nRows * nEmbd);
  if (b.ye.length < nRows * nEmbd) b.ye = backend.allocF32(nRows * nEmbd);
  if (b.ue.length < nRows * nFf) b.ue = backend.allocF32(nRows * nFf);
  if (b.ge.length < nRows * nFf) b.ge = backend.allocF32(nRows * nFf);
  if (n > 1)
    for (let j = 0; j < nRows; j++) {
      const t = Math.floor(members[j] / maxK);
      b.xe.set(x.subarray(t * nEmbd, (t + 1) * nEmbd), j * nEmbd);
    }

  // every used expert's up and gate products in one go, then every down product
  const used: number[] = [];
  for (let e = 0; e < nExpert; e++) if (count[e] > 0) used.push(e);
  // streamed experts: read the missing ones into the cache first
  const ex = w.fetch ? w.fetch(used, n === 1 ? x : undefined, cfg) : w;
  const rows = (buf: Float32Array, e: number, width: number) => buf.subarray(start[e] * width, start[e + 1] * width);
  // one token: every expert reads x itself, so the backend prepares (quantizes) it once for all of them
  const input = (e: number) => (n === 1 ? x : rows(b.xe, e, nEmbd));
  if (!w.upBias && !w.gateBias && w.activation !== "swiglu_oai") {
    backend.swigluMany(used.map((e) => ({ gate: ex.gate[e]!, up: ex.up[e]!, x: input(e), nTokens: count[e], outGate: rows(b.ge, e, nFf), outUp: rows(b.ue, e, nFf) })));
  } else {
    backend.matmulMany(
      used.flatMap((e) => [
        { w: ex.up[e]!, x: input(e), nTokens: count[e], out: rows(b.ue, e, nFf) },
        { w: ex.gate[e]!, x: input(e), nTokens: count[e], out: rows(b.ge, e, nFf) },
      ]),
    );
    for (const e of used) {
      const m = count[e];
      const ue = rows(b.ue, e, nFf);
      const ge = rows(b.ge, e, nFf);
      if (w.upBias) addRowBias(ue, w.upBias[e], m, nFf);
      if (w.gateBias) addRowBias(ge, w.gateBias[e], m, nFf);
      if (w.activation === "swiglu_oai") swigluOai(ge, ue, m * nFf);
      else swiglu(ge, ue, m * nFf);
    }
  }
  const downs = used.map((e) => ({ w: ex.down[e]!, x: rows(b.ge, e, nFf), nTokens: count[e], out: rows(b.ye, e, nEmbd) }));
  // each token's weighted expert outputs (rounded to float32 as a tensor would hold them), summed in
  // routing order; without down biases a pool sums each group of columns as soon as its products are done
  const sum = { ye: b.ye, width: nEmbd, nTokens: n, maxK, counts: r.counts, rowOf, weights: r.weights, out };
  if (!w.downBias) return backend.matmulSum(downs, sum);
  backend.matmulMany(downs);
  for (const e of used) addRowBias(rows(b.ye, e, nEmbd), w.downBias[e], count[e], nEmbd);
  sumExpertRows(sum, 0, nEmbd);
}
