/**
 * Model hyperparameters from GGUF metadata, read the way llama.cpp's `llama_model::load_hparams` reads them
 * (common keys here; each architecture reads its own extra keys in src/model/archs/<arch>.ts), after
 * `--override-kv` overrides have been applied to the metadata.
 */
import { TsmoeError } from "../errors.ts";
import { GgufValueType, type GgufFile, type MetaEntry } from "../gguf/types.ts";
import { metaArray, metaBool, metaFloat, metaInt, metaString } from "../gguf/meta.ts";
import type { HParams, KvOverride } from "./api.ts";

export type RopeType = "norm" | "neox";
export type RopeScaling = "none" | "linear" | "yarn";

/** Everything the forward pass needs beyond the public HParams. */
export interface ModelHParams extends HParams {
  /** rotary dimensions per head (rope.dimension_count, default the key length) */
  nRot: number;
  ropeType: RopeType;
  ropeScaling: RopeScaling;
  /** 1 / rope.scaling.factor (1 when absent or scaling type none) */
  ropeFreqScale: number;
  /** YaRN: original training context, correction betas */
  nCtxOrigYarn: number;
  yarnBetaFast: number;
  yarnBetaSlow: number;
  /** rope.scaling.attn_factor (1 when absent) */
  ropeAttnFactor: number;
  /** YaRN log multiplier (rope.scaling.yarn_log_multiplier) for the architectures that read it, else 0 */
  ropeYarnLogMul: number;
  /** shared-expert FFN width (0 if none) */
  nFfShexp: number;
  /** expert_weights_scale as llama.cpp reads it for the architecture (0 or 1 = no scaling) */
  expertWeightsScale: number;
  /** attention.scale for the architectures that read it (0 = 1/sqrt(head dim)) */
  attentionScale: number;
}

/** Typed reads of `<arch>.<name>` keys from (overridden) metadata. */
export class MetaReader {
  constructor(
    readonly file: GgufFile,
    readonly arch: string,
  ) {}
  key(name: string): string {
    return `${this.arch}.${name}`;
  }
  has(name: string): boolean {
    return this.file.metadata.has(this.key(name));
  }
  int(name: string, fallback?: number): number {
    return metaInt(this.file, this.key(name), fallback);
  }
  float(name: string, fallback?: number): number {
    return metaFloat(this.file, this.key(name), fallback);
  }
  bool(name: string, fallback?: boolean): boolean {
    return metaBool(this.file, this.key(name), fallback);
  }
  str(name: string, fallback?: string): string {
    return metaString(this.file, this.key(name), fallback);
  }
  /**
   * A per-layer integer that may be stored as one value or as an array of nLayer values (llama.cpp's
   * get_key_or_arr). This engine needs the same value on every layer.
   */
  intPerLayer(name: string, nLayer: number, fallback: number): number {
    const e = this.file.metadata.get(this.key(name));
    if (!e || e.type !== GgufValueType.ARRAY) return this.int(name, fallback);
    const arr = metaArray(this.file, this.key(name))!;
    if (arr.length !== nLayer)
      throw new TsmoeError(`${this.file.path}: metadata '${this.key(name)}' has ${arr.length} values for ${nLayer} layers`);
    const first = Number(arr[0]);
    if (arr.some((v) => Number(v) !== first))
      throw new TsmoeError(`${this.file.path}: per-layer values of '${this.key(name)}' differ between layers (not supported)`);
    return first;
  }
}

/** Returns a copy of `file` whose metadata has the --override-kv values applied (llama.cpp applies them on read). */
export function applyKvOverrides(file: GgufFile, overrides: KvOverride[] | undefined): GgufFile {
  if (!overrides || overrides.length === 0) return file;
  const metadata = new Map<string, MetaEntry>(file.metadata);
  for (const o of overrides) {
    const type =
      o.type === "int"
        ? GgufValueType.INT64
        : o.type === "float"
          ? GgufValueType.FLOAT64
          : o.type === "bool"
            ? GgufValueType.BOOL
            : GgufValueType.STRING;
    metadata.set(o.key, { key: o.key, type, value: o.value });
  }
  return { ...file, metadata };
}

/** rope scaling types this engine computes (longrope needs per-layer factor tensors: not supported) */
const ROPE_SCALING: Record<string, RopeScaling> = { none: "none", linear: "linear", yarn: "yarn" };

/**
 * The hyperparameters every architecture shares (llama_model::load_hparams plus the context-level rope
 * parameters of llama_context). `ropeType` comes from the architecture.
 */
export function readCommonHParams(file: GgufFile, arch: string, ropeType: RopeType): ModelHParams {
  const r = new MetaReader(file, arch);
  const nLayer = r.int("block_count");
  const nEmbd = r.int("embedding_length");
  const nHead = r.intPerLayer("attention.head_count", nLayer, 0);
  if (nHead <= 0) throw new TsmoeError(`${file.path}: '${r.key("attention.head_count")}' must be > 0`);
  const nHeadKv = r.intPerLayer("attention.head_count_kv", nLayer, nHead);
  const nEmbdHeadK = r.int("attention.key_length", Math.floor(nEmbd / nHead));
  const nEmbdHeadV = r.int("attention.value_length", Math.floor(nEmbd / nHead));
  const nRot = r.int("rope.dimension_count", nEmbdHeadK);
  const nExpert = r.int("expert_count", 0);
  const nExpertUsed = r.int("expert_used_count", 0);
  if (nExpertUsed > nExpert) throw new TsmoeError(`${file.path}: expert_used_count ${nExpertUsed} > expert_count ${nExpert}`);
  if (nExpert > 0 && nExpertUsed <= 0) throw new TsmoeError(`${file.path}: expert_used_count must be > 0 for a model with ${nExpert} experts`);

  const scalingName = r.str("rope.scaling.type", "linear");
  const ropeScaling = ROPE_SCALING[scalingName];
  if (!ropeScaling) throw new TsmoeError(`${file.path}: rope scaling type '${scalingName}' is not supported`);
  let ropeFactor = r.float("rope.scaling.factor", 0);
  if (ropeFactor === 0) ropeFactor = r.float("rope.scale_linear", 0);
  let ropeFreqScale = ropeFactor === 0 ? 1 : Math.fround(1 / ropeFactor);
  if (ropeScaling === "none") ropeFreqScale = 1;
  const nCtxTrain = r.int("context_length");

  return {
    arch,
    nLayer,
    nEmbd,
    nVocab: 0, // set by the loader from token_embd
    nCtxTrain,
    nHead,
    nHeadKv,
    nEmbdHeadK,
    nEmbdHeadV,
    nFf: r.intPerLayer("feed_forward_length", nLayer, 0),
    nExpert,
    nExpertUsed,
    nFfExp: 0, // set by the architecture
    rmsEps: r.float("attention.layer_norm_rms_epsilon"),
    ropeBase: r.float("rope.freq_base", 10000),
    nRot,
    ropeType,
    ropeScaling,
    ropeFreqScale,
    nCtxOrigYarn: r.int("rope.scaling.original_context_length", nCtxTrain) || nCtxTrain,
    yarnBetaFast: 32,
    yarnBetaSlow: 1,
    ropeAttnFactor: r.float("rope.scaling.attn_factor", 1),
    ropeYarnLogMul: 0,
    nFfShexp: 0,
    expertWeightsScale: 0,
    attentionScale: 0,
  };
}
