/**
 * Random-weight models at real sizes, fast: the architecture's tensors and metadata from ./random-model.ts,
 * each tensor's type from a llama-quantize-like mix, and the quantized tensors' data written as random blocks
 * (./random-blocks.ts) streamed to disk in 64 MB chunks. F32 tensors (norms, biases, routers) and types
 * without a direct block writer are drawn and encoded as in ./random-model.ts (fine for small tensors).
 * The random blocks are not seeded: two files made with the same options differ in their weights.
 */
import { renameSync } from "node:fs";
import { TsmoeError } from "../errors.ts";
import { GGMLType, typeName, typeTraits } from "../tensor/types.ts";
import { FILE_TYPE_OF_WEIGHT_TYPE } from "./file-types.ts";
import type { ModelShape, TensorSpec } from "./random-archs.ts";
import { hasRandomBlocks, randomBlocks } from "./random-blocks.ts";
import { encodeTensor, modelMetadata, modelTensors, resolveShape, tensorTypeFor, tensorValues, type RandomModelOptions } from "./random-model.ts";
import { GgufValueType } from "./types.ts";
import { writeGgufStreamed, type StreamedTensor } from "./writer.ts";

/** A file type: its general.file_type, the type most weights take, and the type of each tensor. */
interface QuantMix {
  fileType: number;
  base: GGMLType;
  /** the wanted type of a 2-D/3-D weight (falls back like llama-quantize when its rows do not fit the blocks) */
  pick: (spec: TensorSpec, s: ModelShape) => GGMLType;
}

/** llama-quantize's use_more_bits: the layers where Q4_K_M gives attn_v and ffn_down Q6_K */
export function useMoreBits(layer: number, nLayer: number): boolean {
  return layer < Math.trunc(nLayer / 8) || layer >= Math.trunc((7 * nLayer) / 8) || (layer - Math.trunc(nLayer / 8)) % 3 === 2;
}

/**
 * An approximation of llama-quantize's Q4_K_M (llama_tensor_get_type in llama.cpp's src/llama-quant.cpp):
 * output Q6_K; attn_v and ffn_down (experts included) Q6_K in the use_more_bits layers; with exactly 8
 * experts (Mixtral) attn_v and attn_k Q8_0 and attn_output Q5_K; everything else Q4_K. Not modelled: the
 * rules for other architectures (Falcon, 70B), and llama-quantize counting attn_v/ffn_down tensors rather
 * than reading the layer from the name for dense models.
 */
function q4km(spec: TensorSpec, s: ModelShape): GGMLType {
  if (spec.name === "output.weight") return GGMLType.Q6_K;
  const m = /^blk\.(\d+)\.(\w+)\.weight$/.exec(spec.name);
  if (!m) return GGMLType.Q4_K;
  const layer = Number(m[1]);
  const t = m[2]!;
  const eight = s.nExpert === 8;
  if (t === "attn_v") return eight ? GGMLType.Q8_0 : useMoreBits(layer, s.nLayer) ? GGMLType.Q6_K : GGMLType.Q4_K;
  if (t === "attn_k" && eight) return GGMLType.Q8_0;
  if (t === "attn_output" && eight) return GGMLType.Q5_K;
  if (t.startsWith("ffn_down") && useMoreBits(layer, s.nLayer)) return GGMLType.Q6_K;
  return GGMLType.Q4_K;
}

/** The file types the generator writes: llama.cpp's names. Any other name of a ggml type means "all weights that type". */
export const QUANT_MIXES: Record<string, QuantMix> = {
  Q8_0: { fileType: 7, base: GGMLType.Q8_0, pick: () => GGMLType.Q8_0 },
  Q4_K_M: { fileType: 15, base: GGMLType.Q4_K, pick: q4km },
  // llama-quantize's MXFP4_MOE: expert tensors MXFP4, every other weight Q8_0
  MXFP4_MOE: {
    fileType: 38,
    base: GGMLType.MXFP4,
    pick: (spec) => ((spec.shape[2] ?? 1) > 1 ? GGMLType.MXFP4 : GGMLType.Q8_0),
  },
};
QUANT_MIXES.MXFP4 = QUANT_MIXES.MXFP4_MOE!;

export interface BlockModelOptions extends RandomModelOptions {
  /** a key of QUANT_MIXES */
  mix: string;
}

/** The mix named `name`: a key of QUANT_MIXES, or a ggml type name (every weight that type, as far as its rows allow). */
export function quantMix(name: string): QuantMix {
  const mix = QUANT_MIXES[name];
  if (mix) return mix;
  const type = (GGMLType as unknown as Record<string, GGMLType | undefined>)[name];
  const fileType = type === undefined ? undefined : FILE_TYPE_OF_WEIGHT_TYPE[type];
  if (type === undefined || fileType === undefined)
    throw new TsmoeError(`make-model: unknown type '${name}' (known: ${[...new Set([...Object.keys(QUANT_MIXES), ...typesWithFileType()])].join(", ")})`);
  return { fileType, base: type, pick: () => type };
}

const typesWithFileType = (): string[] => Object.keys(FILE_TYPE_OF_WEIGHT_TYPE).map((t) => typeName(Number(t) as GGMLType));

/** Each tensor of the model with its type, in file order. */
export function blockModelTensors(opts: BlockModelOptions): { s: ModelShape; tensors: (TensorSpec & { type: GGMLType })[] } {
  const mix = quantMix(opts.mix);
  const s = resolveShape({ ...opts, weightType: mix.base });
  return { s, tensors: modelTensors(opts.arch, s).map((spec) => ({ ...spec, type: tensorTypeFor(spec, mix.pick(spec, s)) })) };
}

function tensorStd(spec: TensorSpec): number {
  return spec.init === "proj" ? 1 / Math.sqrt(spec.fanIn ?? spec.shape[0]!) : 0.1;
}

/**
 * Writes the model to `path` (through `path.part`, renamed when complete); returns the bytes of tensor data
 * written as random blocks and as encoded float draws.
 */
export function writeBlockModel(path: string, opts: BlockModelOptions): { blockBytes: number; encodedBytes: number } {
  const mix = quantMix(opts.mix);
  const { s, tensors } = blockModelTensors(opts);
  const seed = opts.seed ?? 0;
  const metadata = modelMetadata({ ...opts, weightType: mix.base }, s).map((e) =>
    e.key === "general.file_type" ? { ...e, type: GgufValueType.UINT32, value: mix.fileType } : e,
  );
  let blockBytes = 0;
  let encodedBytes = 0;
  const streamed: StreamedTensor[] = tensors.map((spec) => {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const traits = typeTraits(spec.type)!;
    const nBytes = (n / traits.blockSize) * traits.typeSize;
    const direct = hasRandomBlocks(spec.type);
    if (direct) blockBytes += nBytes;
    else encodedBytes += nBytes;
    const chunks = direct
      ? () => randomBlocks(spec.type, nBytes, tensorStd(spec))
      : () => [encodeTensor(spec.type, tensorValues(seed, spec), spec.shape[0]!)];
    return { name: spec.name, type: spec.type, shape: spec.shape, chunks };
  });
  writeGgufStreamed(path + ".part", metadata, streamed);
  renameSync(path + ".part", path);
  return { blockBytes, encodedBytes };
}

/** Bytes of tensor data of each type, for a summary line. */
export function typeCensus(tensors: (TensorSpec & { type: GGMLType })[]): string {
  const bytes = new Map<string, number>();
  for (const t of tensors) {
    const tr = typeTraits(t.type)!;
    const b = (t.shape.reduce((a, c) => a * c, 1) / tr.blockSize) * tr.typeSize;
    bytes.set(typeName(t.type), (bytes.get(typeName(t.type)) ?? 0) + b);
  }
  return [...bytes].map(([k, v]) => `${k} ${(v / 1e9).toFixed(2)} GB`).join(", ");
}
