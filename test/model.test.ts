/**
 * The forward pass on models the project generates (always run): KV cache consistency (one batch vs token
 * by token, truncate and re-evaluate), the `eval` command's JSON, and the errors for an unknown
 * architecture, a missing tensor and an unsupported tensor type.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeRandomModel, modelMetadata, modelTensors, resolveShape, tensorValues } from "../src/gguf/random-model.ts";
import { writeGguf } from "../src/gguf/writer.ts";
import { ARCHS } from "../src/model/archs/index.ts";
import { loadModel, MAX_BATCH } from "../src/model/load.ts";
import { GGMLType, rowBytes } from "../src/tensor/types.ts";
import { runCli } from "./helpers.ts";
import { RANDOM_ARCH_CASES } from "./model-helpers.ts";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "tsmoe-model-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const TOKENS = [1, 113, 455, 295, 39, 239, 417, 482, 458, 389, 245, 372, 284, 250, 360, 473, 17, 99, 3, 500];

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}


describe("KV cache", () => {
  for (const c of RANDOM_ARCH_CASES) {
    for (const kvType of ["f32", "f16"] as const) {
      it(`${c.name} (${kvType}): one batch and token by token give the same logits`, async () => {
        const path = await writeRandomModel(join(dir, `${c.name}.gguf`), { arch: c.arch, nExpert: c.nExpert, nExpertUsed: c.nExpertUsed, seed: 7 });
        const model = await loadModel(path, { threads: 1 });
        try {
          const nVocab = model.hparams.nVocab;
          const batch = await model.createSession({ nCtx: 64, kvType }).eval(TOKENS, { allLogits: true });
          const stepSession = model.createSession({ nCtx: 64, kvType });
          const steps = new Float32Array(TOKENS.length * nVocab);
          for (let i = 0; i < TOKENS.length; i++) steps.set(await stepSession.eval([TOKENS[i]]), i * nVocab);
          expect(stepSession.nPast).toBe(TOKENS.length);
          expect(maxAbsDiff(batch, steps)).toBeLessThanOrEqual(1e-4);
          // the logits are not degenerate
          let spread = 0;
          for (let i = 1; i < nVocab; i++) spread = Math.max(spread, Math.abs(batch[i] - batch[0]));
          expect(spread).toBeGreaterThan(0.1);
        } finally {
          await model.dispose();
        }
      });
    }
  }

  it("an eval longer than one batch (split at MAX_BATCH) equals evaluating it in pieces", async () => {
    const path = await writeRandomModel(join(dir, "long.gguf"), {
      arch: "qwen3moe",
      seed: 4,
      nEmbd: 64,
      nHead: 2,
      nHeadKv: 1,
      headDim: 32,
      nFf: 64,
      nCtx: 1024,
    });
    const model = await loadModel(path, { threads: 1 });
    try {
      const nVocab = model.hparams.nVocab;
      const n = MAX_BATCH + 20;
      const tokens = Array.from({ length: n }, (_, i) => 3 + ((i * 31) % 500));
      const whole = await model.createSession({ nCtx: n }).eval(tokens, { allLogits: true });
      const s = model.createSession({ nCtx: n });
      const pieces = new Float32Array(n * nVocab);
      for (let i = 0; i < n; i += 100) pieces.set(await s.eval(tokens.slice(i, i + 100), { allLogits: true }), i * nVocab);
      expect(maxAbsDiff(whole, pieces)).toBeLessThanOrEqual(1e-4);
      const last = await model.createSession({ nCtx: n }).eval(tokens);
      expect(maxAbsDiff(last, whole.subarray((n - 1) * nVocab))).toBe(0);
    } finally {
      await model.dispose();
    }
  });

  it("truncate drops cached tokens: re-evaluating them reproduces the logits", async () => {
    const path = await writeRandomModel(join(dir, "trunc.gguf"), { arch: "qwen3moe", seed: 3 });
    const model = await loadModel(path, { threads: 1 });
    try {
      const nVocab = model.hparams.nVocab;
      const s = model.createSession({ nCtx: 32 });
      const all = await s.eval(TOKENS.slice(0, 12), { allLogits: true });
      s.truncate(5);
      expect(s.nPast).toBe(5);
      const again = await s.eval(TOKENS.slice(5, 12), { allLogits: true });
      expect(maxAbsDiff(all.subarray(5 * nVocab), again)).toBeLessThanOrEqual(1e-6);
      // last-row logits equal the last row of all logits
      s.truncate(11);
      const last = await s.eval([TOKENS[11]]);
      expect(maxAbsDiff(all.subarray(11 * nVocab), last)).toBeLessThanOrEqual(1e-6);
      await expect(s.eval(new Array(40).fill(1))).rejects.toThrow(/context is full/);
      await expect(s.eval([nVocab])).rejects.toThrow(/outside the vocabulary/);
    } finally {
      await model.dispose();
    }
  });

  it("MoE statistics count the routed tokens per layer", async () => {
    const path = await writeRandomModel(join(dir, "stats.gguf"), { arch: "olmoe", seed: 5 });
    const model = await loadModel(path, { threads: 1 });
    try {
      const s = model.createSession({ nCtx: 32, moe: { mask: "soft", nExpert: 2 }, moeStats: true });
      await s.eval(TOKENS.slice(0, 10));
      const stats = s.moeStats();
      expect(stats.map((l) => l.layer)).toEqual([0, 1]);
      for (const l of stats) {
        expect(l.tokens).toBe(10);
        expect(l.meanExperts).toBe(2);
        expect(l.load!.reduce((a, b) => a + b, 0)).toBe(20);
      }
      s.resetStats();
      expect(s.moeStats()).toEqual([]);
      // without moeStats the session counts tokens and experts only (no observer: no entropy, no load)
      const plain = model.createSession({ nCtx: 32, moe: { mask: "soft", nExpert: 2 } });
      await plain.eval(TOKENS.slice(0, 10));
      expect(plain.moeStats()).toEqual([0, 1].map((layer) => ({ layer, tokens: 10, meanExperts: 2 })));
    } finally {
      await model.dispose();
    }
  });
});

describe("model errors", () => {
  /** a copy of a small random llama with edits to its metadata / tensors */
  function writeVariant(
    name: string,
    edit: { arch?: string; dropTensor?: string; retype?: { tensor: string; type: GGMLType }; reshape?: { tensor: string; shape: number[] } },
  ): string {
    const opts = { arch: "llama", seed: 1, nLayer: 1 };
    const s = resolveShape(opts);
    const meta = modelMetadata(opts, s).map((e) => {
      if (edit.arch && e.key === "general.architecture") return { ...e, value: edit.arch };
      if (edit.arch && e.key.startsWith("llama.")) return { ...e, key: `${edit.arch}.${e.key.slice(6)}` };
      return e;
    });
    const tensors = modelTensors("llama", s)
      .filter((t) => t.name !== edit.dropTensor)
      .map((t) => (edit.reshape?.tensor === t.name ? { ...t, shape: edit.reshape.shape } : t))
      .map((t) => {
        const values = tensorValues(1, t);
        if (edit.retype?.tensor === t.name) {
          const bytes = (values.length / t.shape[0]) * rowBytes(edit.retype.type, t.shape[0]);
          return { name: t.name, type: edit.retype.type, shape: t.shape, data: new Uint8Array(bytes) };
        }
        return { name: t.name, type: GGMLType.F32, shape: t.shape, data: new Uint8Array(values.buffer) };
      });
    const path = join(dir, name);
    writeGguf(path, meta, tensors);
    return path;
  }

  it("an unknown architecture is refused with the list of supported ones", async () => {
    const supported = [...ARCHS.keys()];
    for (const a of ["llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "olmoe"]) expect(supported).toContain(a);
    const message = `architecture 'xyz' is not supported (supported: ${supported.join(", ")})`;
    const path = writeVariant("xyz.gguf", { arch: "xyz" });
    await expect(loadModel(path, { threads: 1 })).rejects.toThrow(message);
    const r = runCli(["eval", "-m", path, "--tokens", "1,2,3"]);
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe(`error: ${message}`);
  });

  it("a missing tensor is named", async () => {
    const path = writeVariant("missing.gguf", { dropTensor: "blk.0.attn_k.weight" });
    await expect(loadModel(path, { threads: 1 })).rejects.toThrow(/missing tensor 'blk\.0\.attn_k\.weight'/);
  });

  it("a tensor of the wrong shape is named with both shapes", async () => {
    const path = writeVariant("shape.gguf", { reshape: { tensor: "blk.0.attn_q.weight", shape: [256, 128] } });
    await expect(loadModel(path, { threads: 1 })).rejects.toThrow(/tensor 'blk\.0\.attn_q\.weight' has shape \[256, 128\], expected \[256, 256\]/);
  });

  it("a tensor type the engine cannot compute with is named", async () => {
    const path = writeVariant("iq2.gguf", { retype: { tensor: "blk.0.ffn_up.weight", type: GGMLType.IQ2_XXS } });
    await expect(loadModel(path, { threads: 1 })).rejects.toThrow("tensor blk.0.ffn_up.weight has type IQ2_XXS, not supported");
  });

  it("an expert_used_count override above expert_count is refused", async () => {
    const path = await writeRandomModel(join(dir, "moe-bad.gguf"), { arch: "qwen3moe", seed: 2 });
    await expect(
      loadModel(path, { threads: 1, overrideKv: [{ key: "qwen3moe.expert_used_count", type: "int", value: 9 }] }),
    ).rejects.toThrow(/expert_used_count 9 > expert_count 8/);
  });
});

describe("tsmoe eval", () => {
  it("writes the logits of every position as JSON, equal to a session's", async () => {
    const path = await writeRandomModel(join(dir, "eval.gguf"), { arch: "qwen2moe", seed: 11 });
    const out = join(dir, "eval.json");
    const tokens = TOKENS.slice(0, 6);
    const r = runCli(["eval", "-m", path, "--tokens", tokens.join(","), "--logits-out", out, "-t", "1", "--moe-n-expert", "2"]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const json = JSON.parse(readFileSync(out, "utf8")) as { tokens: number[]; n_vocab: number; logits: number[][] };
    expect(json.tokens).toEqual(tokens);
    expect(json.n_vocab).toBe(512);
    expect(json.logits.length).toBe(tokens.length);
    const model = await loadModel(path, { threads: 1 });
    try {
      const ours = await model.createSession({ nCtx: 8, moe: { mask: "soft", nExpert: 2 } }).eval(tokens, { allLogits: true });
      // printed with 9 significant digits: reads back to the same float32
      expect(maxAbsDiff(Float32Array.from(json.logits.flat()), ours)).toBe(0);
    } finally {
      await model.dispose();
    }
  });

  it("rejects malformed token lists and KV types", () => {
    const r = runCli(["eval", "-m", "nonexistent.gguf", "--tokens", "1,,2"]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^error: --tokens: expected comma-separated token ids/);
    const k = runCli(["eval", "-m", "nonexistent.gguf", "--tokens", "1", "-ctk", "q8"]);
    expect(k.status).toBe(1);
    expect(k.stderr).toMatch(/^error: --cache-type-k \(-ctk\): expected f32 or f16/);
  });
});

