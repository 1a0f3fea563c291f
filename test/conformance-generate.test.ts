/**
 * Greedy generation: 32 tokens from a prompt, tsmoe (F32 KV cache, decoding one token at a time after the
 * prompt batch) against llama.cpp through node-llama-cpp (temperature 0, flash attention off, F32 KV
 * cache), token for token, on the F32 fixtures of ../shared/fixtures (skipped when absent) and on
 * generated random models (always run).
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getLlama, type Llama } from "node-llama-cpp";
import { writeRandomModel } from "../src/gguf/random-model.ts";
import { loadModel } from "../src/model/load.ts";
import { FIXTURES, HAVE_SHARED } from "./helpers.ts";
import { withLlamaCppContext } from "./model-helpers.ts";

const PROMPT = [1, 113, 455, 295, 39, 239, 417, 482, 458];
const N_GENERATE = 32;

let llama: Llama;
let dir: string;
beforeAll(async () => {
  llama = await getLlama({ gpu: false, build: "never", logLevel: "error" as never });
  dir = mkdtempSync(join(tmpdir(), "tsmoe-gen-"));
});
afterAll(async () => {
  await llama?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

async function llamaCppGreedy(path: string): Promise<number[]> {
  return withLlamaCppContext(llama, path, async (ctx) => {
    const out: number[] = [];
    for await (const token of ctx.getSequence().evaluate(PROMPT as never, { temperature: 0 })) {
      out.push(token as number);
      if (out.length === N_GENERATE) break;
    }
    return out;
  });
}

function argmax(v: Float32Array): number {
  let b = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[b]) b = i;
  return b;
}

async function tsmoeGreedy(path: string): Promise<number[]> {
  const model = await loadModel(path, { threads: 1 });
  try {
    const s = model.createSession({ nCtx: 64 });
    const out: number[] = [];
    let logits = await s.eval(PROMPT);
    while (out.length < N_GENERATE) {
      const next = argmax(logits);
      out.push(next);
      if (out.length < N_GENERATE) logits = await s.eval([next]);
    }
    return out;
  } finally {
    await model.dispose();
  }
}

const FIXTURE_FILES = ["llama", "llama-moe", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "olmoe"].map((f) => join(FIXTURES, f, `${f}.F32.gguf`));

describe.skipIf(!HAVE_SHARED)("greedy generation matches llama.cpp on the F32 fixtures", () => {
  for (const path of FIXTURE_FILES) {
    it(path.split("/").pop()!, async () => {
      expect(existsSync(path)).toBe(true);
      const ref = await llamaCppGreedy(path);
      const ours = await tsmoeGreedy(path);
      expect(ref.length).toBe(N_GENERATE);
      console.log(`${path.split("/").pop()}: ${ours.join(" ")}`);
      expect(ours).toEqual(ref);
    });
  }
});

describe("greedy generation matches llama.cpp on generated models", () => {
  for (const arch of ["llama", "qwen3moe"]) {
    it(arch, async () => {
      const path = await writeRandomModel(join(dir, `${arch}.gguf`), { arch, seed: 9 });
      const ref = await llamaCppGreedy(path);
      const ours = await tsmoeGreedy(path);
      expect(ref.length).toBe(N_GENERATE);
      expect(ours).toEqual(ref);
    });
  }
});
