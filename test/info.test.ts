/**
 * `tsmoe info`, run as users run it: JSON and text output on generated models (MoE and dense), a fixture
 * (when ../shared is present), and one-line errors for corrupt files and a missing -m.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeRandomModel } from "../src/gguf/random-model.ts";
import { GGMLType } from "../src/tensor/types.ts";
import { FIXTURES, HAVE_SHARED, runCli, SHARED_SKIP_MESSAGE } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "tsmoe-info-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const moe = join(dir, "moe.gguf");
const dense = join(dir, "dense.gguf");
beforeAll(async () => {
  // every dimension the assertions below count with is given here, not left to the generator's defaults
  const moeShape = { nEmbd: 256, nHead: 8, nHeadKv: 2, headDim: 64, nVocab: 512, nFfExp: 32, nFfShexp: 0, tiedOutput: false };
  await writeRandomModel(moe, { arch: "qwen3moe", seed: 1, nExpert: 6, nExpertUsed: 3, nLayer: 3, nCtx: 512, weightType: GGMLType.Q8_0, ...moeShape });
  await writeRandomModel(dense, { arch: "llama", seed: 2, nLayer: 2, tiedOutput: true, rmsEps: 1e-5 });
});

describe("tsmoe info", () => {
  it("--json on a MoE model", () => {
    const r = runCli(["info", "-m", moe, "--json"]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({
      architecture: "qwen3moe",
      n_layer: 3,
      n_embd: 256,
      n_vocab: 512,
      n_expert: 6,
      n_expert_used: 3,
      n_head: 8,
      n_head_kv: 2,
      n_ctx_train: 512,
      n_ff_exp: 32,
      file_type: "Q8_0",
      file_size: statSync(moe).size,
      // 3 layers x (3 norms + ffn_norm + router) + output_norm = 16 F32; 3 x 7 matrices + embd + output = 23 Q8_0
      tensor_types: { F32: 16, Q8_0: 23 },
    });
    // token_embd + output (256x512 each), per layer q 256x512, k/v 256x128, o 512x256, router 256x6,
    // 3 expert tensors 256x32x6, norms 256 x2 + 64 x2; output_norm 256
    const perLayer = 256 * 512 + 2 * 256 * 128 + 512 * 256 + 256 * 6 + 3 * 256 * 32 * 6 + 2 * 256 + 2 * 64;
    expect(j.n_params).toBe(2 * 256 * 512 + 256 + 3 * perLayer);
  });

  it("says which WebAssembly instruction set the kernels use (SIMD128, or relaxed SIMD with TSMOE_WASM_RELAXED=1)", () => {
    expect(runCli(["info", "-m", moe], { env: { TSMOE_WASM_RELAXED: "0" } }).stdout).toMatch(/^kernels\s+WASM for all \d+ weight tensors; SIMD128 /m);
    const relaxed = runCli(["info", "-m", moe, "--json"], { env: { TSMOE_WASM_RELAXED: "1" } });
    expect(relaxed.status).toBe(0);
    expect(JSON.parse(relaxed.stdout).wasm_simd).toMatch(/^relaxed SIMD \(Q4_K\/Q5_K\/Q6_K batch and decode kernels/);
  });

  it("--json on a dense model reports no experts; text output is readable", () => {
    const j = JSON.parse(runCli(["info", "-m", dense, "--json"]).stdout);
    expect(j).toMatchObject({ architecture: "llama", n_expert: 0, n_expert_used: 0, n_layer: 2, tensor_types: { F32: 20 } });
    const r = runCli(["info", "-m", dense]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^architecture\s+llama/m);
    expect(r.stdout).toMatch(/^experts\s+none \(dense\)/m);
    expect(r.stdout).toMatch(/^tensors\s+20 \(F32 20\)/m);
    expect(r.stdout).toMatch(/^rms eps\s+0\.00001$/m);
  });

  it("a truncated or corrupt file is one error line and exit 1", () => {
    const bytes = readFileSync(moe);
    const truncated = join(dir, "truncated.gguf");
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 1000));
    const corrupt = join(dir, "corrupt.gguf");
    writeFileSync(corrupt, Buffer.concat([Buffer.from("GGML"), bytes.subarray(4)]));
    for (const [file, msg] of [
      [truncated, /past the end of the file/],
      [corrupt, /not a GGUF file/],
    ] as const) {
      const r = runCli(["info", "-m", file]);
      expect(r.status).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(new RegExp(`^error: ${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: `));
      expect(r.stderr).toMatch(msg);
      expect(r.stderr.trimEnd().split("\n")).toHaveLength(1);
    }
  });

  it("without -m describes the embedded model, as every command defaults -m", () => {
    const r = runCli(["info"]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/architecture +qwen3moe/);
  });
});

if (!HAVE_SHARED) console.warn(`info: ${SHARED_SKIP_MESSAGE}`);

describe.skipIf(!HAVE_SHARED)("tsmoe info on a fixture", () => {
  it("reports the manifest's tensor type counts and hyper-parameters", () => {
    const manifest = JSON.parse(readFileSync(join(FIXTURES, "manifest.json"), "utf8"));
    const m = manifest.models.find((x: { file: string }) => x.file === "qwen2moe/qwen2moe.Q4_K_M.gguf");
    const fx = manifest.fixtures.qwen2moe;
    const j = JSON.parse(runCli(["info", "-m", join(FIXTURES, m.file), "--json"]).stdout);
    expect(j.tensor_types).toEqual(m.tensor_type_counts);
    expect(j.file_size).toBe(m.bytes);
    expect(j.n_params).toBe(fx.n_params);
    for (const k of ["n_layer", "n_embd", "n_vocab", "n_head", "n_head_kv", "n_expert", "n_expert_used", "n_ctx_train"]) expect(j[k], k).toBe(fx[k]);
    expect(j.file_type).toBe("Q4_K_M");
  });
});
