/**
 * The generation loop (src/sample/generate.ts): stops at an end-of-generation token, or with ignoreEos
 * (llama-cli --ignore-eos) never samples one and runs to -n. A scripted session makes the end-of-text
 * token the most likely one at every step.
 */
import { describe, expect, it } from "vitest";
import { join } from "node:path";
import { loadGguf } from "../src/gguf/reader.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { Sampler } from "../src/sample/sampler.ts";
import { emptyTimings, generate } from "../src/sample/generate.ts";
import type { Session } from "../src/model/api.ts";
import { ROOT } from "./helpers.ts";

/** Logits where the end-of-text token wins, then `runnerUp`, then everything else. */
function scriptedSession(nVocab: number, eos: number, runnerUp: number): Session & { evals: number } {
  const s = {
    nPast: 0,
    nCtx: 4096,
    evals: 0,
    async eval(tokens: number[]): Promise<Float32Array> {
      s.nPast += tokens.length;
      s.evals++;
      const logits = new Float32Array(nVocab);
      logits[eos] = 10;
      logits[runnerUp] = 5;
      return logits;
    },
    truncate(n: number) {
      s.nPast = Math.min(s.nPast, n);
    },
    moe: undefined,
    setMoe() {},
    moeStats: () => [],
    resetStats() {},
  };
  return s;
}

describe("generate", async () => {
  const tokenizer = Tokenizer.fromMetadata((await loadGguf(join(ROOT, "models", "tiny-moe-32x8-q8_0.gguf"), { headerOnly: true })).metadata);
  const eos = tokenizer.eos!;
  const runnerUp = eos === 65 ? 66 : 65;

  it("stops at the end-of-text token", async () => {
    expect(tokenizer.isEog(eos)).toBe(true);
    const session = scriptedSession(tokenizer.nVocab, eos, runnerUp);
    const r = await generate(session, new Sampler({ temp: 0 }), tokenizer, [1, 2], { nPredict: 20, write: () => {}, timings: emptyTimings() });
    expect(r).toEqual({ tokens: [], stop: "eog" });
  });

  it("with ignoreEos never samples an end-of-generation token and runs to nPredict", async () => {
    const session = scriptedSession(tokenizer.nVocab, eos, runnerUp);
    const r = await generate(session, new Sampler({ temp: 0 }), tokenizer, [1, 2], { nPredict: 20, ignoreEos: true, write: () => {}, timings: emptyTimings() });
    expect(r.stop).toBe("n_predict");
    expect(r.tokens).toEqual(new Array(20).fill(runnerUp));
    // with sampling too: no end-of-generation token among many draws
    const r2 = await generate(scriptedSession(tokenizer.nVocab, eos, runnerUp), new Sampler({ temp: 1, seed: 3, topK: 0, topP: 1, minP: 0 }), tokenizer, [1], {
      nPredict: 200,
      ignoreEos: true,
      write: () => {},
      timings: emptyTimings(),
    });
    expect(r2.tokens).toHaveLength(200);
    expect(r2.tokens.some((t) => tokenizer.isEog(t))).toBe(false);
  });
});
