/**
 * A model file's key facts as `tsmoe info` reports them: architecture, hyper-parameters (read with llama.cpp's
 * key names), tensor counts per type, parameter count and file size. Works on header-only loads.
 */
import { GgufError } from "../errors.ts";
import { typeName } from "../tensor/types.ts";
import { fileTypeName } from "./file-types.ts";
import { metaArray, metaFloat, metaInt, metaString } from "./meta.ts";
import { GgufValueType, type GgufFile } from "./types.ts";
import { q } from "./quote.ts";

export interface ModelSummary {
  file: string;
  architecture: string;
  name: string | null;
  file_type: string | null;
  gguf_version: number;
  n_layer: number;
  n_embd: number;
  n_vocab: number;
  n_ctx_train: number;
  n_head: number;
  n_head_kv: number;
  head_dim_k: number;
  head_dim_v: number;
  n_ff: number;
  /** routed experts (0 for dense models) and experts used per token */
  n_expert: number;
  n_expert_used: number;
  n_ff_exp: number;
  n_ff_shexp: number;
  rope_freq_base: number | null;
  rope_dims: number | null;
  rms_eps: number | null;
  n_tensors: number;
  /** ggml type name -> number of tensors */
  tensor_types: Record<string, number>;
  n_params: number;
  file_size: number;
}

/** An integer hyper-parameter that some models store per layer (an array): the largest value is reported. */
function intOrMax(file: GgufFile, key: string, fallback: number): number {
  const e = file.metadata.get(key);
  if (e?.type !== GgufValueType.ARRAY) return metaInt(file, key, fallback);
  const vals = metaArray(file, key)!.filter((v): v is number => typeof v === "number");
  if (vals.length === 0) throw new GgufError(file.path, `metadata ${q(key)} is an empty or non-numeric array`);
  return Math.max(...vals);
}

export function summarize(file: GgufFile): ModelSummary {
  const arch = metaString(file, "general.architecture");
  const a = (k: string): string => `${arch}.${k}`;
  const optFloat = (k: string): number | null => {
    if (!file.metadata.has(k)) return null;
    const v = metaFloat(file, k);
    return file.metadata.get(k)!.type === GgufValueType.FLOAT32 ? shortestF32(v) : v;
  };

  const tokens = metaArray(file, "tokenizer.ggml.tokens");
  const embd = file.tensors.get("token_embd.weight");
  const nVocab = metaInt(file, a("vocab_size"), tokens?.length ?? embd?.shape[1] ?? 0);

  const nEmbd = metaInt(file, a("embedding_length"), 0);
  const nHead = intOrMax(file, a("attention.head_count"), 0);
  const headDimDefault = nHead > 0 ? Math.floor(nEmbd / nHead) : 0;
  const nExpert = metaInt(file, a("expert_count"), 0);
  const nFf = intOrMax(file, a("feed_forward_length"), 0);

  const tensorTypes: Record<string, number> = {};
  let nParams = 0;
  for (const t of file.tensors.values()) {
    const n = typeName(t.type);
    tensorTypes[n] = (tensorTypes[n] ?? 0) + 1;
    nParams += t.nElements;
  }
  const ftype = file.metadata.has("general.file_type") ? metaInt(file, "general.file_type") : null;

  return {
    file: file.path,
    architecture: arch,
    name: file.metadata.has("general.name") ? metaString(file, "general.name") : null,
    file_type: ftype === null ? null : fileTypeName(ftype),
    gguf_version: file.version,
    n_layer: metaInt(file, a("block_count"), 0),
    n_embd: nEmbd,
    n_vocab: nVocab,
    n_ctx_train: metaInt(file, a("context_length"), 0),
    n_head: nHead,
    n_head_kv: intOrMax(file, a("attention.head_count_kv"), nHead),
    head_dim_k: metaInt(file, a("attention.key_length"), headDimDefault),
    head_dim_v: metaInt(file, a("attention.value_length"), headDimDefault),
    n_ff: nFf,
    n_expert: nExpert,
    n_expert_used: nExpert > 0 ? metaInt(file, a("expert_used_count"), 0) : 0,
    n_ff_exp: nExpert > 0 ? metaInt(file, a("expert_feed_forward_length"), nFf) : 0,
    n_ff_shexp: metaInt(file, a("expert_shared_feed_forward_length"), 0),
    rope_freq_base: optFloat(a("rope.freq_base")),
    rope_dims: file.metadata.has(a("rope.dimension_count")) ? metaInt(file, a("rope.dimension_count")) : null,
    rms_eps: optFloat(a("attention.layer_norm_rms_epsilon")),
    n_tensors: file.tensors.size,
    tensor_types: tensorTypes,
    n_params: nParams,
    file_size: file.fileSize,
  };
}

/** The shortest decimal that reads back as the same float32 (9.999999974752427e-7 -> 1e-6). */
export function shortestF32(x: number): number {
  for (let p = 1; p < 9; p++) {
    const y = Number(x.toPrecision(p));
    if (Math.fround(y) === Math.fround(x)) return y;
  }
  return x;
}

/** 1234567 -> "1.23 M" */
export function formatCount(n: number): string {
  const units = ["", " K", " M", " B", " T"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? String(n) : `${v.toPrecision(3)}${units[i]}`;
}

/** 5260736 -> "5.02 MiB" */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(2)} ${units[i]}`;
}

/** Human-readable report, a few aligned lines. */
/** The summary as aligned "key  value" lines, with `extra` rows at the end. */
export function formatSummary(s: ModelSummary, extra: [string, string][] = []): string {
  const types = Object.entries(s.tensor_types)
    .sort((x, y) => y[1] - x[1])
    .map(([t, n]) => `${t} ${n}`)
    .join(", ");
  const rows: [string, string][] = [
    ["file", `${s.file} (${formatBytes(s.file_size)}, GGUF v${s.gguf_version})`],
    ["architecture", s.architecture + (s.name ? ` (${s.name})` : "")],
    ["file type", s.file_type ?? "-"],
    ["layers", String(s.n_layer)],
    ["n_embd", String(s.n_embd)],
    ["vocabulary", String(s.n_vocab)],
    ["context (train)", String(s.n_ctx_train)],
    ["attention", `${s.n_head} heads, ${s.n_head_kv} kv heads, head dim ${s.head_dim_k}${s.head_dim_v !== s.head_dim_k ? `/${s.head_dim_v}` : ""}`],
    ["feed-forward", String(s.n_ff)],
    [
      "experts",
      s.n_expert > 0
        ? `${s.n_expert} (expert_count), ${s.n_expert_used} used per token (expert_used_count), expert ffn ${s.n_ff_exp}` +
          (s.n_ff_shexp > 0 ? `, shared expert ffn ${s.n_ff_shexp}` : "")
        : "none (dense)",
    ],
    ["rope", `base ${s.rope_freq_base ?? "-"}, ${s.rope_dims ?? "-"} dims`],
    ["rms eps", String(s.rms_eps ?? "-")],
    ["tensors", `${s.n_tensors} (${types})`],
    ["parameters", `${formatCount(s.n_params)} (${s.n_params})`],
    ...extra,
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join("\n");
}
