/**
 * Rough edges of the command line found by trying it as a new user (issue 18), each checked by running
 * bin/tsmoe on the embedded model as a user would: thread caps, huge layer ranges, closed pipes, -n 0,
 * unwritable outputs, typo'd commands, defaults of -m.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { DEFAULT_MODEL } from "../src/cli/progress.ts";
import { loadGguf } from "../src/gguf/reader.ts";
import { loadModel } from "../src/model/load.ts";
import { BUILTIN_CHAT_TEMPLATES, chatTemplateFromOptions } from "../src/tokenizer/chat-builtin.ts";
import { renderChatTemplate } from "../src/tokenizer/chat.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { TsmoeError } from "../src/errors.ts";
import { ROOT, expectOneLineError, runCli } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "tsmoe-cli-fixes-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
/** 60 kB of the embedded model's evaluation text: its tokens listed take more than a pipe buffer (64 kB) */
const textPath = join(dir, "text.txt");
writeFileSync(textPath, readFileSync(join(ROOT, "models", "eval.txt"), "utf8").slice(0, 60_000));

/** Runs `bin/tsmoe ARGS | head ...` in bash; returns tsmoe's exit status and its stderr. */
function intoHead(args: string, head: string): { status: number; stderr: string; out: string } {
  const errPath = join(dir, "stderr.txt");
  const r = spawnSync("bash", ["-c", `"${process.execPath}" bin/tsmoe ${args} 2>"${errPath}" | head ${head}; exit \${PIPESTATUS[0]}`], { cwd: ROOT, encoding: "utf8" });
  return { status: r.status ?? -1, stderr: readFileSync(errPath, "utf8"), out: r.stdout };
}


describe("command-line limits", () => {
  it("refuses more threads than the machine has, in every command that takes -t", () => {
    const hw = availableParallelism();
    const re = new RegExp(`--threads: ${hw + 1} is more than the ${hw} hardware threads`);
    expectOneLineError(["-t", String(hw + 1), "-n", "1"], re);
    expectOneLineError(["bench", "-t", `1,${hw + 1}`, "-p", "0", "-n", "1"], re);
    expectOneLineError(["perplexity", "-t", "1000", "-f", "models/eval.txt"], /--threads: 1000 is more than/);
  });

  it("checks --moe-n-expert-layers ranges before expanding them", () => {
    expectOneLineError(["-n", "1", "--moe-n-expert-layers", "0-20000000:4"], /layer 20000000 out of range/);
    expectOneLineError(["-n", "1", "--moe-n-expert-layers", "0-5:4,6-4095:4"], /layer 6 out of range \(the model has layers 0-5\)/);
  });
});

describe("a closed stdout", () => {
  it("ends tokenize, perplexity --kl-divergence and run quietly with exit status 0", () => {
    const tok = intoHead(`tokenize -f "${textPath}"`, "-2");
    expect(tok.out.split("\n").length).toBe(3);
    expect(tok.stderr).toBe("");
    expect(tok.status).toBe(0);
    const base = join(dir, "base.kld");
    expect(runCli(["perplexity", "-f", textPath, "-c", "64", "--chunks", "3", "-t", "1", "--kl-divergence-base", base]).status).toBe(0);
    const kld = intoHead(`perplexity --kl-divergence-base "${base}" --kl-divergence --moe-n-expert 4 -t 1`, "-1");
    expect(kld.stderr).not.toMatch(/EPIPE|Error|at /);
    expect(kld.status).toBe(0);
    const run = intoHead(`-n 200 --ignore-eos -t 1 --temp 0`, "-c 20");
    expect(run.out.length).toBe(20);
    expect(run.stderr).not.toMatch(/EPIPE|Error/);
    expect(run.stderr).toMatch(/eval time/);
    expect(run.status).toBe(0);
  });
});

describe("run", () => {
  it("-n 0 evaluates the prompt and generates nothing (llama-cli)", () => {
    const r = runCli(["-n", "0", "-p", "Hello there", "-t", "1"]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe("Hello there\n");
    expect(r.stderr).toMatch(/sampling time = +\d+\.\d+ ms \/ +0 runs/);
    expect(r.stderr).toMatch(/prompt eval time = +\d+\.\d+ ms \/ +\d+ tokens/);
  });
});

describe("output paths", () => {
  it("an unwritable output file fails before any computation, with one line naming the option", () => {
    const missing = join(dir, "no-such-dir", "out");
    expectOneLineError(["eval", "--tokens", "1,2", "--logits-out", `${missing}.json`], /--logits-out: cannot write '.*no-such-dir\/out\.json': directory '.*no-such-dir' does not exist/);
    expectOneLineError(["perplexity", "-f", textPath, "--kl-divergence-base", dir], /--kl-divergence-base: cannot write '.*': it is a directory/);
    expectOneLineError(["tradeoff", "-f", textPath, "-o", missing], /--out: cannot write '.*no-such-dir\/out\.md': directory '.*' does not exist/);
    expectOneLineError(["tradeoff", "-f", textPath, "--out-svg", `${textPath}/x.svg`], /--out-svg: cannot write '.*text\.txt\/x\.svg': '.*text\.txt' is not a directory/);
  });
});

describe("tradeoff", () => {
  it("checks every expert setting against the model before the baseline run", () => {
    // one line on stderr: the baseline's progress line never appears
    expectOneLineError(["tradeoff", "-f", textPath, "-c", "64", "--chunks", "1", "-t", "1", "--moe-mask", "hard", "--moe-n-expert", "4,16"], /--moe-n-expert 16: the hard mask keeps at most the model's 8 experts/);
  });
});

describe("commands", () => {
  it("a typo'd command names the closest one, as git does", () => {
    expectOneLineError(["perplexty", "-f", textPath], /^error: 'perplexty' is not a tsmoe command; did you mean 'perplexity'\?$/m);
    expectOneLineError(["xyz"], /'xyz' is not a tsmoe command \(commands: .*tokenize.*\)/);
  });

  it("info and tokenize use the embedded model without -m, as every command does", () => {
    const info = runCli(["info", "--json"]);
    expect(info.status, info.stderr).toBe(0);
    expect(JSON.parse(info.stdout)).toMatchObject({ architecture: "qwen3moe", n_expert: 32, n_expert_used: 8 });
    const tok = runCli(["tokenize", "-p", "Hello", "--ids"]);
    expect(tok.status, tok.stderr).toBe(0);
    expect(tok.stdout).toMatch(/^\[\d+(, \d+)*\]\n$/);
  });
});

describe("chat templates", () => {
  const conversation = [
    { role: "system", content: "be brief " },
    { role: "user", content: "hi" },
    { role: "assistant", content: " hello " },
    { role: "user", content: "again" },
  ];
  const render = (name: string) =>
    renderChatTemplate(BUILTIN_CHAT_TEMPLATES[name], conversation, { addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>" });

  it("built-in names render the prompts llama.cpp's formatters of those names make", () => {
    expect(render("chatml")).toBe("<|im_start|>system\nbe brief <|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n hello <|im_end|>\n<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n");
    expect(render("llama2")).toBe("[INST] be brief \nhi [/INST] hello </s>[INST] again [/INST]");
    expect(render("llama3")).toBe("<|start_header_id|>system<|end_header_id|>\n\nbe brief<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nhello<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nagain<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    expect(render("gemma")).toBe("<start_of_turn>user\nbe brief\n\nhi<end_of_turn>\n<start_of_turn>model\nhello<end_of_turn>\n<start_of_turn>user\nagain<end_of_turn>\n<start_of_turn>model\n");
    expect(render("mistral-v7")).toBe("[SYSTEM_PROMPT] be brief [/SYSTEM_PROMPT][INST] hi[/INST]  hello </s>[INST] again[/INST]");
    expect(render("vicuna")).toBe("be brief \n\nUSER: hi\nASSISTANT:  hello </s>\nUSER: again\nASSISTANT:");
    for (const name of Object.keys(BUILTIN_CHAT_TEMPLATES)) expect(render(name), name).toContain("again");
    expect(chatTemplateFromOptions({ chatTemplate: "{{ messages[0].content }}" })).toBe("{{ messages[0].content }}");
    expect(() => chatTemplateFromOptions({ chatTemplate: "chatm" })).toThrow(TsmoeError);
  });

  it("the README's chat example runs on the embedded model (chatml, as llama.cpp falls back to); --chat-template-file replaces it", async () => {
    const r = runCli(["-cnv", "-sys", "You are terse.", "-n", "4", "-t", "1", "--temp", "0"], { input: "hello\n" });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/no chat template: using chatml/);
    expect(r.stdout).toContain("> hello");
    const file = join(dir, "template.jinja");
    writeFileSync(file, "{% for m in messages %}{{ m.content }}{% endfor %}");
    const f = runCli(["-cnv", "--chat-template-file", file, "-n", "0", "-t", "1"], { input: "hello\n" });
    expect(f.status, f.stderr).toBe(0);
    expect(f.stderr).not.toMatch(/using chatml/);
    const tok = Tokenizer.fromMetadata((await loadGguf(DEFAULT_MODEL, { headerOnly: true })).metadata);
    const n = tok.tokenize("hello", { addSpecial: true, parseSpecial: true }).length;
    expect(f.stderr).toMatch(new RegExp(`prompt eval time = +\\d+\\.\\d+ ms / +${n} tokens`));
    expectOneLineError(["-cnv", "--chat-template", "chatm"], /--chat-template: unknown template 'chatm' \(built-in: chatml, llama2/);
  });
});

describe("KV cache and attention flags (-ctk / -ctv / -fa)", () => {
  const tokens = [1, 450, 300, 77, 1200, 3000, 15];
  const evalLogits = (extra: string[]): number[][] => {
    const r = runCli(["eval", "--tokens", tokens.join(","), "-t", "1", ...extra]);
    expect(r.status, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { logits: number[][] }).logits;
  };

  it("select the attention numerics in eval, the same as a session with those options", async () => {
    const f32 = evalLogits([]);
    const f16NoFlash = evalLogits(["-ctk", "f16", "-ctv", "f16", "-fa", "off"]);
    const f16Auto = evalLogits(["-ctk", "f16", "-ctv", "f16"]);
    expect(f16NoFlash).not.toEqual(f32);
    expect(f16Auto).not.toEqual(f16NoFlash);
    const model = await loadModel(DEFAULT_MODEL, { threads: 1 });
    try {
      const want = await model.createSession({ nCtx: tokens.length, kvType: "f16", flashAttention: false }).eval(tokens, { allLogits: true });
      const nVocab = model.hparams.nVocab;
      expect(f16NoFlash[3]).toEqual(Array.from(want.subarray(3 * nVocab, 4 * nVocab), (v) => Number(v.toPrecision(9))));
      const flash = await model.createSession({ nCtx: tokens.length, kvType: "f16", flashAttention: true }).eval(tokens, { allLogits: true });
      expect(f16Auto[3]).toEqual(Array.from(flash.subarray(3 * nVocab, 4 * nVocab), (v) => Number(v.toPrecision(9))));
    } finally {
      await model.dispose();
    }
  });

  it("are accepted by perplexity, bench and tradeoff, and refuse what tsmoe does not compute", () => {
    const flags = ["-ctk", "f16", "-ctv", "f16", "-fa", "off"];
    const ppl = runCli(["perplexity", "-f", textPath, "-c", "64", "--chunks", "1", "-t", "1", ...flags]);
    expect(ppl.status, ppl.stderr).toBe(0);
    expect(ppl.stdout).toMatch(/Final estimate: PPL = \d+\.\d+/);
    const bench = runCli(["bench", "-p", "0", "-n", "2", "-r", "1", "-t", "1", ...flags]);
    expect(bench.status, bench.stderr).toBe(0);
    expectOneLineError(["tradeoff", "-f", textPath, "-ctk", "f16", "-ctv", "f32"], /-ctk f16 with -ctv f32: K and V must have the same cache type/);
    expectOneLineError(["-fa", "on", "-n", "1"], /-fa on needs an F16 cache/);
    expectOneLineError(["eval", "--tokens", "1", "-ctk", "q8_0", "-ctv", "q8_0"], /--cache-type-k \(-ctk\): expected f32 or f16, got 'q8_0'/);
  });
});
