/**
 * Architecture table of the random-model generator: per llama.cpp architecture, its default shape, which
 * hyper-parameter keys it writes and which tensors (names and ggml shapes exactly as llama.cpp's loader for
 * that architecture expects them, as in the shared fixtures' manifest). Adding an architecture = adding an entry.
 */
import { GgufValueType, type MetaEntry } from "./types.ts";

/** Resolved shape of a generated model. */
export interface ModelShape {
  nLayer: number;
  nEmbd: number;
  nHead: number;
  nHeadKv: number;
  headDim: number;
  /** dense FFN width */
  nFf: number;
  nExpert: number;
  nExpertUsed: number;
  /** routed expert FFN width */
  nFfExp: number;
  /** shared expert FFN width (0 = none) */
  nFfShexp: number;
  nVocab: number;
  nCtx: number;
  tiedOutput: boolean;
  ropeBase: number;
  rmsEps: number;
  /** rope.dimension_count (default: headDim, or the architecture's rule) */
  ropeDims: number;
  /** architecture-specific knobs, named and defaulted by the architecture's `extra` table */
  extra: Record<string, number>;
}

/** How a tensor's values are drawn (fixtures/README.md "Common to all"). */
export type InitKind = "proj" | "norm" | "embd" | "router" | "bias" | "sink";

export interface TensorSpec {
  name: string;
  /** ggml order, ne0 first */
  shape: number[];
  init: InitKind;
  /** fan-in of a projection when it is not ne0 (absorbed MLA attn_k_b) */
  fanIn?: number;
}

export interface ArchSpec {
  /** "none": dense only; "optional": dense when nExpert = 0 (llama); "required": always MoE */
  moe: "none" | "optional" | "required";
  defaults: Partial<Omit<ModelShape, "extra">>;
  /** architecture-specific knobs and their defaults */
  extra?: Record<string, number>;
  /** rope.dimension_count when not given (default: headDim) */
  ropeDims?: (s: Omit<ModelShape, "ropeDims">) => number;
  /** false when llama.cpp requires a separate output.weight */
  canTieOutput: boolean;
  /** checks architecture constraints on the shape; returns a problem or undefined */
  check?: (s: ModelShape) => string | undefined;
  /** the `<arch>.*` hyper-parameter entries (common ones included) */
  hparams: (arch: string, s: ModelShape) => MetaEntry[];
  /** per-layer tensors */
  layer: (i: number, s: ModelShape) => TensorSpec[];
}

const U32 = GgufValueType.UINT32;
const F32 = GgufValueType.FLOAT32;

function commonHparams(arch: string, s: ModelShape, nFfKey: number): MetaEntry[] {
  const u = (k: string, v: number): MetaEntry => ({ key: `${arch}.${k}`, type: U32, value: v });
  return [
    u("context_length", s.nCtx),
    u("embedding_length", s.nEmbd),
    u("block_count", s.nLayer),
    u("feed_forward_length", nFfKey),
    u("attention.head_count", s.nHead),
    u("attention.head_count_kv", s.nHeadKv),
    u("attention.key_length", s.headDim),
    u("attention.value_length", s.headDim),
    u("rope.dimension_count", s.ropeDims),
    { key: `${arch}.rope.freq_base`, type: F32, value: s.ropeBase },
    { key: `${arch}.attention.layer_norm_rms_epsilon`, type: F32, value: s.rmsEps },
  ];
}

function expertHparams(arch: string, s: ModelShape, opts: { expertFf?: boolean; sharedFf?: boolean } = {}): MetaEntry[] {
  const u = (k: string, v: number): MetaEntry => ({ key: `${arch}.${k}`, type: U32, value: v });
  const out = [u("expert_count", s.nExpert), u("expert_used_count", s.nExpertUsed)];
  if (opts.expertFf) out.push(u("expert_feed_forward_length", s.nFfExp));
  if (opts.sharedFf) out.push(u("expert_shared_feed_forward_length", s.nFfShexp));
  return out;
}

/**
 * GLM-4.5 / DeepSeek-V3 routing keys: leading dense layers, shared experts, sigmoid gate, weight norm + scale
 * (the key order of each converter: DeepSeek writes leading_dense_block_count first).
 */
function sigmoidRouterHparams(arch: string, s: ModelShape, leadingFirst: boolean): MetaEntry[] {
  const u = (k: string, v: number): MetaEntry => ({ key: `${arch}.${k}`, type: U32, value: v });
  const leading = u("leading_dense_block_count", s.extra.nLeadingDense!);
  return [
    ...(leadingFirst ? [leading] : []),
    u("expert_count", s.nExpert),
    u("expert_used_count", s.nExpertUsed),
    u("expert_feed_forward_length", s.nFfExp),
    ...(leadingFirst ? [] : [leading]),
    u("expert_shared_count", s.extra.nExpertShared!),
    { key: `${arch}.expert_weights_scale`, type: F32, value: s.extra.expertWeightsScale! },
    { key: `${arch}.expert_weights_norm`, type: GgufValueType.BOOL, value: true },
    u("expert_gating_func", 2), // sigmoid
  ];
}

const blk = (i: number, name: string): string => `blk.${i}.${name}`;

/** attn_norm, q/k/v (+ biases, + q/k norms), attn_output (+ bias, + sinks) */
function attention(
  i: number,
  s: ModelShape,
  opts: { bias?: boolean; qkNorm?: "head" | "full"; outBias?: boolean; sinks?: boolean } = {},
): TensorSpec[] {
  const q = s.nHead * s.headDim;
  const kv = s.nHeadKv * s.headDim;
  const t: TensorSpec[] = [
    { name: blk(i, "attn_norm.weight"), shape: [s.nEmbd], init: "norm" },
    { name: blk(i, "attn_q.weight"), shape: [s.nEmbd, q], init: "proj" },
    { name: blk(i, "attn_k.weight"), shape: [s.nEmbd, kv], init: "proj" },
    { name: blk(i, "attn_v.weight"), shape: [s.nEmbd, kv], init: "proj" },
  ];
  if (opts.bias)
    t.push(
      { name: blk(i, "attn_q.bias"), shape: [q], init: "bias" },
      { name: blk(i, "attn_k.bias"), shape: [kv], init: "bias" },
      { name: blk(i, "attn_v.bias"), shape: [kv], init: "bias" },
    );
  if (opts.qkNorm) {
    const n = opts.qkNorm === "head" ? s.headDim : s.nEmbd;
    t.push({ name: blk(i, "attn_q_norm.weight"), shape: [n], init: "norm" }, { name: blk(i, "attn_k_norm.weight"), shape: [n], init: "norm" });
  }
  t.push({ name: blk(i, "attn_output.weight"), shape: [q, s.nEmbd], init: "proj" });
  if (opts.outBias) t.push({ name: blk(i, "attn_output.bias"), shape: [s.nEmbd], init: "bias" });
  if (opts.sinks) t.push({ name: blk(i, "attn_sinks.weight"), shape: [s.nHead], init: "sink" });
  return t;
}

/** DeepSeek-V3 multi-head latent attention with q LoRA, absorbed form (attn_k_b / attn_v_b) */
function mlaAttention(i: number, s: ModelShape): TensorSpec[] {
  const { qLoraRank: ql, kvLoraRank: kvl, qkNopeDim: nope, vHeadDim: vd } = s.extra as Record<string, number>;
  const rope = s.ropeDims;
  return [
    { name: blk(i, "attn_norm.weight"), shape: [s.nEmbd], init: "norm" },
    { name: blk(i, "attn_q_a_norm.weight"), shape: [ql!], init: "norm" },
    { name: blk(i, "attn_kv_a_norm.weight"), shape: [kvl!], init: "norm" },
    { name: blk(i, "attn_q_a.weight"), shape: [s.nEmbd, ql!], init: "proj" },
    { name: blk(i, "attn_q_b.weight"), shape: [ql!, s.nHead * (nope! + rope)], init: "proj" },
    { name: blk(i, "attn_kv_a_mqa.weight"), shape: [s.nEmbd, kvl! + rope], init: "proj" },
    { name: blk(i, "attn_k_b.weight"), shape: [nope!, kvl!, s.nHead], init: "proj", fanIn: kvl! },
    { name: blk(i, "attn_v_b.weight"), shape: [kvl!, vd!, s.nHead], init: "proj" },
    { name: blk(i, "attn_output.weight"), shape: [s.nHead * vd!, s.nEmbd], init: "proj" },
  ];
}

/** the pre-FFN norm: ffn_norm, or post_attention_norm in GLM-4.5 / gpt-oss */
function ffnNorm(i: number, s: ModelShape, name = "ffn_norm"): TensorSpec[] {
  return [{ name: blk(i, `${name}.weight`), shape: [s.nEmbd], init: "norm" }];
}

function denseFfn(i: number, s: ModelShape, norm = true): TensorSpec[] {
  return [
    ...(norm ? ffnNorm(i, s) : []),
    { name: blk(i, "ffn_gate.weight"), shape: [s.nEmbd, s.nFf], init: "proj" },
    { name: blk(i, "ffn_up.weight"), shape: [s.nEmbd, s.nFf], init: "proj" },
    { name: blk(i, "ffn_down.weight"), shape: [s.nFf, s.nEmbd], init: "proj" },
  ];
}

function moeFfn(i: number, s: ModelShape, norm = true): TensorSpec[] {
  return [
    ...(norm ? ffnNorm(i, s) : []),
    { name: blk(i, "ffn_gate_inp.weight"), shape: [s.nEmbd, s.nExpert], init: "router" },
    { name: blk(i, "ffn_gate_exps.weight"), shape: [s.nEmbd, s.nFfExp, s.nExpert], init: "proj" },
    { name: blk(i, "ffn_up_exps.weight"), shape: [s.nEmbd, s.nFfExp, s.nExpert], init: "proj" },
    { name: blk(i, "ffn_down_exps.weight"), shape: [s.nFfExp, s.nEmbd, s.nExpert], init: "proj" },
  ];
}

/** gpt-oss: router bias and per-expert biases after each expert tensor */
function biasedMoeFfn(i: number, s: ModelShape): TensorSpec[] {
  const w = (n: string, shape: number[], init: InitKind): TensorSpec => ({ name: blk(i, n), shape, init });
  return [
    w("ffn_gate_inp.weight", [s.nEmbd, s.nExpert], "router"),
    w("ffn_gate_inp.bias", [s.nExpert], "bias"),
    w("ffn_gate_exps.weight", [s.nEmbd, s.nFfExp, s.nExpert], "proj"),
    w("ffn_gate_exps.bias", [s.nFfExp, s.nExpert], "bias"),
    w("ffn_up_exps.weight", [s.nEmbd, s.nFfExp, s.nExpert], "proj"),
    w("ffn_up_exps.bias", [s.nFfExp, s.nExpert], "bias"),
    w("ffn_down_exps.weight", [s.nFfExp, s.nEmbd, s.nExpert], "proj"),
    w("ffn_down_exps.bias", [s.nEmbd, s.nExpert], "bias"),
  ];
}

/** GLM-4.5 / DeepSeek-V3 MoE layer: routed experts, selection bias, nExpertShared shared experts of width nFfExp */
function sigmoidMoeFfn(i: number, s: ModelShape, norm: boolean): TensorSpec[] {
  const shexp = s.nFfExp * s.extra.nExpertShared!;
  return [
    ...moeFfn(i, s, norm),
    { name: blk(i, "exp_probs_b.bias"), shape: [s.nExpert], init: "bias" },
    { name: blk(i, "ffn_gate_shexp.weight"), shape: [s.nEmbd, shexp], init: "proj" },
    { name: blk(i, "ffn_up_shexp.weight"), shape: [s.nEmbd, shexp], init: "proj" },
    { name: blk(i, "ffn_down_shexp.weight"), shape: [shexp, s.nEmbd], init: "proj" },
  ];
}

/** qwen2moe's sigmoid-gated shared expert */
function sharedExpert(i: number, s: ModelShape): TensorSpec[] {
  return [
    { name: blk(i, "ffn_gate_inp_shexp.weight"), shape: [s.nEmbd], init: "router" },
    { name: blk(i, "ffn_gate_shexp.weight"), shape: [s.nEmbd, s.nFfShexp], init: "proj" },
    { name: blk(i, "ffn_up_shexp.weight"), shape: [s.nEmbd, s.nFfShexp], init: "proj" },
    { name: blk(i, "ffn_down_shexp.weight"), shape: [s.nFfShexp, s.nEmbd], init: "proj" },
  ];
}

/** q and o projections are n_embd x n_embd in these architectures' loaders */
const squareAttention = (s: ModelShape): string | undefined =>
  s.nHead * s.headDim === s.nEmbd ? undefined : `needs n_head * head_dim == n_embd (${s.nHead} * ${s.headDim} != ${s.nEmbd})`;

const BASE: Partial<Omit<ModelShape, "extra">> = { nLayer: 2, nEmbd: 256, nHead: 4, nHeadKv: 2, headDim: 64, nVocab: 512, nCtx: 256, ropeBase: 1e6, rmsEps: 1e-6 };

export const ARCHS: Record<string, ArchSpec> = {
  llama: {
    moe: "optional",
    defaults: { ...BASE, nFf: 512, nFfExp: 32, ropeBase: 500000, rmsEps: 1e-5, tiedOutput: true },
    canTieOutput: true,
    // Mixtral style: the expert width is llama.feed_forward_length
    hparams: (a, s) => [...commonHparams(a, s, s.nExpert > 0 ? s.nFfExp : s.nFf), ...(s.nExpert > 0 ? expertHparams(a, s) : [])],
    layer: (i, s) => [...attention(i, s), ...(s.nExpert > 0 ? moeFfn(i, s) : denseFfn(i, s))],
  },
  qwen2: {
    moe: "none",
    defaults: { ...BASE, nFf: 256, tiedOutput: true },
    canTieOutput: true,
    check: squareAttention,
    hparams: (a, s) => commonHparams(a, s, s.nFf),
    layer: (i, s) => [...attention(i, s, { bias: true }), ...denseFfn(i, s)],
  },
  qwen3: {
    moe: "none",
    defaults: { ...BASE, nFf: 256, tiedOutput: true },
    canTieOutput: true,
    hparams: (a, s) => commonHparams(a, s, s.nFf),
    layer: (i, s) => [...attention(i, s, { qkNorm: "head" }), ...denseFfn(i, s)],
  },
  qwen2moe: {
    moe: "required",
    defaults: { ...BASE, nExpert: 8, nExpertUsed: 4, nFfExp: 32, nFfShexp: 128, tiedOutput: false },
    canTieOutput: false,
    check: (s) => squareAttention(s) ?? (s.nFfShexp > 0 ? undefined : "needs a shared expert (n_ff_shexp > 0)"),
    hparams: (a, s) => [...commonHparams(a, s, s.nFfShexp), ...expertHparams(a, s, { expertFf: true, sharedFf: true })],
    layer: (i, s) => [...attention(i, s, { bias: true }), ...moeFfn(i, s), ...sharedExpert(i, s)],
  },
  qwen3moe: {
    moe: "required",
    defaults: { ...BASE, nHead: 8, nFf: 512, nExpert: 8, nExpertUsed: 4, nFfExp: 32, tiedOutput: false },
    canTieOutput: true,
    // qwen3moe.feed_forward_length is written but unused by llama.cpp (expert width is expert_feed_forward_length)
    hparams: (a, s) => [...commonHparams(a, s, s.nFf), ...expertHparams(a, s, { expertFf: true })],
    layer: (i, s) => [...attention(i, s, { qkNorm: "head" }), ...moeFfn(i, s)],
  },
  olmoe: {
    moe: "required",
    defaults: { ...BASE, nHeadKv: 4, nExpert: 8, nExpertUsed: 4, nFfExp: 32, ropeBase: 10000, rmsEps: 1e-5, tiedOutput: false },
    canTieOutput: false,
    check: (s) => squareAttention(s) ?? (s.nHeadKv === s.nHead ? undefined : "needs n_head_kv == n_head (q/k norms span n_embd)"),
    // the expert width is olmoe.feed_forward_length
    hparams: (a, s) => [...commonHparams(a, s, s.nFfExp), ...expertHparams(a, s)],
    layer: (i, s) => [...attention(i, s, { qkNorm: "full" }), ...moeFfn(i, s)],
  },
  glm4moe: {
    moe: "required",
    defaults: { ...BASE, nFf: 256, nExpert: 8, nExpertUsed: 4, nFfExp: 32, rmsEps: 1e-5, tiedOutput: true },
    extra: { nLeadingDense: 1, nExpertShared: 1, expertWeightsScale: 2.5 },
    ropeDims: (s) => s.headDim / 2, // partial RoPE
    canTieOutput: true,
    check: (s) => (s.extra.nLeadingDense! < s.nLayer ? undefined : "needs nLeadingDense < nLayer"),
    hparams: (a, s) => [...commonHparams(a, s, s.nFf), ...sigmoidRouterHparams(a, s, false)],
    layer: (i, s) => [
      ...attention(i, s, { bias: true, qkNorm: "head" }),
      ...ffnNorm(i, s, "post_attention_norm"),
      ...(i < s.extra.nLeadingDense! ? denseFfn(i, s, false) : sigmoidMoeFfn(i, s, false)),
    ],
  },
  deepseek2: {
    moe: "required",
    defaults: { ...BASE, nHeadKv: 1, nFf: 256, nExpert: 8, nExpertUsed: 4, nFfExp: 32, ropeBase: 10000, tiedOutput: true },
    extra: {
      nLeadingDense: 1, nExpertShared: 1, expertWeightsScale: 2.5, nExpertGroups: 4, nGroupUsed: 3,
      qLoraRank: 128, kvLoraRank: 128, qkNopeDim: 64, vHeadDim: 64,
    },
    ropeDims: () => 32, // qk_rope_head_dim
    canTieOutput: true,
    check: (s) => {
      const x = s.extra;
      if (s.nHeadKv !== 1) return "absorbed MLA needs nHeadKv = 1";
      if (x.nLeadingDense! >= s.nLayer) return "needs nLeadingDense < nLayer";
      if (s.nExpert % x.nExpertGroups! !== 0 || x.nGroupUsed! > x.nExpertGroups!) return "needs nExpertGroups dividing nExpert and nGroupUsed <= nExpertGroups";
      return undefined;
    },
    // absorbed MLA: one KV head whose key is the latent + rope part and whose value is the latent
    hparams: (a, s) => {
      const x = s.extra as Record<string, number>;
      const u = (k: string, v: number): MetaEntry => ({ key: `${a}.${k}`, type: U32, value: v });
      return [
        u("context_length", s.nCtx),
        u("embedding_length", s.nEmbd),
        u("block_count", s.nLayer),
        u("feed_forward_length", s.nFf),
        u("attention.head_count", s.nHead),
        u("attention.head_count_kv", 1),
        u("attention.key_length", x.kvLoraRank! + s.ropeDims),
        u("attention.value_length", x.kvLoraRank!),
        u("attention.key_length_mla", x.qkNopeDim! + s.ropeDims),
        u("attention.value_length_mla", x.vHeadDim!),
        u("rope.dimension_count", s.ropeDims),
        { key: `${a}.rope.freq_base`, type: F32, value: s.ropeBase },
        { key: `${a}.attention.layer_norm_rms_epsilon`, type: F32, value: s.rmsEps },
        u("attention.q_lora_rank", x.qLoraRank!),
        u("attention.kv_lora_rank", x.kvLoraRank!),
        u("vocab_size", s.nVocab),
        ...sigmoidRouterHparams(a, s, true),
        u("expert_group_count", x.nExpertGroups!),
        u("expert_group_used_count", x.nGroupUsed!),
      ];
    },
    layer: (i, s) => [
      ...mlaAttention(i, s),
      ...(i < s.extra.nLeadingDense! ? denseFfn(i, s) : sigmoidMoeFfn(i, s, true)),
    ],
  },
  "gpt-oss": {
    moe: "required",
    defaults: { ...BASE, nExpert: 8, nExpertUsed: 4, nFfExp: 32, ropeBase: 150000, rmsEps: 1e-5, tiedOutput: false },
    extra: { slidingWindow: 8, yarnFactor: 32, yarnOrigCtx: 4096 },
    canTieOutput: false,
    check: (s) => (s.ropeDims === s.headDim ? undefined : "needs ropeDims == headDim"),
    hparams: (a, s) => [
      ...commonHparams(a, s, s.nFfExp),
      ...expertHparams(a, s, { expertFf: true }),
      { key: `${a}.attention.sliding_window`, type: U32, value: s.extra.slidingWindow! },
      { key: `${a}.rope.scaling.type`, type: GgufValueType.STRING, value: "yarn" },
      { key: `${a}.rope.scaling.factor`, type: F32, value: s.extra.yarnFactor! },
      { key: `${a}.rope.scaling.original_context_length`, type: U32, value: s.extra.yarnOrigCtx! },
      { key: `${a}.rope.scaling.yarn_beta_fast`, type: F32, value: 32 },
      { key: `${a}.rope.scaling.yarn_beta_slow`, type: F32, value: 1 },
    ],
    layer: (i, s) => [
      ...attention(i, s, { bias: true, outBias: true, sinks: true }),
      ...ffnNorm(i, s, "post_attention_norm"),
      ...biasedMoeFfn(i, s),
    ],
  },
  // Qwen3-VL-MoE's language model: qwen3moe layers, interleaved multi-section RoPE (Qwen3-VL's 24/20/20 split of 64 pairs, scaled)
  qwen3vlmoe: {
    moe: "required",
    defaults: { ...BASE, nHead: 8, nFf: 512, nExpert: 8, nExpertUsed: 4, nFfExp: 32, tiedOutput: false },
    canTieOutput: true,
    hparams: (a, s) => {
      const half = s.ropeDims / 2;
      const hw = Math.floor((half * 5) / 16);
      return [
        ...commonHparams(a, s, s.nFf),
        ...expertHparams(a, s, { expertFf: true }),
        { key: `${a}.rope.dimension_sections`, type: GgufValueType.ARRAY, arrayType: GgufValueType.INT32, value: [half - 2 * hw, hw, hw, 0] },
      ];
    },
    layer: (i, s) => [...attention(i, s, { qkNorm: "head" }), ...moeFfn(i, s)],
  },
  // IBM Granite MoE (optionally with a shared expert): expert width = feed_forward_length; Granite 3.0 1B-A400M's multipliers
  granitemoe: {
    moe: "required",
    defaults: { ...BASE, nExpert: 8, nExpertUsed: 4, nFfExp: 32, nFfShexp: 0, ropeBase: 10000, tiedOutput: true },
    extra: { embeddingScale: 12, residualScale: 0.22, attentionScale: 0.015625, logitScale: 6 },
    canTieOutput: true,
    hparams: (a, s) => [
      ...commonHparams(a, s, s.nFfExp),
      ...expertHparams(a, s, { sharedFf: s.nFfShexp > 0 }),
      { key: `${a}.embedding_scale`, type: F32, value: s.extra.embeddingScale! },
      { key: `${a}.residual_scale`, type: F32, value: s.extra.residualScale! },
      { key: `${a}.attention.scale`, type: F32, value: s.extra.attentionScale! },
      { key: `${a}.logit_scale`, type: F32, value: s.extra.logitScale! },
    ],
    layer: (i, s) => [
      ...attention(i, s),
      ...moeFfn(i, s),
      ...(s.nFfShexp > 0
        ? [
            { name: blk(i, "ffn_gate_shexp.weight"), shape: [s.nEmbd, s.nFfShexp], init: "proj" as const },
            { name: blk(i, "ffn_up_shexp.weight"), shape: [s.nEmbd, s.nFfShexp], init: "proj" as const },
            { name: blk(i, "ffn_down_shexp.weight"), shape: [s.nFfShexp, s.nEmbd], init: "proj" as const },
          ]
        : []),
    ],
  },
};
