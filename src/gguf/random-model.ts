/**
 * Seeded random-weight GGUF models for tests and benchmarks, shaped like the shared fixtures: the metadata keys
 * and tensor names/shapes llama.cpp expects for each architecture (table in ./random-archs.ts), a synthetic
 * SentencePiece vocabulary, and weights drawn like fixtures/README.md "Common to all" (normal draws, given as
 * mean/std): projections 0/(1/sqrt(fan_in)), norms 1/0.1, embeddings and output 0/0.1, routers 0/0.1, biases
 * 0/0.05, attention sinks 0/1. 1-D tensors, biases and routers stay F32 (as llama-quantize leaves them); other
 * tensors take the requested type, falling back like llama-quantize when a row length is not a multiple of the
 * type's block size.
 */
import { TsmoeError } from "../errors.ts";
import { quantize } from "../tensor/quantize.ts";
import { GGMLType, typeName, typeTraits } from "../tensor/types.ts";
import { FILE_TYPE_OF_WEIGHT_TYPE } from "./file-types.ts";
import { ARCHS, type InitKind, type ModelShape, type TensorSpec } from "./random-archs.ts";
import { Rng } from "./rng.ts";
import { SIMPLE_CHAT_TEMPLATE, vocabMetadata } from "./synthetic-vocab.ts";
import { GgufValueType, type MetaEntry } from "./types.ts";
import { writeGguf, type TensorToWrite } from "./writer.ts";

export { ARCHS } from "./random-archs.ts";

export interface RandomModelOptions extends Partial<Omit<ModelShape, "extra">> {
  arch: string;
  /** architecture-specific knobs (see `extra` in ./random-archs.ts), e.g. { nLeadingDense: 2 } */
  extra?: Record<string, number>;
  seed?: number;
  /** type of the 2-D and 3-D weight tensors (default F32) */
  weightType?: GGMLType;
  /** general.name (default `tsmoe-random-<arch>`) */
  name?: string;
  /** write tokenizer.chat_template: true = a simple ChatML-like template, or the template text */
  chatTemplate?: boolean | string;
}

/** llama-quantize's fallback when ne0 is not a multiple of the block size (then F16 if still incompatible). */
const FALLBACK: Partial<Record<GGMLType, GGMLType>> = {
  [GGMLType.IQ4_XS]: GGMLType.IQ4_NL,
  [GGMLType.Q2_K]: GGMLType.Q4_0,
  [GGMLType.Q3_K]: GGMLType.Q4_0,
  [GGMLType.Q4_K]: GGMLType.Q5_0,
  [GGMLType.Q5_K]: GGMLType.Q5_1,
  [GGMLType.Q6_K]: GGMLType.Q8_0,
};

export function tensorTypeFor(spec: TensorSpec, weightType: GGMLType): GGMLType {
  if (spec.shape.length < 2 || spec.init === "router" || spec.init === "bias" || spec.init === "sink") return GGMLType.F32;
  const ne0 = spec.shape[0]!;
  if (ne0 % typeTraits(weightType)!.blockSize === 0) return weightType;
  const fb = FALLBACK[weightType];
  return fb !== undefined && ne0 % typeTraits(fb)!.blockSize === 0 ? fb : GGMLType.F16;
}

/** The full shape of a model of `opts.arch`: architecture defaults, then the caller's knobs; validated. */
export function resolveShape(opts: RandomModelOptions): ModelShape {
  const spec = ARCHS[opts.arch];
  if (!spec) throw new TsmoeError(`random model: unknown architecture '${opts.arch}' (known: ${Object.keys(ARCHS).join(", ")})`);
  const d = spec.defaults;
  type Knob = Exclude<keyof ModelShape, "extra" | "ropeDims">;
  const pick = <K extends Knob>(k: K, fallback: ModelShape[K]): ModelShape[K] => opts[k] ?? d[k] ?? fallback;
  const nExpert = spec.moe === "none" ? 0 : pick("nExpert", 0);
  const s: ModelShape = {
    nLayer: pick("nLayer", 2),
    nEmbd: pick("nEmbd", 256),
    nHead: pick("nHead", 4),
    nHeadKv: pick("nHeadKv", 4),
    headDim: pick("headDim", 64),
    nFf: pick("nFf", 256),
    nExpert,
    nExpertUsed: nExpert > 0 ? pick("nExpertUsed", Math.min(2, nExpert)) : 0,
    nFfExp: nExpert > 0 ? pick("nFfExp", 32) : 0,
    nFfShexp: nExpert > 0 ? pick("nFfShexp", 0) : 0,
    nVocab: pick("nVocab", 512),
    nCtx: pick("nCtx", 256),
    tiedOutput: spec.canTieOutput ? pick("tiedOutput", false) : false,
    ropeBase: pick("ropeBase", 10000),
    rmsEps: pick("rmsEps", 1e-6),
    ropeDims: 0,
    extra: { ...spec.extra },
  };
  for (const [k, v] of Object.entries(opts.extra ?? {})) {
    if (!(k in s.extra)) throw new TsmoeError(`random model: ${opts.arch} has no knob '${k}' (its knobs: ${Object.keys(s.extra).join(", ") || "none"})`);
    s.extra[k] = v;
  }
  s.ropeDims = opts.ropeDims ?? spec.ropeDims?.(s) ?? s.headDim;
  if (opts.tiedOutput && !spec.canTieOutput) throw new TsmoeError(`random model: ${opts.arch} needs a separate output.weight (tiedOutput not possible)`);
  const bad = (p: string): never => {
    throw new TsmoeError(`random model (${opts.arch}): ${p}`);
  };
  for (const k of ["nLayer", "nEmbd", "nHead", "nHeadKv", "headDim", "nVocab", "nCtx"] as const)
    if (!Number.isInteger(s[k]) || s[k] < 1) bad(`${k} must be a positive integer`);
  if (s.headDim % 2 !== 0 || s.ropeDims % 2 !== 0 || s.ropeDims > s.headDim) bad("headDim and ropeDims must be even, ropeDims <= headDim");
  if (s.nHead % s.nHeadKv !== 0) bad(`n_head ${s.nHead} is not a multiple of n_head_kv ${s.nHeadKv}`);
  if (spec.moe === "required" && s.nExpert < 1) bad("needs nExpert >= 1");
  if (s.nExpert > 0 && (s.nExpertUsed < 1 || s.nExpertUsed > s.nExpert)) bad(`nExpertUsed must be in 1..${s.nExpert}`);
  const problem = spec.check?.(s);
  if (problem) bad(problem);
  return s;
}

/** Every tensor of the model in file order (the fixtures' order). */
export function modelTensors(arch: string, s: ModelShape): TensorSpec[] {
  const spec = ARCHS[arch]!;
  const t: TensorSpec[] = [
    { name: "token_embd.weight", shape: [s.nEmbd, s.nVocab], init: "embd" },
    { name: "output_norm.weight", shape: [s.nEmbd], init: "norm" },
  ];
  if (!s.tiedOutput) t.push({ name: "output.weight", shape: [s.nEmbd, s.nVocab], init: "embd" });
  for (let i = 0; i < s.nLayer; i++) t.push(...spec.layer(i, s));
  return t;
}

/** Seeded values of one tensor (independent of the other tensors: its stream derives from its name). */
export function tensorValues(seed: number, spec: TensorSpec): Float32Array {
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const rng = Rng.derive(seed, spec.name);
  const [mean, std] = initStats(spec.init, spec.fanIn ?? spec.shape[0]!);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = mean + std * rng.normal();
  return out;
}

function initStats(kind: InitKind, fanIn: number): [number, number] {
  switch (kind) {
    case "proj":
      return [0, 1 / Math.sqrt(fanIn)];
    case "norm":
      return [1, 0.1];
    case "embd":
    case "router":
      return [0, 0.1];
    case "bias":
      return [0, 0.05];
    case "sink":
      return [0, 1];
  }
}

/** Encodes F32 values as `type` with the project's quantizer (F32/F16/BF16 conversions included). */
export function encodeTensor(type: GGMLType, values: Float32Array, rowLen: number): Uint8Array {
  if (type === GGMLType.F32) return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  return quantize(type, values, values.length / rowLen, rowLen);
}

/** The complete metadata of a generated model. */
export function modelMetadata(opts: RandomModelOptions, s: ModelShape): MetaEntry[] {
  const weightType = opts.weightType ?? GGMLType.F32;
  const fileType = FILE_TYPE_OF_WEIGHT_TYPE[weightType];
  if (fileType === undefined) throw new TsmoeError(`random model: weight type ${typeName(weightType)} is not supported by the generator`);
  const S = GgufValueType;
  const meta: MetaEntry[] = [
    { key: "general.architecture", type: S.STRING, value: opts.arch },
    { key: "general.name", type: S.STRING, value: opts.name ?? `tsmoe-random-${opts.arch}` },
    { key: "general.file_type", type: S.UINT32, value: fileType },
  ];
  if (weightType !== GGMLType.F32 && weightType !== GGMLType.F16 && weightType !== GGMLType.BF16)
    meta.push({ key: "general.quantization_version", type: S.UINT32, value: 2 });
  meta.push(...ARCHS[opts.arch]!.hparams(opts.arch, s));
  const template = opts.chatTemplate === true ? SIMPLE_CHAT_TEMPLATE : opts.chatTemplate || undefined;
  meta.push(...vocabMetadata(s.nVocab, template));
  return meta;
}

/** Generates a seeded random model of `opts.arch` and writes it to `path` as GGUF v3; returns `path`. */
export async function writeRandomModel(path: string, opts: RandomModelOptions): Promise<string> {
  const s = resolveShape(opts);
  const seed = opts.seed ?? 0;
  const weightType = opts.weightType ?? GGMLType.F32;
  const metadata = modelMetadata(opts, s);
  const tensors: TensorToWrite[] = [];
  for (const spec of modelTensors(opts.arch, s)) {
    const type = tensorTypeFor(spec, weightType);
    const data = encodeTensor(type, tensorValues(seed, spec), spec.shape[0]!);
    tensors.push({ name: spec.name, type, shape: spec.shape, data });
  }
  writeGguf(path, metadata, tensors);
  return path;
}
