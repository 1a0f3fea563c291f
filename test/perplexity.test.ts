/**
 * `tsmoe perplexity` on a generated model: the printed perplexity equals an independent float64
 * computation with llama.cpp's chunking; KLD base files written and compared; one-line errors.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildProgram } from "../src/cli/main.ts";
import { TsmoeError } from "../src/errors.ts";
import { KldBaseReader } from "../src/eval/kld-file.ts";
import { writeRandomModel } from "../src/gguf/random-model.ts";
import { loadModel } from "../src/model/load.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { runCli } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "tsmoe-ppl-"));
const modelPath = join(dir, "moe.gguf");
const textPath = join(dir, "text.txt");
const N_CTX = 32;

/** Seeded English-like text. */
function sampleText(words: number, seed: number): string {
  const vocab = "the a little cat dog ran over hill and then saw big red house where old man lived with his small bird".split(" ");
  let s = seed >>> 0;
  const out: string[] = [];
  for (let i = 0; i < words; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(vocab[s % vocab.length]);
    if (s % 11 === 0) out[out.length - 1] += ".";
  }
  return out.join(" ") + "\n";
}

beforeAll(async () => {
  await writeRandomModel(modelPath, {
    arch: "qwen3moe",
    seed: 5,
    nLayer: 2,
    nEmbd: 64,
    nHead: 4,
    nHeadKv: 2,
    headDim: 16,
    nExpert: 8,
    nExpertUsed: 4,
    nFfExp: 16,
    nVocab: 512,
    nCtx: 256,
  });
  writeFileSync(textPath, sampleText(120, 1));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Perplexity as defined by llama.cpp (chunks of n_ctx, BOS first, second half scored), in float64. */
async function referencePerplexity(chunks: number): Promise<{ ppl: number; perChunk: number[] }> {
  const model = await loadModel(modelPath);
  const tok = Tokenizer.fromMetadata(model.metadata);
  const tokens = tok.tokenize(sampleText(120, 1), { addSpecial: true });
  const nChunk = Math.min(chunks, Math.floor(tokens.length / N_CTX));
  const session = model.createSession({ nCtx: N_CTX });
  const V = model.hparams.nVocab;
  let nll = 0;
  let count = 0;
  const perChunk: number[] = [];
  for (let c = 0; c < nChunk; c++) {
    const chunk = tokens.slice(c * N_CTX, (c + 1) * N_CTX);
    chunk[0] = tok.bos!;
    session.truncate(0);
    const logits = await session.eval(chunk, { allLogits: true });
    for (let j = N_CTX / 2; j < N_CTX - 1; j++) {
      const row = logits.subarray(j * V, (j + 1) * V);
      let max = -Infinity;
      for (const v of row) max = Math.max(max, v);
      let sum = 0;
      for (const v of row) sum += Math.exp(v - max);
      nll += -(row[tokens[c * N_CTX + j + 1]] - max - Math.log(sum));
      count++;
    }
    perChunk.push(Math.exp(nll / count));
  }
  await model.dispose();
  return { ppl: Math.exp(nll / count), perChunk };
}

/** the numbers of a KLD chunk line: chunk, PPL ± err, ln ratio ± err, KLD ± err, RMS Δp ± err, same top ± err */
function numbers(line: string): number[] {
  return (line.match(/-?\d+(?:\.\d+)?/g) ?? []).map(Number);
}

describe("tsmoe perplexity (generated model)", () => {
  it("prints llama.cpp's running estimates and final line, equal to an independent computation", async () => {
    const r = runCli(["perplexity", "-m", modelPath, "-f", textPath, "-c", String(N_CTX), "--chunks", "3"]);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.status).toBe(0);
    const est = [...r.stdout.matchAll(/\[(\d+)\](\d+\.\d{4}),/g)].map((m) => Number(m[2]));
    expect(est.length).toBe(3);
    const final = /Final estimate: PPL = (\d+\.\d{4}) \+\/- (\d+\.\d{5})/.exec(r.stdout);
    expect(final).not.toBeNull();
    const ref = await referencePerplexity(3);
    expect(Number(final![1])).toBeCloseTo(ref.ppl, 1);
    est.forEach((v, i) => expect(Math.abs(v / ref.perChunk[i] - 1)).toBeLessThan(1e-4));
    expect(Number(final![2])).toBeGreaterThan(0);
    expect(r.stderr).toMatch(/mean experts per token: 4\.00/);
  });

  it("writes a KLD base file and compares runs against it", () => {
    const base = join(dir, "base.kld");
    const w = runCli(["perplexity", "-m", modelPath, "-f", textPath, "-c", String(N_CTX), "--kl-divergence-base", base]);
    expect(w.status).toBe(0);
    const reader = new KldBaseReader(base);
    expect(reader.header.nCtx).toBe(N_CTX);
    expect(reader.header.nVocab).toBe(512);
    const nChunk = reader.header.nChunk;
    expect(nChunk).toBeGreaterThanOrEqual(2);
    reader.close();
    const final = Number(/Final estimate: PPL = (\d+\.\d+)/.exec(w.stdout)![1]);

    // the same model against its own base: KLD ~ 0 (quantisation only), same top token everywhere
    const same = runCli(["perplexity", "-m", modelPath, "--kl-divergence-base", base, "--kl-divergence"]);
    expect(same.status).toBe(0);
    const lines = same.stdout.split("\n").filter((l) => /^\s+\d+\s+\d/.test(l));
    expect(lines.length).toBe(nChunk);
    const last = numbers(lines[lines.length - 1]);
    expect(Number(last[1])).toBeCloseTo(final, 1); // PPL(Q)
    expect(Math.abs(Number(last[5]))).toBeLessThan(1e-4); // mean KLD
    expect(Number(last[9])).toBe(100); // same top p %

    // fewer experts: a positive KLD and fewer identical top tokens
    const less = runCli(["perplexity", "-m", modelPath, "--kl-divergence-base", base, "--kl-divergence", "--moe-n-expert", "1"]);
    expect(less.status).toBe(0);
    const l2 = less.stdout.split("\n").filter((l) => /^\s+\d+\s+\d/.test(l));
    const f2 = numbers(l2[l2.length - 1]);
    expect(Number(f2[5])).toBeGreaterThan(0.001);
    expect(Number(f2[9])).toBeLessThan(100);
    expect(less.stderr).toMatch(/mean experts per token: 1\.00/);
  });

  it("gives one-line errors for bad input", async () => {
    const cases: [string[], RegExp][] = [
      [["-f", textPath, "-c", "4096"], /you need at least 8192 tokens/],
      [["-f", textPath, "-c", "abc"], /--ctx-size: expected an integer/],
      [["-f", textPath, "--chunks", "0"], /--chunks/],
      [["--kl-divergence"], /--kl-divergence needs --kl-divergence-base/],
      [["--kl-divergence", "--kl-divergence-base", textPath], /does not look like a file containing log-probabilities/],
      [[], /no text: pass -f FILE/],
      [["-f", join(dir, "missing.txt")], /cannot read/],
      [["-f", textPath, "--moe-n-expert", "9"], /only 8 experts/],
    ];
    // as a user runs it: one line on stderr, exit code 1
    const r = runCli(["perplexity", "-m", modelPath, ...cases[0][0]]);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n").length, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/^error: /);
    expect(r.stderr).toMatch(cases[0][1]);
    // the others in this process: one-line TsmoeErrors (which the CLI prints the same way)
    for (const [args, re] of cases.slice(1)) {
      let err: unknown;
      try {
        await buildProgram().parseAsync(["node", "tsmoe", "perplexity", "-m", modelPath, ...args]);
      } catch (e) {
        err = e;
      }
      expect(err, args.join(" ")).toBeInstanceOf(TsmoeError);
      expect((err as Error).message).not.toContain("\n");
      expect((err as Error).message).toMatch(re);
    }
  });

  it("--help lists every option", () => {
    const r = runCli(["perplexity", "--help"]);
    expect(r.status).toBe(0);
    for (const flag of ["--model", "--file", "--ctx-size", "--batch-size", "--chunks", "--threads", "--kl-divergence-base", "--kl-divergence", "--moe-n-expert", "--moe-mask", "--moe-cum-p", "--moe-ser", "--override-kv"])
      expect(r.stdout).toContain(flag);
  });
});
