/**
 * The random-model generator: determinism, fixture parity (same metadata keys and values, same tensor names and
 * shapes as the shared fixtures for the same shape), weight statistics, per-tensor types, vocabulary, bad options.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { TsmoeError } from "../src/errors.ts";
import { loadGguf } from "../src/gguf/reader.ts";
import { ARCHS, writeRandomModel, type RandomModelOptions } from "../src/gguf/random-model.ts";
import { TOKEN_TYPE } from "../src/gguf/synthetic-vocab.ts";
import type { GgufFile } from "../src/gguf/types.ts";
import { GGMLType, typeName } from "../src/tensor/types.ts";
import { FIXTURES, HAVE_SHARED, SHARED_SKIP_MESSAGE } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "tsmoe-random-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const gen = async (opts: RandomModelOptions): Promise<GgufFile> => loadGguf(await writeRandomModel(join(dir, `${n++}.gguf`), opts));

function f32(f: GgufFile, name: string): Float32Array {
  const t = f.tensors.get(name)!;
  expect(t.type).toBe(GGMLType.F32);
  return new Float32Array(t.data.buffer, t.data.byteOffset, t.nElements);
}
function meanStd(x: Float32Array): [number, number] {
  let s = 0;
  for (const v of x) s += v;
  const m = s / x.length;
  let v2 = 0;
  for (const v of x) v2 += (v - m) ** 2;
  return [m, Math.sqrt(v2 / x.length)];
}

describe("random models", () => {
  it("are deterministic in the seed", async () => {
    const a = await writeRandomModel(join(dir, "a.gguf"), { arch: "qwen3moe", seed: 42 });
    const b = await writeRandomModel(join(dir, "b.gguf"), { arch: "qwen3moe", seed: 42 });
    const c = await writeRandomModel(join(dir, "c.gguf"), { arch: "qwen3moe", seed: 43 });
    expect(readFileSync(a).equals(readFileSync(b))).toBe(true);
    const fa = await loadGguf(a);
    const fc = await loadGguf(c);
    expect(fc.fileSize).toBe(fa.fileSize);
    for (const [name, t] of fa.tensors) expect(Buffer.from(t.data).equals(Buffer.from(fc.tensors.get(name)!.data)), name).toBe(false);
  });

  it("draw weights with the fixtures' statistics", async () => {
    const f = await gen({ arch: "qwen2moe", seed: 5 });
    const close = (x: Float32Array, mean: number, std: number): void => {
      const [m, s] = meanStd(x);
      // 4 standard errors of the sample mean and of the sample standard deviation
      expect(Math.abs(m - mean)).toBeLessThan((4 * std) / Math.sqrt(x.length));
      expect(Math.abs(s / std - 1)).toBeLessThan(4 / Math.sqrt(2 * x.length));
    };
    close(f32(f, "token_embd.weight"), 0, 0.1);
    close(f32(f, "output.weight"), 0, 0.1);
    close(f32(f, "blk.0.attn_q.weight"), 0, 1 / 16);
    close(f32(f, "blk.1.ffn_down_exps.weight"), 0, 1 / Math.sqrt(32));
    close(f32(f, "blk.0.ffn_down_shexp.weight"), 0, 1 / Math.sqrt(128));
    close(f32(f, "blk.0.attn_norm.weight"), 1, 0.1);
    close(f32(f, "blk.1.ffn_gate_inp.weight"), 0, 0.1);
    close(f32(f, "blk.0.attn_q.bias"), 0, 0.05);
  });

  it("keep 1-D tensors and routers F32 and fall back like llama-quantize for short rows", async () => {
    const f = await gen({ arch: "qwen3moe", seed: 1, weightType: GGMLType.Q4_K, nFfExp: 32 });
    const types = Object.fromEntries([...f.tensors.values()].map((t) => [t.name, typeName(t.type)]));
    expect(types["token_embd.weight"]).toBe("Q4_K");
    expect(types["blk.0.attn_output.weight"]).toBe("Q4_K");
    expect(types["blk.0.ffn_gate_exps.weight"]).toBe("Q4_K");
    expect(types["blk.0.ffn_down_exps.weight"]).toBe("Q5_0"); // ne0 = 32
    expect(types["blk.0.ffn_gate_inp.weight"]).toBe("F32");
    expect(types["blk.0.attn_q_norm.weight"]).toBe("F32");
    expect(f.metadata.get("general.file_type")?.value).toBe(14);
    expect(f.metadata.get("general.quantization_version")?.value).toBe(2);
    const g = await gen({ arch: "qwen3moe", seed: 1, weightType: GGMLType.Q8_0, nFfExp: 16 });
    expect(typeName(g.tensors.get("blk.0.ffn_down_exps.weight")!.type)).toBe("F16"); // no Q8_0 fallback for ne0 = 16
    expect(g.metadata.get("general.file_type")?.value).toBe(7);
  });

  it("carry a SentencePiece-style vocabulary and optionally a chat template", async () => {
    const f = await gen({ arch: "qwen3", seed: 1, nVocab: 1000, chatTemplate: true });
    const tokens = f.metadata.get("tokenizer.ggml.tokens")!.value as string[];
    const types = f.metadata.get("tokenizer.ggml.token_type")!.value as number[];
    const scores = f.metadata.get("tokenizer.ggml.scores")!.value as number[];
    expect(tokens.length).toBe(1000);
    expect(new Set(tokens).size).toBe(1000);
    expect(tokens.slice(0, 4)).toEqual(["<unk>", "<s>", "</s>", "<0x00>"]);
    expect(tokens[258]).toBe("<0xFF>");
    expect(types.slice(0, 3)).toEqual([TOKEN_TYPE.UNKNOWN, TOKEN_TYPE.CONTROL, TOKEN_TYPE.CONTROL]);
    expect(types.slice(3, 259).every((t) => t === TOKEN_TYPE.BYTE)).toBe(true);
    expect(types.slice(259).every((t) => t === TOKEN_TYPE.NORMAL)).toBe(true);
    for (let i = 260; i < 1000; i++) expect(scores[i]).toBeLessThan(scores[i - 1]!);
    expect(tokens).toContain("\u2581t");
    expect(f.metadata.get("tokenizer.chat_template")?.value).toMatch(/add_generation_prompt/);
    expect(f.tensors.get("token_embd.weight")!.shape).toEqual([256, 1000]);
  });

  it("reject impossible shapes with a one-line error", async () => {
    const bad: [RandomModelOptions, RegExp][] = [
      [{ arch: "gpt-9" }, /unknown architecture 'gpt-9'/],
      [{ arch: "olmoe", nHeadKv: 2 }, /n_head_kv == n_head/],
      [{ arch: "qwen2moe", tiedOutput: true }, /separate output.weight/],
      [{ arch: "qwen3moe", nExpert: 4, nExpertUsed: 5 }, /nExpertUsed must be in 1..4/],
      [{ arch: "qwen3", nHead: 4, nHeadKv: 3 }, /not a multiple of n_head_kv/],
      [{ arch: "qwen2", nHead: 2 }, /n_head \* head_dim == n_embd/],
      [{ arch: "llama", nVocab: 100 }, /vocabulary needs more than/],
      [{ arch: "llama", weightType: GGMLType.IQ2_XXS }, /not supported/],
    ];
    for (const [opts, msg] of bad) await expect(writeRandomModel(join(dir, "bad.gguf"), opts), JSON.stringify(opts)).rejects.toThrow(msg);
    await expect(writeRandomModel(join(dir, "bad.gguf"), { arch: "gpt-9" })).rejects.toBeInstanceOf(TsmoeError);
  });
});

interface ManifestFixture {
  arch: string;
  tensors: Record<string, number[]>;
  rope_freq_base: number;
  n_expert: number;
  n_expert_used: number;
}

if (!HAVE_SHARED) console.warn(`gguf-random-model: ${SHARED_SKIP_MESSAGE}`);

describe.skipIf(!HAVE_SHARED)("random models mirror the shared fixtures", () => {
  const FIXTURE_OPTS: Record<string, Partial<RandomModelOptions>> = {
    llama: {},
    "llama-moe": { nExpert: 8, nExpertUsed: 2, ropeBase: 1e6 },
    qwen2: {},
    qwen3: {},
    qwen2moe: {},
    qwen3moe: {},
    olmoe: {},
    glm4moe: {},
    deepseek2: {},
    "gpt-oss": {},
  };
  it("covers every architecture that has a shared fixture", () => {
    // the generator also writes architectures without a fixture (qwen3vlmoe, granitemoe): those are
    // checked against llama.cpp in test/archs-extra.test.ts
    const fixtureArchs = new Set(Object.keys(FIXTURE_OPTS).map((k) => k.replace(/-moe$/, "")));
    for (const arch of fixtureArchs) expect(Object.keys(ARCHS)).toContain(arch);
    const manifest = JSON.parse(readFileSync(join(FIXTURES, "manifest.json"), "utf8")) as { fixtures: Record<string, unknown> };
    expect(new Set(Object.keys(manifest.fixtures))).toEqual(new Set(Object.keys(FIXTURE_OPTS)));
  });
  for (const [fixture, extra] of Object.entries(FIXTURE_OPTS)) {
    it(`${fixture}: same metadata keys and values, same tensor names, order and shapes`, async () => {
      const manifest = JSON.parse(readFileSync(join(FIXTURES, "manifest.json"), "utf8")) as { fixtures: Record<string, ManifestFixture> };
      const fx = manifest.fixtures[fixture]!;
      const ref = await loadGguf(join(FIXTURES, fixture, `${fixture}.F32.gguf`), { headerOnly: true });
      const ours = await gen({ arch: fx.arch, seed: 1, ...extra });
      expect([...ours.tensors.values()].map((t) => [t.name, t.shape])).toEqual(Object.entries(fx.tensors));
      expect([...ours.metadata.keys()]).toEqual([...ref.metadata.keys()]);
      for (const [key, e] of ref.metadata) {
        if (key === "general.name" || key.startsWith("tokenizer.ggml.tokens") || key === "tokenizer.ggml.scores") continue;
        const o = ours.metadata.get(key)!;
        expect([o.type, o.arrayType], key).toEqual([e.type, e.arrayType]);
        if (key !== "tokenizer.ggml.token_type") expect(o.value, key).toEqual(e.value);
      }
      expect(ours.metadata.get("tokenizer.ggml.token_type")!.value).toEqual(ref.metadata.get("tokenizer.ggml.token_type")!.value);
    });
  }
});
