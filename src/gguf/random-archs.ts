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
}

/** How a tensor's values are drawn (fixtures/README.md "Common to all"). */
export type InitKind = "proj" | "norm" | "embd" | "router" | "bias";

export interface TensorSpec {
  name: string;
  /** ggml order, ne0 first */
  shape: number[];
  init: InitKind;
}

export interface ArchSpec {
  /** "none": dense only; "optional": dense when nExpert = 0 (llama); "required": always MoE */
  moe: "none" | "optional" | "required";
  defaults: Partial<ModelShape>;
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
    u("rope.dimension_count", s.headDim),
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

const blk = (i: number, name: string): string => `blk.${i}.${name}`;

/** attn_norm, q/k/v (+ biases, + q/k norms), attn_output */
function attention(i: number, s: ModelShape, opts: { bias?: boolean; qkNorm?: "head" | "full" } = {}): TensorSpec[] {
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
  return t;
}

function denseFfn(i: number, s: ModelShape): TensorSpec[] {
  return [
    { name: blk(i, "ffn_norm.weight"), shape: [s.nEmbd], init: "norm" },
    { name: blk(i, "ffn_gate.weight"), shape: [s.nEmbd, s.nFf], init: "proj" },
    { name: blk(i, "ffn_up.weight"), shape: [s.nEmbd, s.nFf], init: "proj" },
    { name: blk(i, "ffn_down.weight"), shape: [s.nFf, s.nEmbd], init: "proj" },
  ];
}

function moeFfn(i: number, s: ModelShape): TensorSpec[] {
  return [
    { name: blk(i, "ffn_norm.weight"), shape: [s.nEmbd], init: "norm" },
    { name: blk(i, "ffn_gate_inp.weight"), shape: [s.nEmbd, s.nExpert], init: "router" },
    { name: blk(i, "ffn_gate_exps.weight"), shape: [s.nEmbd, s.nFfExp, s.nExpert], init: "proj" },
    { name: blk(i, "ffn_up_exps.weight"), shape: [s.nEmbd, s.nFfExp, s.nExpert], init: "proj" },
    { name: blk(i, "ffn_down_exps.weight"), shape: [s.nFfExp, s.nEmbd, s.nExpert], init: "proj" },
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

const BASE: Partial<ModelShape> = { nLayer: 2, nEmbd: 256, nHead: 4, nHeadKv: 2, headDim: 64, nVocab: 512, nCtx: 256, ropeBase: 1e6, rmsEps: 1e-6 };

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
};
