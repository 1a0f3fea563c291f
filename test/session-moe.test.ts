/**
 * The expert setting belongs to a session: sessions of one loaded model with different settings give the
 * logits of separately loaded models with those settings, `setMoe` changes a session's setting between
 * evaluations (KV cache kept, statistics restarted), bad settings are one-line errors, and `tsmoe bench`
 * loads the model once per thread count for a whole grid of settings.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runBench } from "../src/cli/bench.ts";
import { openModel } from "../src/cli/progress.ts";
import { UsageError } from "../src/errors.ts";
import { countSettings, modelSetting } from "../src/eval/grid.ts";
import { writeRandomModel } from "../src/gguf/random-model.ts";
import type { KvOverride, MoeOptions } from "../src/model/api.ts";
import { loadModel } from "../src/model/load.ts";

const TOKENS = [1, 113, 455, 295, 39, 239, 417, 482, 458, 389, 245, 372];
const SOFT2: MoeOptions = { mask: "soft", nExpert: 2 };
const HARD1: MoeOptions = { mask: "hard", nExpert: 1 };

let dir: string;
let moePath: string;
let densePath: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tsmoe-session-moe-"));
  // k = 4 of 8 experts, normalised top-k (soft N equals expert_used_count = N)
  moePath = await writeRandomModel(join(dir, "qwen3moe.gguf"), { arch: "qwen3moe", nEmbd: 128, nHead: 4, headDim: 32, seed: 21 });
  densePath = await writeRandomModel(join(dir, "llama.gguf"), { arch: "llama", nEmbd: 128, nHead: 4, headDim: 32, seed: 21 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** all logits of TOKENS on a freshly loaded model with one session of the given setting */
async function freshLogits(moe: MoeOptions | undefined, overrideKv?: KvOverride[]): Promise<Float32Array> {
  const model = await loadModel(moePath, { threads: 1, overrideKv });
  try {
    return await model.createSession({ nCtx: 32, moe }).eval(TOKENS, { allLogits: true });
  } finally {
    await model.dispose();
  }
}

describe("the expert setting of a session", () => {
  it("sessions of one model with different settings match separately loaded models", async () => {
    const own = await freshLogits(undefined);
    const soft2 = await freshLogits(SOFT2);
    const hard1 = await freshLogits(HARD1);
    // an independent reference: the soft mask N = 2 is the model with expert_used_count = 2
    expect(await freshLogits(undefined, [{ key: "qwen3moe.expert_used_count", type: "int", value: 2 }])).toEqual(soft2);
    expect(soft2).not.toEqual(own);
    expect(hard1).not.toEqual(soft2);

    const model = await loadModel(moePath, { threads: 1 });
    try {
      const sessions = [model.createSession({ nCtx: 32 }), model.createSession({ nCtx: 32, moe: SOFT2 }), model.createSession({ nCtx: 32, moe: HARD1 })];
      expect(sessions.map((s) => s.moe)).toEqual([undefined, SOFT2, HARD1]);
      // interleaved token by token: no routing state leaks from one session into another
      const rows: Float32Array[][] = sessions.map(() => []);
      for (const t of TOKENS) for (let i = 0; i < sessions.length; i++) rows[i].push(await sessions[i].eval([t]));
      const joined = rows.map((r) => Float32Array.from(r.flatMap((x) => Array.from(x))));
      const nVocab = model.hparams.nVocab;
      // token by token rounds a little differently from one batch: within a bound here, exactly below
      for (const [i, ref] of [own, soft2, hard1].entries()) {
        let maxDiff = 0;
        for (let j = 0; j < ref.length; j++) maxDiff = Math.max(maxDiff, Math.abs(joined[i][j] - ref[j]));
        expect(maxDiff, `session ${i}`).toBeLessThan(1e-4);
      }
      expect(joined[0].length).toBe(TOKENS.length * nVocab);
      // whole batches through the same sessions after truncating: bit-identical to the separate models
      for (const [i, ref] of [own, soft2, hard1].entries()) {
        sessions[i].truncate(0);
        expect(await sessions[i].eval(TOKENS, { allLogits: true })).toEqual(ref);
      }
      expect(sessions[1].moeStats()[0].meanExperts).toBe(2);
      expect(sessions[2].moeStats()[0].meanExperts).toBe(1);
    } finally {
      await model.dispose();
    }
  });

  it("setMoe changes the setting between evaluations, keeps the cache and restarts the statistics", async () => {
    const soft2 = await freshLogits(SOFT2);
    const own = await freshLogits(undefined);
    const model = await loadModel(moePath, { threads: 1 });
    try {
      const s = model.createSession({ nCtx: 32 });
      await s.eval(TOKENS);
      s.setMoe(SOFT2);
      expect(s.moe).toBe(SOFT2);
      expect(s.nPast).toBe(TOKENS.length);
      expect(s.moeStats()).toEqual([]);
      s.truncate(0);
      expect(await s.eval(TOKENS, { allLogits: true })).toEqual(soft2);
      expect(s.moeStats().map((l) => [l.tokens, l.meanExperts])).toEqual(s.moeStats().map(() => [TOKENS.length, 2]));
      expect(s.moeStats().length).toBeGreaterThan(0);

      // the cache survives a switch: the first half under one setting, then back, continues as if unswitched
      const half = TOKENS.length / 2;
      s.setMoe(undefined);
      s.truncate(0);
      await s.eval(TOKENS.slice(0, half));
      s.setMoe(HARD1);
      s.setMoe(undefined);
      const rest = await s.eval(TOKENS.slice(half), { allLogits: true });
      expect(rest).toEqual(own.subarray(half * model.hparams.nVocab));
      // a different setting after the switch changes the continuation but not what is cached
      s.truncate(half);
      s.setMoe(SOFT2);
      const mixed = await s.eval(TOKENS.slice(half), { allLogits: true });
      expect(mixed).not.toEqual(rest);
      expect(mixed).not.toEqual(soft2.subarray(half * model.hparams.nVocab));
    } finally {
      await model.dispose();
    }
  });

  it("rejects settings the model cannot run with the command-line messages, and keeps the old one", async () => {
    const model = await loadModel(moePath, { threads: 1 });
    try {
      for (const [moe, message] of [
        [{ mask: "soft", nExpert: 9 }, "--moe-n-expert 9: the model has only 8 experts"],
        [{ mask: "hard", nExpert: 5 }, "--moe-n-expert 5: the hard mask keeps at most the model's 4 experts per token (use --moe-mask soft for more)"],
        [{ mask: "soft", layers: new Map([[2, 1]]) }, "--moe-n-expert-layers: layer 2 out of range (the model has layers 0-1)"],
        [{ mask: "soft", cumP: 0 }, "--moe-cum-p: P must be in (0, 1], got 0"],
        [{ mask: "soft", nExpert: 1.5 }, "--moe-n-expert 1.5: must be a whole number"],
        [{ mask: "soft", layerCumP: new Map([[2, 0.5]]) }, "--moe-cum-p-layers: layer 2 out of range (the model has layers 0-1)"],
      ] as [MoeOptions, string][]) {
        // a UsageError (a TsmoeError), as the command-line flags give
        expect(() => model.createSession({ nCtx: 8, moe })).toThrow(new UsageError(message));
        const s = model.createSession({ nCtx: 8, moe: SOFT2 });
        expect(() => s.setMoe(moe)).toThrow(message);
        expect(s.moe).toBe(SOFT2);
      }
    } finally {
      await model.dispose();
    }
  });

  it("a dense model ignores the setting", async () => {
    const model = await loadModel(densePath, { threads: 1 });
    try {
      const plain = await model.createSession({ nCtx: 16 }).eval(TOKENS, { allLogits: true });
      const s = model.createSession({ nCtx: 16, moe: { mask: "soft", nExpert: 50 } });
      expect(await s.eval(TOKENS, { allLogits: true })).toEqual(plain);
      expect(s.moeStats()).toEqual([]);
    } finally {
      await model.dispose();
    }
  });
});

describe("bench grids", () => {
  it("load the model once per thread count and check every setting before measuring", async () => {
    const opened: number[] = [];
    const open: typeof openModel = (path, opts) => {
      opened.push(opts?.threads ?? 0);
      return openModel(path, opts);
    };
    const settings = [modelSetting(), ...countSettings([2, 1], ["soft", "hard"])];
    const plan = { model: moePath, overrideKv: [], settings, tests: [{ kind: "tg" as const, n: 2 }], reps: 1, nBatch: 8 };
    const rows = await runBench({ ...plan, threads: [1, 2] }, open);
    expect(opened).toEqual([1, 2]);
    expect(rows.map((r) => `${r.threads} ${r.setting.label}`)).toEqual(
      [1, 2].flatMap((t) => settings.map((s) => `${t} ${s.label}`)),
    );
    expect(rows.map((r) => r.meanExperts)).toEqual([4, 2, 1, 2, 1, 4, 2, 1, 2, 1]);
    // a bad setting anywhere in the grid fails before anything is measured
    const bad = [modelSetting(), ...countSettings([5], ["hard"])];
    const err = await runBench({ ...plan, settings: bad, threads: [1] }, open).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(/^--moe-n-expert 5: the hard mask keeps at most/);
  });
});
