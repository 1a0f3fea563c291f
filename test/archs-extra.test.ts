/**
 * glm4moe, deepseek2, gpt-oss, qwen3vlmoe and granitemoe against llama.cpp:
 *  - node-llama-cpp on models the project generates (always run; also qwen3vlmoe and granitemoe): the same
 *    file (F32 and Q4_K) and the same tokens through tsmoe and llama.cpp (flash attention off, F32 KV
 *    cache, like tsmoe's default attention), at the model's expert count; the soft mask N = 2 against
 *    llama.cpp on the file written with expert_used_count = 2; flash attention with an F16 cache on both
 *    sides (glm4moe, deepseek2);
 *  - the goldens of ../shared/fixtures (skipped when absent): every golden of these fixtures, default and
 *    reduced expert counts (`--override-kv <arch>.expert_used_count`), F32 (`.ref` and default), Q4_K_M
 *    and gpt-oss MXFP4_MOE.
 * Bounds (the forward-pass issue): mean KL(llama.cpp || tsmoe) < 1e-3 nats and the same top-1 on >= 98%
 * of positions for F32, mean KL < 2e-2 for quantized files; `.ref` goldens to float32 rounding. Positions
 * whose router top-k margin is below 1e-3 are left out of the golden comparisons.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, type Llama, type LlamaContext } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeRandomModel, type RandomModelOptions } from "../src/gguf/random-model.ts";
import type { Model } from "../src/model/api.ts";
import { loadModel } from "../src/model/load.ts";
import { GGMLType } from "../src/tensor/types.ts";
import { FIXTURES, HAVE_SHARED, SHARED_SKIP_MESSAGE } from "./helpers.ts";
import { compareLogits, readGolden, type Agreement } from "./model-compare.ts";
import { withLlamaCppContext } from "./model-helpers.ts";

const GRANITE_SHARP = { embeddingScale: 2, residualScale: 0.5, attentionScale: 0.125, logitScale: 0.25 };
/** architectures with fixture goldens */
const ARCHS = ["glm4moe", "deepseek2", "gpt-oss"];
/** generated models compared with node-llama-cpp */
const GENERATED: { name: string; opts: Omit<RandomModelOptions, "weightType" | "seed"> }[] = [
  ...ARCHS.map((arch) => ({ name: arch, opts: { arch } })),
  { name: "qwen3vlmoe", opts: { arch: "qwen3vlmoe" } },
  // multipliers that keep the random model's next-token distributions sharp enough for the KL bounds to
  // notice a missing multiplier or expert (the Granite 3.0 defaults of the generator flatten them)
  { name: "granitemoe", opts: { arch: "granitemoe", extra: GRANITE_SHARP } },
  { name: "granitemoe-shared", opts: { arch: "granitemoe", nFfShexp: 64, extra: GRANITE_SHARP } },
];
const TOKENS = [1, 342, 431, 265, 403, 287, 447, 426, 271, 436, 443, 198, 172, 265, 263, 441, 440, 306, 433, 448, 363, 438, 276, 273];
const FLOAT_TYPES = new Set(["F32", "F16", "BF16"]);

/** `logitDiff` false when the reference rows are log-probabilities (their offset from logits is arbitrary) */
function report(name: string, r: Agreement, logitDiff = true): void {
  console.log(
    `${name}: mean KL ${r.meanKl.toExponential(2)}, max KL ${r.maxKl.toExponential(2)}, top-1 ${(100 * r.top1).toFixed(1)}%, ` +
      (logitDiff ? `max |dlogit| ${r.maxAbsDiff.toExponential(2)}, ` : "") +
      `positions ${r.positions} (${r.left_out} left out)`,
  );
}

function expectWithinBounds(r: Agreement, float: boolean): void {
  expect(r.positions).toBeGreaterThan(0);
  if (float) {
    expect(r.meanKl).toBeLessThan(1e-3);
    expect(r.top1).toBeGreaterThanOrEqual(0.98);
  } else expect(r.meanKl).toBeLessThan(2e-2);
}

async function tsmoeLogits(path: string, tokens: number[], opts: { k?: number; arch?: string; kvType?: "f32" | "f16" } = {}): Promise<{ logits: Float32Array; model: Model }> {
  const overrideKv = opts.k ? [{ key: `${opts.arch}.expert_used_count`, type: "int" as const, value: opts.k }] : undefined;
  const model = await loadModel(path, { threads: 1, overrideKv });
  try {
    const logits = await model.createSession({ nCtx: Math.max(64, tokens.length), kvType: opts.kvType }).eval(tokens, { allLogits: true });
    return { logits, model };
  } finally {
    await model.dispose();
  }
}

describe("generated models against node-llama-cpp", () => {
  let dir: string;
  let llama: Llama;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "tsmoe-archs-extra-"));
    llama = await getLlama({ gpu: false, build: "never", logLevel: "error" as never });
  });
  afterAll(async () => {
    await llama?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  /** llama.cpp's next-token log-probabilities after each of TOKENS, as rows of "logits" for compareLogits */
  async function evalLogProbs(ctx: LlamaContext, nVocab: number): Promise<Float64Array[]> {
    const items = TOKENS.map((t) => [t, { generateNext: { probabilities: true } }] as const);
    const res = await ctx.getSequence().controlledEvaluate(items as never);
    return res.map((r) => {
      const probs = (r as { next?: { probabilities?: Map<number, number> } }).next?.probabilities;
      if (!probs) throw new Error("node-llama-cpp returned no probabilities");
      const row = new Float64Array(nVocab).fill(-1e30); // log 0
      for (const [tok, p] of probs) if (p > 0) row[tok] = Math.log(p);
      return row;
    });
  }

  /** with flash attention off and an F32 cache (tsmoe's default attention) */
  const llamaCppLogProbs = (path: string, nVocab: number) => withLlamaCppContext(llama, path, (ctx) => evalLogProbs(ctx, nVocab));

  // llama.cpp's default attention (flash attention, F16 cache): tsmoe's kvType "f16" reproduces
  // node-llama-cpp's for MLA as closely as for ordinary attention (see KNOWN_FA_DEVIATION). gpt-oss is left
  // out: node-llama-cpp's llama.cpp differs there from the goldens' commit, which tsmoe matches (KL ~1e-8)
  it.each(["glm4moe", "deepseek2"])("%s F32 with flash attention and an F16 cache (both sides)", async (arch) => {
    const path = join(dir, `${arch}.fa.gguf`);
    await writeRandomModel(path, { arch, seed: 7 });
    const { logits, model } = await tsmoeLogits(path, TOKENS, { kvType: "f16" });
    const nVocab = model.hparams.nVocab;
    const m = await llama.loadModel({ modelPath: path });
    let ref: Float64Array[];
    try {
      const ctx = await m.createContext({ contextSize: 64, batchSize: 64, threads: 1, flashAttention: true });
      ref = await evalLogProbs(ctx, nVocab);
      await ctx.dispose();
    } finally {
      await m.dispose();
    }
    const r = compareLogits(ref, logits, nVocab);
    report(`${arch} F32 flash attention (generated)`, r, false);
    expect(r.meanKl).toBeLessThan(1e-6);
    expect(r.top1).toBe(1);
  });

  // the soft mask N = 2 on the k = 4 file against llama.cpp on the same weights written with expert_used_count = 2
  for (const { name, opts } of GENERATED) {
    it(`${name} F32 --moe-n-expert 2 (soft) vs expert_used_count = 2`, async () => {
      const path4 = await writeRandomModel(join(dir, `${name}.k4.gguf`), { ...opts, nExpertUsed: 4, seed: 11 });
      const path2 = await writeRandomModel(join(dir, `${name}.k2.gguf`), { ...opts, nExpertUsed: 2, seed: 11 });
      const model = await loadModel(path4, { threads: 1, moe: { nExpert: 2, mask: "soft" } });
      let logits: Float32Array;
      try {
        logits = await model.createSession({ nCtx: 64 }).eval(TOKENS, { allLogits: true });
      } finally {
        await model.dispose();
      }
      const r = compareLogits(await llamaCppLogProbs(path2, model.hparams.nVocab), logits, model.hparams.nVocab);
      report(`${name} F32 soft N=2 (generated)`, r, false);
      expectWithinBounds(r, true);
      // and N = 2 is not the model's k = 4: with k = 4 the same comparison is far off
      const k4 = (await tsmoeLogits(path4, TOKENS)).logits;
      expect(compareLogits(await llamaCppLogProbs(path2, model.hparams.nVocab), k4, model.hparams.nVocab).meanKl).toBeGreaterThan(1e-3);
    });
  }

  for (const { name, opts } of GENERATED) {
    for (const [typeName, type] of [
      ["F32", GGMLType.F32],
      ["Q4_K", GGMLType.Q4_K],
    ] as const) {
      it(`${name} ${typeName}`, async () => {
        const path = join(dir, `${name}.${typeName}.gguf`);
        await writeRandomModel(path, { ...opts, weightType: type, seed: 42 });
        const { logits, model } = await tsmoeLogits(path, TOKENS);
        const ref = await llamaCppLogProbs(path, model.hparams.nVocab);
        const r = compareLogits(ref, logits, model.hparams.nVocab);
        report(`${name} ${typeName} (generated)`, r, false);
        expectWithinBounds(r, typeName === "F32");
      });
    }
  }
});

/**
 * deepseek2's default goldens with fewer than 64 tokens (llama.cpp's one-query flash-attention kernel, F16
 * cache): for multi-head latent attention the llama.cpp commit of the goldens rounds differently from
 * tsmoe, while node-llama-cpp's llama.cpp (flash attention on, F16 cache) agrees with tsmoe to ~2e-8 in
 * probability on the same file. The difference (max |dlogit| ~1e-2) is the size of llama.cpp's own
 * default-vs-.ref difference on this fixture (9.7e-3), so top-1 is compared where the golden's top-2 gap
 * is at least 2e-2; the .ref and s64 goldens are compared with the full bounds.
 */
const KNOWN_FA_DEVIATION = (g: GoldenFile) => g.arch === "deepseek2" && !g.ref && g.seq === "s16";

function argmax(v: ArrayLike<number>): number {
  let b = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[b]) b = i;
  return b;
}

function top2Gap(v: ArrayLike<number>): number {
  let a = -Infinity;
  let b = -Infinity;
  for (let i = 0; i < v.length; i++) {
    if (v[i] > a) {
      b = a;
      a = v[i];
    } else if (v[i] > b) b = v[i];
  }
  return a - b;
}

describe("unsupported variants are refused with a clear error", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "tsmoe-archs-refuse-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const cases: { arch: string; key: string; type: "int" | "float"; value: number; message: RegExp }[] = [
    { arch: "deepseek2", key: "attention.key_length_mla", type: "int", value: 0, message: /legacy attn_kv_b.*not supported/ },
    { arch: "deepseek2", key: "attention.temperature_scale", type: "float", value: 0.1, message: /temperature scaling is not supported/ },
    { arch: "deepseek2", key: "attention.head_count_kv", type: "int", value: 4, message: /absorbed MLA needs head_count_kv 1/ },
    { arch: "gpt-oss", key: "rope.freq_base_swa", type: "float", value: 1000, message: /freq_base_swa\) is not supported/ },
    { arch: "glm4moe", key: "expert_gating_func", type: "int", value: 9, message: /gating function 9 is not supported/ },
    { arch: "glm4moe", key: "nextn_predict_layers", type: "int", value: 2, message: /nextn_predict_layers 2 must be < block_count 2/ },
  ];
  for (const c of cases) {
    it(`${c.arch}: ${c.key} = ${c.value}`, async () => {
      const path = join(dir, `${c.arch}.gguf`);
      if (!existsSync(path)) await writeRandomModel(path, { arch: c.arch, seed: 1 });
      await expect(loadModel(path, { threads: 1, overrideKv: [{ key: `${c.arch}.${c.key}`, type: c.type, value: c.value }] })).rejects.toThrow(c.message);
    });
  }
});

interface GoldenFile {
  arch: string;
  type: string;
  k: number;
  seq: string;
  ref: boolean;
  name: string;
  path: string;
  model: string;
}

function listGoldens(): GoldenFile[] {
  const out: GoldenFile[] = [];
  for (const arch of HAVE_SHARED ? ARCHS : []) {
    const dir = join(FIXTURES, arch);
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir).sort()) {
      const m = /^(.+)\.([A-Z0-9_]+)\.logits\.k(\d+)\.(s\d+)(\.ref)?\.json\.gz$/.exec(name);
      if (!m || m[1] !== arch) continue;
      out.push({ arch, type: m[2], k: Number(m[3]), seq: m[4], ref: m[5] !== undefined, name, path: join(dir, name), model: join(dir, `${arch}.${m[2]}.gguf`) });
    }
  }
  return out;
}

describe.skipIf(!HAVE_SHARED)("fixture goldens of glm4moe, deepseek2, gpt-oss (../shared/fixtures)", () => {
  if (!HAVE_SHARED) console.warn(SHARED_SKIP_MESSAGE);
  const goldens = listGoldens();

  it("finds goldens of every architecture, with reduced expert counts, .ref, Q4_K_M and MXFP4", () => {
    for (const arch of ARCHS) {
      const mine = goldens.filter((g) => g.arch === arch);
      expect(mine.some((g) => g.ref), arch).toBe(true);
      expect(mine.some((g) => g.type === "Q4_K_M"), arch).toBe(true);
      expect(new Set(mine.map((g) => g.k)).size, arch).toBeGreaterThanOrEqual(3);
    }
    expect(goldens.some((g) => g.type === "MXFP4_MOE")).toBe(true);
  });

  for (const g of goldens) {
    it(g.name, async () => {
      const golden = readGolden(g.path);
      const { logits, model } = await tsmoeLogits(g.model, golden.tokens, { k: g.k, arch: g.arch, kvType: g.ref ? "f32" : "f16" });
      expect(model.hparams.nExpertUsed).toBe(g.k);
      const r = compareLogits(golden.logits, logits, golden.n_vocab, golden.router_margins?.per_position_min, 1e-3);
      report(g.name, r);
      if (FLOAT_TYPES.has(g.type) && KNOWN_FA_DEVIATION(g)) {
        // see KNOWN_FA_DEVIATION: KL bound as usual, top-1 where the golden's top-2 gap exceeds the noise
        expect(r.meanKl).toBeLessThan(1e-3);
        const margins = golden.router_margins?.per_position_min;
        const keep = golden.logits.map((_, p) => !(margins && margins[p] < 1e-3) && top2Gap(golden.logits[p]) >= 2e-2);
        const clear = keep.filter(Boolean).length;
        const same = keep.filter((k, p) => k && argmax(golden.logits[p]) === argmax(logits.subarray(p * golden.n_vocab, (p + 1) * golden.n_vocab))).length;
        console.log(`${g.name}: top-1 ${same}/${clear} on positions whose top-2 logit gap is >= 2e-2`);
        expect(clear).toBeGreaterThan(golden.logits.length / 2);
        expect(same / clear).toBeGreaterThanOrEqual(0.98);
      } else expectWithinBounds(r, FLOAT_TYPES.has(g.type));
      if (g.ref) {
        expect(r.meanKl).toBeLessThan(1e-9);
        expect(r.maxAbsDiff).toBeLessThan(1e-4);
      }
    });
  }
});
