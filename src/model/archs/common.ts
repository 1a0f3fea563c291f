/**
 * Tensor-loading pieces the architecture files share (the create_tensor calls that recur across
 * llama.cpp's src/models/*.cpp): token embedding and output head, attention projections, per-head q/k
 * norms, dense FFN, routed experts, shared expert.
 */
import { TsmoeError } from "../../errors.ts";
import type { ModelHParams } from "../hparams.ts";
import type { DenseFfnWeights, LayerWeights, ModelWeights, MoeWeights, SharedExpertWeights, TensorSource } from "../weights.ts";

export const blk = (i: number, name: string) => `blk.${i}.${name}`;

/** token_embd, output_norm and output (falling back to token_embd when `tiedAllowed` and output is absent). */
export function loadEmbeddingsAndOutput(
  t: TensorSource,
  hp: ModelHParams,
  opts: { tiedAllowed: boolean; outputBias?: boolean },
): Pick<ModelWeights, "tokEmbd" | "outputNorm" | "output" | "outputBias" | "ropeFreqs"> {
  const tokEmbd = t.weight("token_embd.weight", hp.nEmbd, hp.nVocab);
  const outputNorm = t.vector("output_norm.weight", hp.nEmbd);
  const output = opts.tiedAllowed
    ? (t.weight("output.weight", hp.nEmbd, hp.nVocab, true) ?? tokEmbd)
    : t.weight("output.weight", hp.nEmbd, hp.nVocab);
  const outputBias = opts.outputBias ? t.vector("output.bias", hp.nVocab, true) : undefined;
  return { tokEmbd, outputNorm, output, outputBias };
}

/**
 * attn_norm, q/k/v (with optional biases), attn_output (optional bias when `outputBias`).
 * `qDim` is the width of the q projection (n_embd_head_k * n_head, or n_embd for some architectures).
 */
export function loadAttention(
  t: TensorSource,
  hp: ModelHParams,
  i: number,
  qDim: number,
  opts: { outputBias?: boolean } = {},
): Pick<LayerWeights, "attnNorm" | "wq" | "wk" | "wv" | "bq" | "bk" | "bv" | "wo" | "bo"> {
  const kDim = hp.nEmbdHeadK * hp.nHeadKv;
  const vDim = hp.nEmbdHeadV * hp.nHeadKv;
  return {
    attnNorm: t.vector(blk(i, "attn_norm.weight"), hp.nEmbd),
    wq: t.weight(blk(i, "attn_q.weight"), hp.nEmbd, qDim),
    wk: t.weight(blk(i, "attn_k.weight"), hp.nEmbd, kDim),
    wv: t.weight(blk(i, "attn_v.weight"), hp.nEmbd, vDim),
    bq: t.vector(blk(i, "attn_q.bias"), qDim, true),
    bk: t.vector(blk(i, "attn_k.bias"), kDim, true),
    bv: t.vector(blk(i, "attn_v.bias"), vDim, true),
    wo: t.weight(blk(i, "attn_output.weight"), qDim, hp.nEmbd),
    bo: opts.outputBias ? t.vector(blk(i, "attn_output.bias"), hp.nEmbd, true) : undefined,
  };
}

/** attn_q_norm / attn_k_norm of one head's width (per-head q/k RMSNorm); absent ones are undefined when `optional` */
export function loadHeadQkNorm(t: TensorSource, hp: ModelHParams, i: number): { qNorm: Float32Array; kNorm: Float32Array };
export function loadHeadQkNorm(t: TensorSource, hp: ModelHParams, i: number, opts: { optional: true }): Pick<LayerWeights, "qNorm" | "kNorm">;
export function loadHeadQkNorm(t: TensorSource, hp: ModelHParams, i: number, opts: { optional?: boolean } = {}): Pick<LayerWeights, "qNorm" | "kNorm"> {
  const optional = opts.optional ?? false;
  return {
    qNorm: t.vector(blk(i, "attn_q_norm.weight"), hp.nEmbdHeadK, optional),
    kNorm: t.vector(blk(i, "attn_k_norm.weight"), hp.nEmbdHeadK, optional),
  };
}

/** ffn_gate / ffn_up / ffn_down of width nFf */
export function loadDenseFfn(t: TensorSource, hp: ModelHParams, i: number): { ffn: DenseFfnWeights } {
  return {
    ffn: {
      gate: t.weight(blk(i, "ffn_gate.weight"), hp.nEmbd, hp.nFf),
      up: t.weight(blk(i, "ffn_up.weight"), hp.nEmbd, hp.nFf),
      down: t.weight(blk(i, "ffn_down.weight"), hp.nFf, hp.nEmbd),
    },
  };
}

/** ffn_gate_inp and the 3-D expert tensors ffn_{gate,up,down}_exps of width hp.nFfExp */
export function loadExperts(t: TensorSource, hp: ModelHParams, i: number): MoeWeights {
  const { nEmbd, nFfExp, nExpert } = hp;
  return {
    gateInp: t.weight(blk(i, "ffn_gate_inp.weight"), nEmbd, nExpert),
    gate: t.experts(blk(i, "ffn_gate_exps.weight"), nEmbd, nFfExp, nExpert),
    up: t.experts(blk(i, "ffn_up_exps.weight"), nEmbd, nFfExp, nExpert),
    down: t.experts(blk(i, "ffn_down_exps.weight"), nFfExp, nEmbd, nExpert),
  };
}

/** ffn_{gate,up,down}_shexp of width hp.nFfShexp, and the scalar gate ffn_gate_inp_shexp */
export function loadSharedExpert(t: TensorSource, hp: ModelHParams, i: number): SharedExpertWeights {
  const { nEmbd, nFfShexp } = hp;
  return {
    gateInp: t.weight(blk(i, "ffn_gate_inp_shexp.weight"), nEmbd, 1),
    gate: t.weight(blk(i, "ffn_gate_shexp.weight"), nEmbd, nFfShexp),
    up: t.weight(blk(i, "ffn_up_shexp.weight"), nEmbd, nFfShexp),
    down: t.weight(blk(i, "ffn_down_shexp.weight"), nFfShexp, nEmbd),
  };
}

/** n_embd_head must equal n_rot for these architectures (llama.cpp asserts it in every graph). */
export function requireFullRope(hp: ModelHParams): void {
  if (hp.nEmbdHeadK !== hp.nEmbdHeadV || hp.nRot !== hp.nEmbdHeadK)
    throw new TsmoeError(
      `${hp.arch}: key length ${hp.nEmbdHeadK}, value length ${hp.nEmbdHeadV} and rope dimensions ${hp.nRot} must be equal`,
    );
}
