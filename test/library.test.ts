/**
 * The library API (src/index.ts) on the embedded model: generation equals the CLI's, sessions continue
 * where they stopped, per-session MoE routing, the CLI's option checks as typed errors, stopping and aborting.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EMBEDDED_MODEL, loadModel, TsmoeError, UsageError, type Model } from "../src/index.ts";
import { runCli } from "./helpers.ts";

const PROMPT = "Once upon a time";

async function text(pieces: AsyncIterable<string>): Promise<string> {
  let s = "";
  for await (const p of pieces) s += p;
  return s;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe("library API", () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(undefined, { threads: 1 });
  });
  afterAll(async () => {
    await model?.dispose();
  });

  it("loads the embedded model by default and describes it", () => {
    expect(model.info).toMatchObject({ path: EMBEDDED_MODEL, arch: "qwen3moe", nExpert: 32, nExpertUsed: 8, nLayer: 6, nVocab: 4096 });
    expect(model.info.nParams).toBeGreaterThan(5_000_000);
  });

  it("tokenizes and detokenizes as the CLI does", () => {
    const ids = model.tokenize(PROMPT);
    const cli = runCli(["tokenize", "-m", EMBEDDED_MODEL, "-p", PROMPT, "--ids"]);
    expect(cli.status).toBe(0);
    expect(JSON.stringify(ids).replace(/,/g, ", ")).toBe(cli.stdout.trim());
    expect(model.detokenize(ids, { removeSpecial: true }).trim()).toBe(PROMPT);
  });

  it("generates the CLI's text, greedy and seeded, with the same MoE setting", async () => {
    for (const [opts, flags] of [
      [{ temperature: 0 }, ["--temp", "0"]],
      [{ temperature: 0.8, seed: 7 }, ["--temp", "0.8", "-s", "7"]],
    ] as const) {
      const session = model.createSession({ moe: { nExpert: 4 }, nCtx: 256 });
      const got = await text(session.generate(PROMPT, { maxTokens: 24, ...opts }));
      const cli = runCli(["-p", PROMPT, "-n", "24", "-c", "256", "-t", "1", "--moe-n-expert", "4", ...flags]);
      expect(cli.status, cli.stderr).toBe(0);
      expect(got.length).toBeGreaterThan(0);
      expect(PROMPT + got + "\n").toBe(cli.stdout);
    }
  });

  it("continues a session where the last generation stopped (the last token included)", async () => {
    const a = model.createSession({ nCtx: 128 });
    const first = await text(a.generate(PROMPT, { maxTokens: 6, temperature: 0 }));
    expect(a.nPast).toBe(model.tokenize(PROMPT).length + 6);
    const all = model.tokenize(PROMPT + first);
    const next = model.tokenize(" and", { addSpecial: false });
    const continued = await a.evaluate(next);
    const fresh = await model.createSession({ nCtx: 128 }).evaluate([...all, ...next]);
    // same tokens in the cache (the text round-trips here), so the same logits
    expect(a.nPast).toBe(all.length + next.length);
    expect(maxAbsDiff(continued, fresh)).toBeLessThan(1e-4);
  });

  it("evaluates tokens: the last row, or every row", async () => {
    const ids = model.tokenize(PROMPT);
    const rows = await model.createSession().evaluate(ids, { all: true });
    const last = await model.createSession().evaluate(ids);
    expect(rows.length).toBe(ids.length * model.info.nVocab);
    expect(last.length).toBe(model.info.nVocab);
    expect(maxAbsDiff(rows.subarray(rows.length - last.length), last)).toBeLessThan(1e-4);
  });

  it("routes each session with its own MoE setting", async () => {
    const ids = model.tokenize(PROMPT);
    const base = await model.createSession().evaluate(ids);
    const k = await model.createSession({ moe: { nExpert: 8 } }).evaluate(ids);
    const two = model.createSession({ moe: { nExpert: 2, mask: "hard" } });
    const reduced = await two.evaluate(ids);
    expect(maxAbsDiff(base, k)).toBe(0);
    expect(maxAbsDiff(base, reduced)).toBeGreaterThan(1e-3);
    expect(two.moeStats().every((s) => s.meanExperts === 2)).toBe(true);
    const layered = model.createSession({ moe: { layers: { 0: 1, 5: 3 }, ser: { kmin: 1, t: 0.5 }, cumP: 0.9 } });
    await layered.evaluate(ids);
    expect(layered.moeStats()[0]!.meanExperts).toBe(1);
  });

  it("rejects bad MoE settings with the CLI's messages, as UsageErrors", () => {
    const cases: [unknown, string][] = [
      [{ nExpert: 0 }, "--moe-n-expert 0: must be at least 1"],
      [{ nExpert: 33 }, "--moe-n-expert 33: the model has only 32 experts"],
      [{ nExpert: 9, mask: "hard" }, "--moe-n-expert 9: the hard mask keeps at most the model's 8 experts per token (use --moe-mask soft for more)"],
      [{ nExpert: 2.5 }, "--moe-n-expert: expected an integer, got '2.5'"],
      [{ mask: "medium" }, "--moe-mask: expected soft or hard, got 'medium'"],
      [{ layers: "0-6:4" }, "--moe-n-expert-layers: layer 6 out of range (the model has layers 0-5)"],
      [{ cumP: 0 }, "--moe-cum-p: P must be in (0, 1], got 0"],
      [{ ser: "0,0.5" }, "--moe-ser: KMIN must be at least 1, got 0"],
      [{ nExperts: 4 }, "moe: unknown option 'nExperts' (expected nExpert, mask, layers, cumP, ser)"],
    ];
    for (const [moe, message] of cases) {
      let err: unknown;
      try {
        model.createSession({ moe: moe as never });
      } catch (e) {
        err = e;
      }
      expect(err, message).toBeInstanceOf(UsageError);
      expect((err as Error).message).toBe(message);
    }
  });

  it("stops generating when the loop is left, and throws the reason of an aborted signal", async () => {
    const s = model.createSession({ nCtx: 256 });
    // ends at maxTokens: its last token waits to be evaluated with the next call's tokens
    await text(s.generate(PROMPT, { maxTokens: 4, temperature: 0 }));
    const before = s.nPast;
    let pieces = 0;
    for await (const _ of s.generate(" and", { maxTokens: 100, temperature: 0 })) if (++pieces === 3) break;
    // the prompt, then three tokens (one piece each here): all evaluated, nothing left over
    const held = s.nPast;
    expect(held).toBe(before + model.tokenize(" and", { addSpecial: false }).length + 3);
    expect((await s.evaluate([1], { all: true })).length).toBe(model.info.nVocab);
    expect(s.nPast).toBe(held + 1);
    const ac = new AbortController();
    const run = async () => {
      for await (const _ of s.generate(" The", { maxTokens: 100, signal: ac.signal })) ac.abort(new Error("enough"));
    };
    await expect(run()).rejects.toThrow("enough");
    expect(s.nPast).toBeLessThan(held + 1 + 10);
    // the session is free again
    expect((await s.evaluate([1])).length).toBe(model.info.nVocab);
  });

  it("refuses a second use of a busy session, and any use after dispose", async () => {
    const other = await loadModel(undefined, { threads: 1 });
    const s = other.createSession();
    const it = s.generate(PROMPT, { maxTokens: 50 })[Symbol.asyncIterator]();
    await it.next();
    await expect(s.evaluate([1])).rejects.toThrow(/session is busy/);
    await it.return(undefined);
    await other.dispose();
    expect(() => other.tokenize("x")).toThrow(TsmoeError);
    await expect(s.evaluate([1])).rejects.toThrow("the model has been disposed");
  });

  it("fails with one line on a missing file", async () => {
    await expect(loadModel("/nonexistent/model.gguf")).rejects.toThrow(new TsmoeError("model file not found: /nonexistent/model.gguf"));
  });
});
