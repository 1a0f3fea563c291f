/**
 * Differential test against llama.cpp (through node-llama-cpp, vocabulary-only loads): seeded random texts
 * tokenize to the same ids (with and without special-token parsing), and ids detokenize to the same text,
 * on every SentencePiece / byte-level BPE vocabulary in ../shared plus copies of the GPT-2 vocabulary with
 * other `tokenizer.ggml.pre` values (pre-tokenizers that have no vocabulary file of their own).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, type Llama, LlamaLogLevel, type Token } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { ATTR } from "../src/tokenizer/vocab.ts";
import { FIXTURES, HAVE_SHARED, SHARED, SHARED_SKIP_MESSAGE } from "./helpers.ts";
import { loadTokenizer, randomTexts, rng, writeWithPre } from "./tokenizer-helpers.ts";

const VOCAB = join(FIXTURES, "vocab");
const FILES = [
  "ggml-vocab-llama-spm.gguf", "ggml-vocab-phi-3.gguf", "ggml-vocab-baichuan.gguf", "ggml-vocab-gpt-2.gguf",
  "ggml-vocab-gpt-neox.gguf", "ggml-vocab-mpt.gguf", "ggml-vocab-falcon.gguf", "ggml-vocab-starcoder.gguf",
  "ggml-vocab-refact.gguf", "ggml-vocab-deepseek-llm.gguf", "ggml-vocab-deepseek-coder.gguf",
].map((f) => join(VOCAB, f));
const FIXTURE_SPM = join(FIXTURES, "llama", "llama.F32.gguf");
const TINY_MOE = join(SHARED, "models", "tiny-moe-32x8-q8_0.gguf");
const TINY_MOE_EVAL = join(SHARED, "models", "eval.txt");
/** pre-tokenizers exercised on a copy of the GPT-2 vocabulary */
const REWRITTEN_PRES = ["llama-bpe", "qwen2", "qwen35", "glm4", "gpt-4o", "olmo", "deepseek-v3", "tekken", "poro-chat", "viking", "chameleon",
  "bailingmoe", "seed-coder", "laguna", "minicpm5", "jais-2", "youtu", "exaone-moe", "granite-embed-multi-97m", "afmoe", "tiny_aya", "kimi-k2"];
const TEXTS_PER_VOCAB = 70;

if (!HAVE_SHARED) console.warn(SHARED_SKIP_MESSAGE);

describe.skipIf(!HAVE_SHARED)("tokenizer agrees with llama.cpp (node-llama-cpp)", () => {
  let llama: Llama;
  let tmp: string;
  const totals = { texts: 0, tokenizations: 0, roundTrips: 0 };

  beforeAll(async () => {
    llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.disabled });
    tmp = mkdtempSync(join(tmpdir(), "tsmoe-tok-"));
  });
  afterAll(async () => {
    await llama?.dispose();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    console.log(`differential: ${totals.texts} texts, ${totals.tokenizations} tokenizations identical, ${totals.roundTrips} exact round trips`);
  });

  async function compare(path: string, label: string, seed: number): Promise<void> {
    const ours: Tokenizer = await loadTokenizer(path);
    const theirs = await llama.loadModel({ modelPath: path, vocabOnly: true });
    try {
      expect({ bos: ours.bos, eos: ours.eos, eot: ours.eot, nl: ours.nl }, `${label}: special ids`).toEqual({
        bos: theirs.tokens.bos, eos: theirs.tokens.eos, eot: theirs.tokens.eot, nl: theirs.tokens.nl,
      });
      const eogOurs: number[] = [];
      const eogTheirs: number[] = [];
      for (let id = 0; id < ours.nVocab; id++) {
        if (ours.isEog(id)) eogOurs.push(id);
        if (theirs.isEogToken(id as Token)) eogTheirs.push(id);
      }
      expect(eogOurs, `${label}: end-of-generation tokens`).toEqual(eogTheirs);

      // special-token text from this vocabulary goes into the random texts
      const r = rng(seed);
      const specials: string[] = [];
      for (let id = 0; id < ours.nVocab && specials.length < 400; id++) if (ours.attr(id) & (ATTR.CONTROL | ATTR.USER_DEFINED | ATTR.UNKNOWN)) specials.push(ours.tokenText(id));
      const chosen = Array.from({ length: Math.min(12, specials.length) }, () => specials[Math.floor(r() * specials.length)]);
      const texts = randomTexts(seed, TEXTS_PER_VOCAB, [...chosen, "<s>", "</s>", "<|endoftext|>", "<unk>"]);

      const mismatches: string[] = [];
      for (const text of texts) {
        for (const parseSpecial of [false, true]) {
          const a = ours.tokenize(text, { addSpecial: false, parseSpecial });
          const b = Array.from(theirs.tokenize(text, parseSpecial));
          if (JSON.stringify(a) !== JSON.stringify(b)) {
            mismatches.push(`tokenize(${JSON.stringify(text)}, parseSpecial=${parseSpecial}): ours [${a.join(" ")}] llama.cpp [${b.join(" ")}]`);
            continue;
          }
          totals.tokenizations++;
          for (const special of [false, true]) {
            const da = ours.detokenize(a, { special });
            const db = theirs.detokenize(b, special);
            if (da !== db) mismatches.push(`detokenize(${JSON.stringify(text)}, special=${special}): ours ${JSON.stringify(da)} llama.cpp ${JSON.stringify(db)}`);
            else if (da === text) totals.roundTrips++;
          }
        }
      }
      // every token's text
      for (let k = 0; k < 800; k++) {
        const id = Math.floor(r() * ours.nVocab);
        const a = ours.detokenize([id], { special: true });
        const b = theirs.detokenize([id as Token], true);
        if (a !== b) mismatches.push(`piece of ${id}: ours ${JSON.stringify(a)} llama.cpp ${JSON.stringify(b)}`);
      }
      // without clean-up of spaces (a lossy llama.cpp step) and without special-token text, text comes back exactly
      if (!ours.vocab.cleanSpaces) {
        for (const text of randomTexts(seed + 7, 30, [])) {
          const back = ours.detokenize(ours.tokenize(text, { addSpecial: false }), { special: true });
          if (back !== text) mismatches.push(`round trip of ${JSON.stringify(text)} gave ${JSON.stringify(back)}`);
        }
      }
      totals.texts += texts.length;
      expect(mismatches.slice(0, 10), `${label}: ${mismatches.length} mismatches`).toEqual([]);
    } finally {
      await theirs.dispose();
    }
  }

  FILES.forEach((path, i) => {
    it(path.split("/").pop() as string, () => compare(path, path, 1000 + i), 120_000);
  });
  it("fixture SentencePiece vocabulary (llama.F32.gguf)", () => compare(FIXTURE_SPM, "fixture", 999), 120_000);
  it.skipIf(!existsSync(TINY_MOE))("trained tiny-moe model: random texts and its whole evaluation text", async () => {
    await compare(TINY_MOE, "tiny-moe", 998);
    const text = readFileSync(TINY_MOE_EVAL, "utf8");
    const ours = (await loadTokenizer(TINY_MOE)).tokenize(text);
    const theirs = await llama.loadModel({ modelPath: TINY_MOE, vocabOnly: true });
    try {
      const ref = [theirs.tokens.bos as number, ...Array.from(theirs.tokenize(text, false))];
      expect(ours.length).toBe(ref.length);
      expect(ours.findIndex((id, i) => id !== ref[i])).toBe(-1);
      console.log(`tiny-moe eval.txt: ${ours.length} tokens identical to llama.cpp`);
    } finally {
      await theirs.dispose();
    }
  }, 120_000);
  REWRITTEN_PRES.forEach((pre, i) => {
    it(`gpt-2 vocabulary with tokenizer.ggml.pre = ${pre}`, async () => {
      const path = join(tmp, `gpt2-${pre}.gguf`);
      writeWithPre(join(VOCAB, "ggml-vocab-gpt-2.gguf"), path, pre);
      const ours = await loadTokenizer(path);
      expect(ours.preTokenizer).toBe(pre);
      await compare(path, pre, 2000 + i);
    }, 120_000);
  });
});
