/**
 * Weight lookup for the architecture loaders (llama.cpp's create_tensor): finds a tensor by name, checks
 * its shape and type, and hands it out as a matmul Weight, per-expert Weights of a 3-D expert tensor, or
 * a float32 vector (norms, biases). Also the per-layer weight record every architecture fills
 * (the fields of llama.cpp's llama_layer that the supported architectures use).
 */
import { TsmoeError } from "../errors.ts";
import type { GgufFile, TensorEntry } from "../gguf/types.ts";
import type { Weight } from "../kernels/matmul.ts";
import type { RouterConfig } from "./moe-types.ts";
import { assertSupported, dequantizeRow } from "../tensor/dequantize.ts";
import { GGMLType } from "../tensor/types.ts";

/** Routed experts of one MoE layer: router, and per-expert gate / up / down projections. */
export interface MoeWeights {
  /** router (ffn_gate_inp): nExpert rows of nEmbd */
  gateInp: Weight;
  gate: Weight[];
  up: Weight[];
  down: Weight[];
  /** per-layer expert selection bias (exp_probs_b): ranks experts, never enters the weights */
  selectionBias?: Float32Array;
  /** optional router bias (added to the logits before gating) and per-expert biases (gpt-oss) */
  gateInpBias?: Float32Array;
  gateBias?: Float32Array[];
  upBias?: Float32Array[];
  downBias?: Float32Array[];
  /** expert activation: SwiGLU (default) or gpt-oss's clamped SwiGLU-OAI (alpha 1.702, limit 7) */
  activation?: "swiglu" | "swiglu_oai";
  /**
   * when the experts are streamed from the file (./expert-cache.ts): resident copies of the experts `used`
   * (indexed by expert id, valid until the next fetch of any layer); gate/up/down above then hold no data.
   * x: the layer's FFN input when the batch is one token, from which the next layer's experts are guessed
   * (with cfg, the router's settings) and read ahead
   */
  fetch?: (used: readonly number[], x?: Float32Array, cfg?: RouterConfig) => Pick<MoeWeights, "gate" | "up" | "down">;
}

/** A dense SwiGLU FFN: ffn_gate / ffn_up / ffn_down. */
export interface DenseFfnWeights {
  gate: Weight;
  up: Weight;
  down: Weight;
}

/** Shared expert (Qwen2-MoE): a dense SwiGLU FFN whose output is scaled by sigmoid(gateInp . x). */
export interface SharedExpertWeights {
  gate: Weight;
  up: Weight;
  down: Weight;
  /** optional scalar gate (one row of nEmbd) */
  gateInp?: Weight;
}

/**
 * Multi-head latent attention (DeepSeek-V2/V3), absorbed form: q through a LoRA (q_a, its norm, q_b) or
 * one projection; the compressed KV (kv_a_mqa: latent + rope part) and its norm; per-head k_b (absorbed
 * into q) and v_b (decompressing the attention output).
 */
export type MlaWeights = (
  | { wqA: Weight; qANorm: Float32Array; wqB: Weight; wq?: undefined }
  /** q projection when there is no q LoRA */
  | { wq: Weight; wqA?: undefined; qANorm?: undefined; wqB?: undefined }
) & {
  wkvA: Weight;
  kvANorm: Float32Array;
  /** per head: [nope -> kvLora] and [kvLora -> vDim] */
  wkB: Weight[];
  wvB: Weight[];
};

/** Layer weights of multi-head latent attention (deepseek2). */
export type MlaLayer = LayerWeights & { mla: MlaWeights };

export interface LayerWeights {
  attnNorm: Float32Array;
  /** q/k/v projections (absent in architectures with their own attention inputs, e.g. MLA) */
  wq?: Weight;
  wk?: Weight;
  wv?: Weight;
  bq?: Float32Array;
  bk?: Float32Array;
  bv?: Float32Array;
  wo: Weight;
  bo?: Float32Array;
  /** q/k RMSNorm weights: per head (length head dim) or over the whole projection */
  qNorm?: Float32Array;
  kNorm?: Float32Array;
  /** multi-head latent attention inputs (deepseek2), used instead of wq/wk/wv */
  mla?: MlaWeights;
  /** per-head attention sink logits (gpt-oss attn_sinks) */
  attnSinks?: Float32Array;
  ffnNorm: Float32Array;
  /** dense FFN (dense layers) or routed experts (MoE layers) */
  ffn?: DenseFfnWeights;
  moe?: MoeWeights;
  shexp?: SharedExpertWeights;
}

/** Layer weights where per-head q/k RMSNorm is always present (qwen3, qwen3moe, olmoe). */
export type QkNormLayer = LayerWeights & { qNorm: Float32Array; kNorm: Float32Array };
/** Layer weights of a dense layer / an MoE layer. */
export type DenseLayer = LayerWeights & { ffn: DenseFfnWeights };
export type MoeLayer = LayerWeights & { moe: MoeWeights };

/** The model's weights; W is the architecture's layer record (LayerWeights with the parts it always has). */
export interface ModelWeights<W extends LayerWeights = LayerWeights> {
  tokEmbd: Weight;
  outputNorm: Float32Array;
  /** output projection (token_embd when tied) and its optional bias */
  output: Weight;
  outputBias?: Float32Array;
  /** multipliers of the token embeddings and of the logits (Granite embedding_scale, 1 / logit_scale) */
  embeddingScale?: number;
  logitScale?: number;
  /** RoPE frequency factors (Llama 3 rope_freqs.weight), shared by all layers */
  ropeFreqs?: Float32Array;
  layers: W[];
}

function shapeStr(s: number[]): string {
  return `[${s.join(", ")}]`;
}

/** Tensor access with llama.cpp's checks (required / optional, expected shape, supported type). */
export class TensorSource {
  readonly used = new Set<string>();
  constructor(readonly file: GgufFile) {}

  has(name: string): boolean {
    return this.file.tensors.has(name);
  }

  /** The tensor `name` with shape `shape` (ggml order); undefined when optional and absent. */
  entry(name: string, shape: number[], optional: true): TensorEntry | undefined;
  entry(name: string, shape: number[], optional?: false): TensorEntry;
  entry(name: string, shape: number[], optional = false): TensorEntry | undefined {
    const t = this.file.tensors.get(name);
    if (!t) {
      if (optional) return undefined;
      throw new TsmoeError(`${this.file.path}: missing tensor '${name}'`);
    }
    // trailing 1s are not stored (a [n, 1] tensor may be written as [n])
    const got = t.shape.slice();
    const want = shape.slice();
    while (got.length > 1 && got[got.length - 1] === 1) got.pop();
    while (want.length > 1 && want[want.length - 1] === 1) want.pop();
    if (got.length !== want.length || got.some((v, i) => v !== want[i]))
      throw new TsmoeError(`${this.file.path}: tensor '${name}' has shape ${shapeStr(t.shape)}, expected ${shapeStr(shape)}`);
    assertSupported(name, t.type);
    this.used.add(name);
    return t;
  }

  /** A 2-D weight [ne0, ne1] for matmul. */
  weight(name: string, ne0: number, ne1: number, optional: true): Weight | undefined;
  weight(name: string, ne0: number, ne1: number, optional?: false): Weight;
  weight(name: string, ne0: number, ne1: number, optional = false): Weight | undefined {
    const t = optional ? this.entry(name, [ne0, ne1], true) : this.entry(name, [ne0, ne1]);
    if (!t) return undefined;
    return { type: t.type, ne0, ne1, data: t.data };
  }

  /** A 3-D expert tensor [ne0, ne1, nExpert] as one 2-D Weight per expert (views, no copy). */
  experts(name: string, ne0: number, ne1: number, nExpert: number): Weight[] {
    const t = this.entry(name, [ne0, ne1, nExpert]);
    const per = t.nBytes / nExpert;
    const out: Weight[] = [];
    for (let e = 0; e < nExpert; e++) out.push({ type: t.type, ne0, ne1, data: t.data.subarray(e * per, (e + 1) * per) });
    return out;
  }

  /** A 2-D tensor [n, count] as `count` float32 vectors of n values (per-expert biases). */
  vectors(name: string, n: number, count: number): Float32Array[] {
    const t = this.entry(name, [n, count]);
    const all = new Float32Array(n * count);
    dequantizeRow(t.type, t.data, 0, all, 0, n * count);
    return Array.from({ length: count }, (_, i) => all.subarray(i * n, (i + 1) * n));
  }

  /** A 1-D tensor of n values as float32 (dequantized when stored in another type). */
  vector(name: string, n: number, optional: true): Float32Array | undefined;
  vector(name: string, n: number, optional?: false): Float32Array;
  vector(name: string, n: number, optional: boolean): Float32Array | undefined;
  vector(name: string, n: number, optional = false): Float32Array | undefined {
    const t = optional ? this.entry(name, [n], true) : this.entry(name, [n]);
    if (!t) return undefined;
    const out = new Float32Array(n);
    if (t.type === GGMLType.F32 && (t.data.byteOffset & 3) === 0)
      out.set(new Float32Array(t.data.buffer, t.data.byteOffset, n));
    else dequantizeRow(t.type, t.data, 0, out, 0, n);
    return out;
  }
}
