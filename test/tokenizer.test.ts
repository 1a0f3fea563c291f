/**
 * Tokenizer tests: small generated vocabularies (always run), llama.cpp's tokenizer test vectors and the
 * fixture SentencePiece vocabulary from ../shared, and the `tsmoe tokenize` command.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { TsmoeError } from "../src/errors.ts";
import { vocabMetadata } from "../src/gguf/synthetic-vocab.ts";
import { GgufValueType, type MetaEntry } from "../src/gguf/types.ts";
import { writeGguf } from "../src/gguf/writer.ts";
import { hasCustomSplitter } from "../src/tokenizer/pre-split.ts";
import { preTokenizerFor } from "../src/tokenizer/pre-types.ts";
import { TokenStreamDecoder } from "../src/tokenizer/stream.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { byteToChar } from "../src/tokenizer/unicode.ts";
import { FIXTURES, HAVE_SHARED, SHARED_SKIP_MESSAGE, runCli } from "./helpers.ts";
import { loadTokenizer, readVocabCases } from "./tokenizer-helpers.ts";

const S = GgufValueType;
const toMap = (entries: MetaEntry[]) => new Map(entries.map((e) => [e.key, e]));

/** The generated SentencePiece vocabulary with some entries replaced / added. */
function spmMeta(changes: MetaEntry[] = []): Map<string, MetaEntry> {
  const m = toMap(vocabMetadata(700));
  for (const e of changes) m.set(e.key, e);
  return m;
}

/** A tiny byte-level BPE vocabulary: the 256 byte characters, a few merges, an "<|endoftext|>" control token. */
function bpeMeta(pre: string, extra: MetaEntry[] = []): Map<string, MetaEntry> {
  const tokens = Array.from({ length: 256 }, (_, b) => byteToChar(b));
  const merges = ["Ġ t", "h e", "Ġt he", "Ġ ,", "l l", "ll o"];
  tokens.push("Ġt", "he", "Ġthe", "Ġ,", "ll", "llo", "<|endoftext|>");
  const types = tokens.map((t) => (t === "<|endoftext|>" ? 3 : 1));
  return toMap([
    { key: "tokenizer.ggml.model", type: S.STRING, value: "gpt2" },
    { key: "tokenizer.ggml.pre", type: S.STRING, value: pre },
    { key: "tokenizer.ggml.tokens", type: S.ARRAY, arrayType: S.STRING, value: tokens },
    { key: "tokenizer.ggml.token_type", type: S.ARRAY, arrayType: S.INT32, value: types },
    { key: "tokenizer.ggml.merges", type: S.ARRAY, arrayType: S.STRING, value: merges },
    { key: "tokenizer.ggml.bos_token_id", type: S.UINT32, value: tokens.length - 1 },
    { key: "tokenizer.ggml.eos_token_id", type: S.UINT32, value: tokens.length - 1 },
    ...extra,
  ]);
}

describe("SentencePiece tokenizer (generated vocabulary)", () => {
  const tok = Tokenizer.fromMetadata(spmMeta());
  const id = (piece: string) => tok.vocab.tokenToId.get(piece) as number;

  it("adds BOS as the metadata asks, a space prefix, and merges by score", () => {
    expect(tok.nVocab).toBe(700);
    expect([tok.bos, tok.eos, tok.unk, tok.pad]).toEqual([1, 2, 0, null]);
    const ids = tok.tokenize("the cat");
    expect(ids[0]).toBe(1);
    expect(ids.slice(1).map((i) => tok.tokenText(i))).toEqual(["▁t", "he", "▁c", "at"]); // "▁t" outranks "he"; no 3-letter pieces
    expect(tok.tokenize("the cat", { addSpecial: false })).toEqual(ids.slice(1));
    expect(tok.tokenize("")).toEqual([1]);
    expect(tok.tokenize("", { addSpecial: false })).toEqual([]);
  });

  it("falls back to byte tokens for characters the vocabulary lacks", () => {
    const ids = tok.tokenize("é", { addSpecial: false });
    expect(ids).toEqual([id("▁"), 3 + 0xc3, 3 + 0xa9]);
    expect(tok.detokenize(ids)).toBe("é");
  });

  it("recognises control-token text only with parseSpecial, with a space prefix after it", () => {
    const plain = tok.tokenize("a</s>b", { addSpecial: false });
    expect(plain).not.toContain(2);
    const parsed = tok.tokenize("a</s>b", { addSpecial: false, parseSpecial: true });
    expect(parsed.map((i) => tok.tokenText(i))).toEqual(["▁a", "</s>", "▁b"]);
    expect(tok.detokenize(parsed)).toBe("a b");
    expect(tok.detokenize(parsed, { special: true })).toBe("a</s> b");
  });

  it("detokenizes like llama.cpp: leading space removed, BOS/EOS optional", () => {
    expect(tok.detokenize(tok.tokenize("  two spaces", { addSpecial: false }))).toBe("  two spaces");
    // after BOS the prefix space stays, as in llama.cpp
    const ids = tok.tokenize("  two spaces");
    expect(tok.detokenize(ids)).toBe("   two spaces");
    expect(tok.detokenize(ids, { special: true })).toBe("<s>   two spaces");
    expect(tok.detokenize(ids, { special: true, removeSpecial: true })).toBe("   two spaces");
    expect(tok.tokenToPiece(1)).toBe("<s>");
    expect(tok.tokenToPiece(1, { special: false })).toBe("");
    expect(() => tok.tokenToPiece(700)).toThrow(TsmoeError);
  });

  it("adds EOS when add_eos_token is set and knows end-of-generation tokens", () => {
    const t = Tokenizer.fromMetadata(spmMeta([{ key: "tokenizer.ggml.add_eos_token", type: S.BOOL, value: true }]));
    const ids = t.tokenize("x");
    expect([ids[0], ids.at(-1)]).toEqual([1, 2]);
    expect(t.isEog(2)).toBe(true);
    expect(t.isEog(1)).toBe(false);
  });

  it("strips whitespace after special tokens for phi-3 models (rstrip)", () => {
    const base = spmMeta();
    const tokens = [...(base.get("tokenizer.ggml.tokens")?.value as string[])];
    const types = [...(base.get("tokenizer.ggml.token_type")?.value as number[])];
    tokens[699] = "<|user|>";
    types[699] = 4; // USER_DEFINED: split out even without parseSpecial
    const meta = spmMeta([
      { key: "tokenizer.ggml.tokens", type: S.ARRAY, arrayType: S.STRING, value: tokens },
      { key: "tokenizer.ggml.token_type", type: S.ARRAY, arrayType: S.INT32, value: types },
    ]);
    const plain = Tokenizer.fromMetadata(meta).tokenize("<|user|>  hi", { addSpecial: false });
    meta.set("general.name", { key: "general.name", type: S.STRING, value: "Phi3" });
    const phi = Tokenizer.fromMetadata(meta).tokenize("<|user|>  hi", { addSpecial: false });
    expect(plain[0]).toBe(699);
    expect(phi[0]).toBe(699);
    expect(Tokenizer.fromMetadata(meta).detokenize(plain)).toBe("<|user|>   hi");
    expect(Tokenizer.fromMetadata(meta).detokenize(phi)).toBe("<|user|> hi");
  });

  it("streams complete UTF-8 characters only", () => {
    const ids = tok.tokenize("aé€b", { addSpecial: false });
    const dec = new TokenStreamDecoder(tok);
    const out = ids.map((i) => dec.push(i));
    expect(out.join("") + dec.flush()).toBe(" aé€b"); // raw pieces: the SentencePiece space prefix stays
    // every emitted chunk is whole characters: no replacement characters anywhere
    expect(out.some((s) => s.includes("\ufffd"))).toBe(false);
    // the two bytes of "é" give "" then "é"
    const eBytes = [3 + 0xc3, 3 + 0xa9];
    const d2 = new TokenStreamDecoder(tok);
    expect(eBytes.map((i) => d2.push(i))).toEqual(["", "é"]);
    const d3 = new TokenStreamDecoder(tok);
    expect(d3.push(3 + 0xc3) + d3.flush()).toBe("\ufffd");
  });
});

describe("byte-level BPE tokenizer (generated vocabulary)", () => {
  it("applies merges by rank within pre-tokenized words", () => {
    const tok = Tokenizer.fromMetadata(bpeMeta("gpt-2"));
    const text = (ids: number[]) => ids.map((i) => tok.tokenText(i));
    expect(text(tok.tokenize(" the hello", { addSpecial: false }))).toEqual(["Ġthe", "Ġ", "he", "llo"]);
    expect(tok.addBos).toBe(false);
    expect(tok.tokenize("x")).toEqual([0x78]); // byte b is token b in this vocabulary
  });

  it("recognises control tokens with parseSpecial and cleans up spaces when detokenizing", () => {
    const tok = Tokenizer.fromMetadata(bpeMeta("gpt-2"));
    const eot = tok.nVocab - 1;
    expect(tok.tokenize("a<|endoftext|>", { parseSpecial: true })).toEqual([0x61, eot]);
    expect(tok.tokenize("a<|endoftext|>", { parseSpecial: false })).not.toContain(eot);
    expect(tok.eot).toBe(eot);
    expect(tok.isEog(eot)).toBe(true);
    expect(tok.detokenize(tok.tokenize("a , b 's c"))).toBe("a, b's c");
    const qwen = Tokenizer.fromMetadata(bpeMeta("qwen2"));
    expect(qwen.detokenize(qwen.tokenize("a , b"))).toBe("a , b");
  });

  it("llama-bpe: adds BOS by default and keeps whole-word tokens without merging", () => {
    const tok = Tokenizer.fromMetadata(bpeMeta("llama-bpe"));
    expect(tok.addBos).toBe(true);
    expect(tok.tokenize("x")).toEqual([tok.bos, 0x78]);
  });

  it("uses the hand-written splitters for the expressions llama.cpp has them for", () => {
    for (const pre of ["gpt-2", "llama-bpe", "qwen2", "qwen35", "glm4", "olmo", "mpt"]) {
      expect(preTokenizerFor(pre).expressions.every(hasCustomSplitter), pre).toBe(true);
    }
    expect(preTokenizerFor("gpt-4o").expressions.some(hasCustomSplitter)).toBe(false);
    expect(preTokenizerFor(undefined).name).toBe("default");
  });

  it("rejects unknown pre-tokenizers and tokenizer models by name", () => {
    expect(() => Tokenizer.fromMetadata(bpeMeta("no-such-pre"))).toThrow(/no-such-pre/);
    const m = bpeMeta("gpt-2");
    m.set("tokenizer.ggml.model", { key: "tokenizer.ggml.model", type: S.STRING, value: "bert" });
    expect(() => Tokenizer.fromMetadata(m)).toThrow(/'bert'/);
    m.delete("tokenizer.ggml.model");
    expect(() => Tokenizer.fromMetadata(m)).toThrow(TsmoeError);
  });
});

describe("tsmoe tokenize (generated model file)", () => {
  const dir = mkdtempSync(join(tmpdir(), "tsmoe-tokcli-"));
  const model = join(dir, "vocab.gguf");
  writeGguf(model, [{ key: "general.architecture", type: S.STRING, value: "llama" }, ...vocabMetadata(700)], []);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const tok = Tokenizer.fromMetadata(spmMeta());

  it("prints ids and pieces like llama-tokenize", () => {
    const r = runCli(["tokenize", "-m", model, "-p", "the cat"]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const ids = tok.tokenize("the cat");
    expect(r.stdout).toBe(ids.map((i) => `${String(i).padStart(6)} -> '${tok.tokenToPiece(i)}'\n`).join(""));
  });

  it("--ids, --no-bos, -f, escapes and special-token parsing", () => {
    expect(runCli(["tokenize", "-m", model, "-p", "the cat", "--ids"]).stdout).toBe(`[${tok.tokenize("the cat").join(", ")}]\n`);
    expect(runCli(["tokenize", "-m", model, "-p", "the cat", "--ids", "--no-bos"]).stdout).toBe(
      `[${tok.tokenize("the cat", { addSpecial: false }).join(", ")}]\n`,
    );
    const file = join(dir, "prompt.txt");
    writeFileSync(file, "a\\nb\n");
    expect(runCli(["tokenize", "-m", model, "-f", file, "--ids"]).stdout).toBe(`[${tok.tokenize("a\nb\n").join(", ")}]\n`);
    expect(runCli(["tokenize", "-m", model, "-f", file, "--ids", "--no-escape"]).stdout).toBe(`[${tok.tokenize("a\\nb\n").join(", ")}]\n`);
    expect(runCli(["tokenize", "-m", model, "--stdin", "--ids", "--show-count"], { input: "x y" }).stdout).toBe(
      `[${tok.tokenize("x y").join(", ")}]\nTotal number of tokens: ${tok.tokenize("x y").length}\n`,
    );
    expect(runCli(["tokenize", "-m", model, "-p", "a</s>", "--ids"]).stdout).toBe(
      `[${tok.tokenize("a</s>", { parseSpecial: true }).join(", ")}]\n`,
    );
    expect(runCli(["tokenize", "-m", model, "-p", "a</s>", "--ids", "--no-parse-special"]).stdout).toBe(
      `[${tok.tokenize("a</s>").join(", ")}]\n`,
    );
  });

  it("reports bad input as one line", () => {
    const none = runCli(["tokenize", "-m", model]);
    expect(none.status).toBe(1);
    expect(none.stderr).toBe("error: must specify one of: --stdin, --file or --prompt\n");
    const missing = runCli(["tokenize", "-m", join(dir, "nope.gguf"), "-p", "x"]);
    expect(missing.status).toBe(1);
    expect(missing.stderr.split("\n").filter(Boolean)).toHaveLength(1);
    expect(missing.stderr.startsWith("error: ")).toBe(true);
  });
});

if (!HAVE_SHARED) console.warn(SHARED_SKIP_MESSAGE);

describe.skipIf(!HAVE_SHARED)("llama.cpp tokenizer test vectors (../shared/fixtures/vocab)", () => {
  const dir = join(FIXTURES, "vocab");
  const files = HAVE_SHARED ? readdirSync(dir).filter((f) => f.endsWith(".gguf.inp")).map((f) => f.slice(0, -4)) : [];
  const counts: string[] = [];
  afterAll(() => console.log(`llama.cpp test vectors passed: ${counts.join(", ")}`));

  for (const f of files) {
    it(f, async ({ skip }) => {
      const path = join(dir, f);
      let tok: Tokenizer;
      try {
        tok = await loadTokenizer(path);
      } catch (e) {
        // WordPiece (BERT) vocabularies are not covered
        if (e instanceof TsmoeError && /'bert'/.test(e.message)) {
          counts.push(`${f}: skipped (WordPiece, not supported)`);
          return skip(`${f}: WordPiece (bert) tokenizers are not supported`);
        }
        throw e;
      }
      const cases = readVocabCases(path);
      const failures = cases.filter((c) => JSON.stringify(tok.tokenize(c.text, { addSpecial: false })) !== JSON.stringify(c.ids));
      counts.push(`${f} ${cases.length - failures.length}/${cases.length}`);
      expect(failures.map((c) => c.text)).toEqual([]);
      expect(cases.length).toBeGreaterThan(30);
    });
  }

  it("fixture SentencePiece vocabulary: s64 text gives llama-tokenize's ids", async () => {
    const seq = JSON.parse(readFileSync(join(FIXTURES, "sequences.json"), "utf8")).s64;
    const tok = await loadTokenizer(join(FIXTURES, "llama", "llama.F32.gguf"));
    const ids = tok.tokenize(seq.text);
    expect(ids.slice(0, 64)).toEqual(seq.tokens);
    expect(ids.length).toBe(seq.n_tokens_full_text);
    expect(ids.slice(0, 64).map((i: number) => tok.tokenText(i))).toEqual(seq.pieces);
    // llama.cpp keeps the space of the first piece after BOS; without BOS it is removed
    expect(tok.detokenize(ids)).toBe(" " + seq.text);
    expect(tok.detokenize(ids.slice(1))).toBe(seq.text);
    // the same through the command line, and the same for another fixture model sharing the vocabulary
    const cli = runCli(["tokenize", "-m", join(FIXTURES, "qwen3moe", "qwen3moe.Q4_K_M.gguf"), "-p", seq.text, "--ids"]);
    expect(cli.stdout).toBe(`[${ids.join(", ")}]\n`);
  });
});
