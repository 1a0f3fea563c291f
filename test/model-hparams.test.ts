/**
 * Hyperparameters read from GGUF metadata the way llama.cpp reads them: defaults (head_count_kv,
 * key/value lengths, rope dimensions, rope base), rope scaling, per-layer arrays, --override-kv applied
 * before reading, and the architecture-specific keys (expert widths).
 */
import { describe, expect, it } from "vitest";
import { GgufValueType, type GgufFile, type MetaEntry } from "../src/gguf/types.ts";
import { ARCHS } from "../src/model/archs/index.ts";
import { applyKvOverrides, MetaReader, readCommonHParams } from "../src/model/hparams.ts";
import { ropeParams } from "../src/model/ops.ts";
import type { RoutedMoeHParams } from "../src/model/archs/routed-moe.ts";
import type { GptOssHParams } from "../src/model/archs/gpt-oss.ts";

const U32 = GgufValueType.UINT32;
const F32 = GgufValueType.FLOAT32;
const STR = GgufValueType.STRING;

function file(arch: string, entries: [string, GgufValueType, unknown][]): GgufFile {
  const metadata = new Map<string, MetaEntry>();
  metadata.set("general.architecture", { key: "general.architecture", type: STR, value: arch });
  for (const [k, type, value] of entries) {
    const key = k.startsWith("general.") ? k : `${arch}.${k}`;
    const e: MetaEntry = Array.isArray(value)
      ? { key, type: GgufValueType.ARRAY, arrayType: type, value: value as number[] }
      : { key, type, value: value as number };
    metadata.set(key, e);
  }
  return { path: "test.gguf", version: 3, alignment: 32, fileSize: 0, metadata, tensors: new Map() };
}

const BASE: [string, GgufValueType, unknown][] = [
  ["context_length", U32, 4096],
  ["embedding_length", U32, 512],
  ["block_count", U32, 3],
  ["feed_forward_length", U32, 1024],
  ["attention.head_count", U32, 8],
  ["attention.layer_norm_rms_epsilon", F32, 1e-5],
];

describe("common hyperparameters", () => {
  it("fills llama.cpp's defaults", () => {
    const hp = readCommonHParams(file("llama", BASE), "llama", "norm");
    expect(hp).toMatchObject({
      nLayer: 3,
      nEmbd: 512,
      nHead: 8,
      nHeadKv: 8,
      nEmbdHeadK: 64,
      nEmbdHeadV: 64,
      nRot: 64,
      nFf: 1024,
      nExpert: 0,
      nExpertUsed: 0,
      ropeBase: 10000,
      ropeScaling: "linear",
      ropeFreqScale: 1,
      nCtxTrain: 4096,
      nCtxOrigYarn: 4096,
    });
    expect(hp.rmsEps).toBeCloseTo(1e-5, 10);
  });

  it("reads explicit key/value lengths, KV heads and per-layer arrays", () => {
    const hp = readCommonHParams(
      file("qwen3moe", [
        ...BASE.filter(([k]) => k !== "attention.head_count"),
        ["attention.head_count", U32, [8, 8, 8]],
        ["attention.head_count_kv", U32, 2],
        ["attention.key_length", U32, 128],
        ["attention.value_length", U32, 128],
        ["rope.freq_base", F32, 1e6],
      ]),
      "qwen3moe",
      "neox",
    );
    expect(hp).toMatchObject({ nHead: 8, nHeadKv: 2, nEmbdHeadK: 128, nEmbdHeadV: 128, nRot: 128, ropeBase: 1e6, ropeType: "neox" });
    expect(() =>
      readCommonHParams(file("llama", [...BASE.filter(([k]) => k !== "attention.head_count"), ["attention.head_count", U32, [8, 4, 8]]]), "llama", "norm"),
    ).toThrow(/differ between layers/);
  });

  it("reads rope scaling: linear factor, none, yarn; refuses longrope", () => {
    const linear = readCommonHParams(file("llama", [...BASE, ["rope.scaling.type", STR, "linear"], ["rope.scaling.factor", F32, 4]]), "llama", "norm");
    expect(linear.ropeFreqScale).toBe(0.25);
    expect(ropeParams(linear).extFactor).toBe(0);
    const none = readCommonHParams(file("llama", [...BASE, ["rope.scaling.type", STR, "none"], ["rope.scaling.factor", F32, 4]]), "llama", "norm");
    expect(none.ropeFreqScale).toBe(1);
    const yarn = readCommonHParams(
      file("qwen3", [...BASE, ["rope.scaling.type", STR, "yarn"], ["rope.scaling.factor", F32, 4], ["rope.scaling.original_context_length", U32, 1024]]),
      "qwen3",
      "neox",
    );
    const p = ropeParams(yarn);
    expect(p.extFactor).toBe(1);
    expect(yarn.nCtxOrigYarn).toBe(1024);
    // mscale(4) / (1 + 0.1 ln 4): the ramp's magnitude correction cancels llama.cpp's
    expect(p.attnFactor).toBeCloseTo(1, 6);
    expect(p.corrDims[0]).toBeGreaterThanOrEqual(0);
    expect(p.corrDims[1]).toBeLessThanOrEqual(63);
    expect(() => readCommonHParams(file("llama", [...BASE, ["rope.scaling.type", STR, "longrope"]]), "llama", "norm")).toThrow(
      /rope scaling type 'longrope' is not supported/,
    );
  });

  it("applies --override-kv before reading", () => {
    const f = file("qwen3moe", [...BASE, ["expert_count", U32, 8], ["expert_used_count", U32, 4]]);
    const over = applyKvOverrides(f, [
      { key: "qwen3moe.expert_used_count", type: "int", value: 2 },
      { key: "qwen3moe.rope.freq_base", type: "float", value: 5e5 },
    ]);
    const hp = readCommonHParams(over, "qwen3moe", "neox");
    expect(hp.nExpertUsed).toBe(2);
    expect(hp.ropeBase).toBe(5e5);
    // the original file is untouched
    expect(readCommonHParams(f, "qwen3moe", "neox").nExpertUsed).toBe(4);
    expect(() => readCommonHParams(applyKvOverrides(f, [{ key: "qwen3moe.expert_used_count", type: "int", value: 9 }]), "qwen3moe", "neox")).toThrow(
      /expert_used_count 9 > expert_count 8/,
    );
  });
});

describe("architecture hyperparameters", () => {
  function archHp(arch: string, entries: [string, GgufValueType, unknown][]) {
    const f = file(arch, [...BASE, ...entries]);
    const common = readCommonHParams(f, arch, ARCHS.get(arch)!.ropeType);
    const before = structuredClone(common);
    const hp = ARCHS.get(arch)!.hparams(new MetaReader(f, arch), common);
    expect(common).toEqual(before); // a new record: the common one is never changed
    return hp;
  }

  it("expert widths: llama/olmoe use feed_forward_length, qwen MoE expert_feed_forward_length (else n_ff / k)", () => {
    const moe: [string, GgufValueType, unknown][] = [
      ["expert_count", U32, 8],
      ["expert_used_count", U32, 2],
    ];
    expect(archHp("llama", moe).nFfExp).toBe(1024);
    expect(archHp("olmoe", moe).nFfExp).toBe(1024);
    expect(archHp("qwen3moe", [...moe, ["expert_feed_forward_length", U32, 96]]).nFfExp).toBe(96);
    expect(archHp("qwen3moe", moe).nFfExp).toBe(512);
    const q2 = archHp("qwen2moe", [...moe, ["expert_feed_forward_length", U32, 64], ["expert_shared_feed_forward_length", U32, 256]]);
    expect([q2.nFfExp, q2.nFfShexp]).toEqual([64, 256]);
    expect(archHp("qwen2moe", moe).nFfShexp).toBe(1024);
    expect(() => archHp("qwen3moe", [])).toThrow(/expert_count must be > 0/);
  });

  it("typed records of their own: NextN layers dropped once (glm4moe), the sliding window (gpt-oss)", () => {
    const routed: [string, GgufValueType, unknown][] = [
      ["expert_count", U32, 8],
      ["expert_used_count", U32, 2],
      ["expert_feed_forward_length", U32, 64],
      ["expert_shared_count", U32, 1],
      ["nextn_predict_layers", U32, 1],
      ["leading_dense_block_count", U32, 1],
    ];
    const glm = archHp("glm4moe", routed) as RoutedMoeHParams;
    expect([glm.nLayer, glm.nLeadingDense, glm.nFfShexp, glm.gating, glm.normTopK]).toEqual([2, 1, 64, "sigmoid", false]);
    const oss = archHp("gpt-oss", [["expert_count", U32, 8], ["expert_used_count", U32, 2], ["expert_feed_forward_length", U32, 64], ["attention.sliding_window", U32, 128]]) as GptOssHParams;
    expect([oss.nSwa, oss.swaPeriod, oss.nFfExp]).toEqual([128, 2, 64]);
  });

  it("NORM RoPE for llama, NEOX for the Qwen family and OLMoE", () => {
    expect(ARCHS.get("llama")!.ropeType).toBe("norm");
    for (const a of ["qwen2", "qwen3", "qwen2moe", "qwen3moe", "olmoe"]) expect(ARCHS.get(a)!.ropeType).toBe("neox");
  });
});
