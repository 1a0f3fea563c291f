/**
 * The forward pass of a decoder-only transformer, shared by every architecture (llama.cpp's
 * llm_graph_context): token embedding, the architecture's layer graph for each layer, output norm and
 * output projection. `LayerGraph` holds one batch's activation buffers and the builders the architecture
 * files call (norm, qkv, rope, attention, dense FFN, MoE FFN, shared expert), so that an architecture's
 * `layer` function reads like the corresponding src/models/<arch>.cpp of llama.cpp.
 *
 * Every weight product goes through the MatmulBackend; activation buffers are allocated from the backend
 * once per session and grown only when a larger batch arrives.
 */
import type { MatmulBackend } from "../kernels/backend.ts";
import { getRowsF32, type Weight } from "../kernels/matmul.ts";
import { attentionTask, KvCache, type AttentionShape } from "./attention.ts";
import { buildMoeFfn, denseFfn, sharedExpertFfn, type FfnBuffers } from "./ffn.ts";
import type { MetaReader, ModelHParams } from "./hparams.ts";
import type { Router } from "./moe.ts";
import type { RouterConfig } from "./moe-types.ts";
import { addInPlace, addRowBias, rmsNorm, rope, ropeParams, ropeTable, type RopeParams, scaleInPlace } from "./ops.ts";
import type { DenseFfnWeights, LayerWeights, ModelWeights, MoeWeights, SharedExpertWeights, TensorSource } from "./weights.ts";

/**
 * What an architecture file provides (see src/model/archs/). H is its hyperparameter record (the common
 * ModelHParams plus its own, as llama.cpp's llama_hparams / mlx-lm's ModelArgs), W its layer weights
 * (LayerWeights with the parts its layers always have).
 */
export interface Arch<H extends ModelHParams = ModelHParams, W extends LayerWeights = LayerWeights> {
  /** general.architecture value */
  name: string;
  ropeType: "norm" | "neox";
  /**
   * The architecture's hyperparameters (llama.cpp load_arch_hparams): a new record from the common ones
   * and the architecture's own keys. Reads metadata only (no tensor data), so the loader can check options
   * against it before the tensors load; read once per model.
   */
  hparams(r: MetaReader, common: ModelHParams): H;
  /** finds the architecture's tensors (load_arch_tensors) */
  tensors(t: TensorSource, hp: H): ModelWeights<W>;
  /** how MoE layers route (undefined for dense architectures) */
  router?(hp: H): RouterConfig;
  /** one transformer layer: reads and updates the residual stream g.x */
  layer(g: LayerGraph<H>, w: W, il: number): void;
}

/** Activation buffers of one batch of up to `cap` tokens. */
class Buffers implements FfnBuffers {
  x: Float32Array;
  cur: Float32Array;
  tmp: Float32Array;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  attn: Float32Array;
  gate: Float32Array;
  up: Float32Array;
  rope: Float32Array;
  routerLogits: Float32Array;
  xe: Float32Array;
  ge: Float32Array;
  ue: Float32Array;
  ye: Float32Array;
  shexpGate: Float32Array;

  constructor(
    backend: MatmulBackend,
    readonly cap: number,
    hp: ModelHParams,
  ) {
    const a = (n: number) => backend.allocF32(Math.max(1, n));
    const ffnWidth = Math.max(hp.nFf, hp.nFfShexp, hp.nFfExp);
    this.x = a(cap * hp.nEmbd);
    this.cur = a(cap * hp.nEmbd);
    this.tmp = a(cap * hp.nEmbd);
    this.q = a(cap * hp.nHead * hp.nEmbdHeadK);
    this.k = a(cap * hp.nHeadKv * hp.nEmbdHeadK);
    this.v = a(cap * hp.nHeadKv * hp.nEmbdHeadV);
    this.attn = a(cap * hp.nHead * hp.nEmbdHeadV);
    this.gate = a(cap * ffnWidth);
    this.up = a(cap * ffnWidth);
    this.rope = new Float32Array(cap * hp.nRot);
    this.routerLogits = a(cap * hp.nExpert);
    this.xe = a(hp.nExpert ? cap * hp.nEmbd : 0);
    this.ge = a(hp.nExpert ? cap * hp.nFfExp : 0);
    this.ue = a(hp.nExpert ? cap * hp.nFfExp : 0);
    this.ye = a(hp.nExpert ? cap * hp.nEmbd : 0);
    this.shexpGate = a(cap);
  }
}

/** The builders an architecture's layer graph calls, over one batch. */
export class LayerGraph<H extends ModelHParams = ModelHParams> {
  /** tokens in the current batch */
  n = 0;
  /** position of the batch's first token */
  pos0 = 0;
  b!: Buffers;
  readonly attnShape: AttentionShape;
  readonly ropeP: RopeParams;

  /** scratch buffers of architecture-specific builders (e.g. MLA), by name, grown on demand */
  private readonly scratch = new Map<string, Float32Array>();

  constructor(
    readonly hp: H,
    readonly backend: MatmulBackend,
    readonly cache: KvCache,
    /** the session's router (replaced when the session's expert setting changes) */
    public router: Router | undefined,
    readonly routerCfg: RouterConfig | undefined,
    ropeFreqs?: Float32Array,
  ) {
    const scale = hp.attentionScale !== 0 ? hp.attentionScale : Math.fround(1 / Math.sqrt(hp.nEmbdHeadK));
    this.attnShape = { nHead: hp.nHead, nHeadKv: hp.nHeadKv, headDimK: hp.nEmbdHeadK, headDimV: hp.nEmbdHeadV, scale };
    this.ropeP = ropeParams(hp, ropeFreqs);
  }

  /** Prepares for a batch of n tokens at positions pos0..pos0+n-1. */
  begin(n: number, pos0: number): void {
    if (!this.b || this.b.cap < n) this.b = new Buffers(this.backend, n, this.hp);
    this.n = n;
    this.pos0 = pos0;
    const positions = new Int32Array(n);
    for (let t = 0; t < n; t++) positions[t] = pos0 + t;
    ropeTable(this.ropeP, positions, n, this.b.rope);
  }

  /** the residual stream [n x nEmbd] */
  get x(): Float32Array {
    return this.b.x;
  }
  /** scratch rows [n x nEmbd] */
  get cur(): Float32Array {
    return this.b.cur;
  }
  get tmp(): Float32Array {
    return this.b.tmp;
  }
  get q(): Float32Array {
    return this.b.q;
  }
  get k(): Float32Array {
    return this.b.k;
  }
  get v(): Float32Array {
    return this.b.v;
  }

  /** dst = RMSNorm(src) * w over rows of nEmbd */
  norm(src: Float32Array, w: Float32Array, dst: Float32Array): void {
    rmsNorm(src, dst, this.n, this.hp.nEmbd, this.hp.rmsEps, w);
  }

  /** RMSNorm of each row of `width` values in buf (width = head dim for per-head q/k norm). */
  normRows(buf: Float32Array, w: Float32Array, width: number, rowsPerToken: number): void {
    rmsNorm(buf, buf, this.n * rowsPerToken, width, this.hp.rmsEps, w);
  }

  /** out = x W^T (+ bias) for the batch */
  project(w: Weight, x: Float32Array, out: Float32Array, bias?: Float32Array): void {
    this.backend.matmul(w, x, this.n, out);
    if (bias) addRowBias(out, bias, this.n, w.ne1);
  }

  /** q, k, v projections of x (with the optional biases) into g.q, g.k, g.v */
  qkv(L: LayerWeights, x: Float32Array): void {
    if (!L.wq || !L.wk || !L.wv) throw new Error("qkv: the layer has no q/k/v projections");
    const { n, b } = this;
    this.backend.matmulMany([
      { w: L.wq, x, nTokens: n, out: b.q },
      { w: L.wk, x, nTokens: n, out: b.k },
      { w: L.wv, x, nTokens: n, out: b.v },
    ]);
    if (L.bq) addRowBias(b.q, L.bq, n, L.wq.ne1);
    if (L.bk) addRowBias(b.k, L.bk, n, L.wk.ne1);
    if (L.bv) addRowBias(b.v, L.bv, n, L.wv.ne1);
  }

  /** RoPE on nHeads heads of `headDim` values per token (default the key length), in place */
  rope(buf: Float32Array, nHeads: number, headDim = this.hp.nEmbdHeadK): void {
    rope(this.ropeP, this.b.rope, buf, this.n, nHeads, headDim);
  }

  /**
   * Appends g.k / g.v to layer il's cache, attends with g.q (F32 attention, or llama.cpp's flash attention
   * with an F16 cache), projects with wo (+bo) into out.
   */
  attention(L: LayerWeights, il: number, out: Float32Array, window = 0): void {
    this.attend(L, il, window);
    this.project(L.wo, this.b.attn, out, L.bo);
  }

  /**
   * The attention part of `attention` without the output projection: the result stays in g.attn
   * (nHead x headDimV per token). Uses the layer's attention sinks; `window` > 0 is a sliding window.
   */
  attend(L: LayerWeights, il: number, window = 0): void {
    this.cache.store(il, this.pos0, this.n, this.b.k, this.b.v);
    const opts = { sinks: L.attnSinks, window };
    this.backend.attention(attentionTask(this.cache, il, this.attnShape, this.b.q, this.n, this.pos0, this.b.attn, opts));
  }

  /** attention output rows [n x nHead * headDimV] of the last `attend` */
  get attn(): Float32Array {
    return this.b.attn;
  }

  /**
   * A scratch buffer of at least n floats from the backend's memory, kept by the session under `name` and
   * reallocated only when a larger one is asked for (contents are not kept across calls).
   */
  buffer(name: string, n: number): Float32Array {
    let b = this.scratch.get(name);
    if (!b || b.length < n) {
      b = this.backend.allocF32(Math.max(1, n));
      this.scratch.set(name, b);
    }
    return b;
  }

  /** a += b over the batch's rows of nEmbd */
  add(a: Float32Array, b: Float32Array): void {
    addInPlace(a, b, this.n * this.hp.nEmbd);
  }

  /** dense SwiGLU FFN: out = down(silu(gate x) * up x) */
  ffn(w: DenseFfnWeights, x: Float32Array, out: Float32Array): void {
    denseFfn(this, w, x, out);
  }

  /** routed experts: out = sum_k w_k expert_k(x) */
  moeFfn(w: MoeWeights, x: Float32Array, out: Float32Array, il: number): void {
    if (!this.router || !this.routerCfg) throw new Error(`layer ${il}: routed experts in a model without a router`);
    buildMoeFfn(this, w, this.routerCfg, this.router, x, out, il);
  }

  /** out += sigmoid(gateInp . x) * sharedExpert(x) */
  sharedExpert(w: SharedExpertWeights, x: Float32Array, out: Float32Array): void {
    sharedExpertFfn(this, w, x, out);
  }

  /**
   * The FFN of a layer that is either dense or MoE (leading dense layers, Mixtral-style llama): routed
   * experts plus the shared expert when it has them, else the dense FFN.
   */
  layerFfn(L: LayerWeights, x: Float32Array, out: Float32Array, il: number): void {
    if (L.moe) {
      this.moeFfn(L.moe, x, out, il);
      if (L.shexp) this.sharedExpert(L.shexp, x, out);
    } else if (L.ffn) this.ffn(L.ffn, x, out);
    else throw new Error(`layer ${il} has neither a dense FFN nor routed experts`);
  }
}

/**
 * Runs one batch through the model: embeddings, layers, output norm, and the output projection for the
 * last row (logitsAll false) or every row. Returns a view of the backend's logits buffer.
 */
export function forwardBatch(
  arch: Arch,
  w: ModelWeights,
  g: LayerGraph,
  tokens: ArrayLike<number>,
  pos0: number,
  allLogits: boolean,
  logits: Float32Array,
): Float32Array {
  const n = tokens.length;
  const hp = g.hp;
  g.begin(n, pos0);
  getRowsF32(w.tokEmbd, tokens, g.x); // token embeddings
  if (w.embeddingScale !== undefined) scaleInPlace(g.x, w.embeddingScale, n * hp.nEmbd);
  for (let il = 0; il < hp.nLayer; il++) arch.layer(g, w.layers[il], il);

  const first = allLogits ? 0 : n - 1;
  const rows = n - first;
  const xs = g.x.subarray(first * hp.nEmbd, n * hp.nEmbd);
  rmsNorm(xs, g.cur, rows, hp.nEmbd, hp.rmsEps, w.outputNorm);
  g.backend.matmul(w.output, g.cur, rows, logits);
  if (w.outputBias) addRowBias(logits, w.outputBias, rows, hp.nVocab);
  if (w.logitScale !== undefined) scaleInPlace(logits, w.logitScale, rows * hp.nVocab);
  return logits.subarray(0, rows * hp.nVocab);
}
