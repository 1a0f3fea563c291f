/**
 * `tsmoe serve` on the embedded model, loaded once in this process: the official `openai` client for chat,
 * completion and streaming; requests at different moe_n_expert on one model give the CLI's tokens; raw HTTP
 * for bad input (400, 401, 404, 413), a full queue (503) and a client that goes away.
 */
import { spawn } from "node:child_process";
import { request } from "node:http";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_MODEL } from "../src/cli/progress.ts";
import type { Model } from "../src/model/api.ts";
import { loadModel } from "../src/model/load.ts";
import { serverFor, type RequestLog, type ServerSetup, type TsmoeServer } from "../src/server/http.ts";
import { StopFilter } from "../src/server/completion.ts";
import { ROOT } from "./helpers.ts";

const N_CTX = 256;
let model: Model;
const servers: TsmoeServer[] = [];

/** A server on a free loopback port; its log entries are collected. */
async function start(setup: Partial<ServerSetup> = {}) {
  const log: RequestLog[] = [];
  const { server } = serverFor(model, { parallel: 1, nCtxSlot: N_CTX, maxQueue: 8, log: (e) => log.push(e), ...setup });
  const { port } = await server.listen(0, "127.0.0.1");
  servers.push(server);
  return { server, log, base: `http://127.0.0.1:${port}` };
}

let main: Awaited<ReturnType<typeof start>>;
let client: OpenAI;

beforeAll(async () => {
  model = await loadModel(DEFAULT_MODEL, { threads: 1 });
  main = await start({ parallel: 2 });
  client = new OpenAI({ baseURL: `${main.base}/v1`, apiKey: "unused", maxRetries: 0 });
});
afterAll(async () => {
  for (const s of servers) await s.close();
  await model?.dispose();
});

/** Raw HTTP: status, headers and body text (the body may be sent as a raw string). */
async function http(base: string, path: string, opts: { method?: string; body?: unknown; headers?: Record<string, string> } = {}) {
  const body = opts.body === undefined ? undefined : typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body);
  const r = await fetch(base + path, { method: opts.method ?? (body === undefined ? "GET" : "POST"), body, headers: opts.headers });
  const text = await r.text();
  return { status: r.status, text, json: () => JSON.parse(text) };
}

/**
 * Runs bin/tsmoe without blocking the event loop (runCli's spawnSync would stall the in-process server and
 * let its idle connections time out under a client about to reuse them).
 */
function runCliAsync(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [join(ROOT, "bin", "tsmoe"), ...args], { cwd: ROOT });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on("close", (status) => resolve({ status, stdout, stderr })));
}

/** Extra fields of the responses that the client's types do not name. */
type Extras = { usage: { prompt_tokens: number; completion_tokens: number }; timings: Record<string, number>; moe: { mean_experts_per_token: number; model_experts_per_token: number } };

describe("tsmoe serve through the openai client", () => {
  it("completion: text, usage, timings and the experts per token", async () => {
    const r = await client.completions.create({ model: "tiny", prompt: "Once upon a time", max_tokens: 6, temperature: 0 });
    expect(r.object).toBe("text_completion");
    expect(r.choices[0].text.length).toBeGreaterThan(0);
    expect(r.choices[0].finish_reason).toBe("length");
    const x = r as unknown as Extras;
    expect(x.usage.completion_tokens).toBe(6);
    expect(x.usage.prompt_tokens).toBeGreaterThan(1);
    expect(x.timings.predicted_n).toBe(6);
    expect(x.timings.prompt_n).toBe(x.usage.prompt_tokens);
    expect(x.moe.mean_experts_per_token).toBe(8);
    expect(x.moe.model_experts_per_token).toBe(8);
  });

  it("chat: an assistant message from the chat template; streaming gives the same text in chunks, then usage", async () => {
    const messages = [{ role: "user" as const, content: "Tell me a story." }];
    const whole = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 6, seed: 5 });
    expect(whole.object).toBe("chat.completion");
    expect(whole.choices[0].message.role).toBe("assistant");
    const text = whole.choices[0].message.content!;
    expect(text.length).toBeGreaterThan(0);
    const stream = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 6, seed: 5, stream: true });
    const parts: string[] = [];
    let last: unknown;
    for await (const chunk of stream) {
      expect(chunk.object).toBe("chat.completion.chunk");
      if (chunk.choices[0]?.delta?.content) parts.push(chunk.choices[0].delta.content);
      last = chunk;
    }
    expect(parts.length).toBeGreaterThan(1);
    expect(parts.join("")).toBe(text);
    const end = last as Extras & { choices: { finish_reason: string }[] };
    expect(end.choices[0].finish_reason).toBe("length");
    expect(end.usage.completion_tokens).toBe(6);
    expect(end.timings.predicted_n).toBe(6);
  });

  it("a stop string ends the text before it (also when streamed)", async () => {
    const base = await client.completions.create({ model: "tiny", prompt: "Once upon a time", max_tokens: 8, temperature: 0 });
    const full = base.choices[0].text;
    const stop = full.slice(4, 7);
    const cut = full.slice(0, full.indexOf(stop));
    const r = await client.completions.create({ model: "tiny", prompt: "Once upon a time", max_tokens: 8, temperature: 0, stop });
    expect(r.choices[0].text).toBe(cut);
    expect(r.choices[0].finish_reason).toBe("stop");
    const s = await client.completions.create({ model: "tiny", prompt: "Once upon a time", max_tokens: 8, temperature: 0, stop: [stop], stream: true });
    let streamed = "";
    for await (const c of s) streamed += c.choices[0]?.text ?? "";
    expect(streamed).toBe(cut);
  });

  it("two requests at once with different moe_n_expert on one model give the CLI's tokens for the same flags and seed", async () => {
    const prompt = "The little dog";
    const cases = [
      { fields: { moe_n_expert: 2, temperature: 0 }, flags: ["--moe-n-expert", "2", "--temp", "0"], experts: 2 },
      { fields: { moe_n_expert: 6, moe_mask: "hard", seed: 11 }, flags: ["--moe-n-expert", "6", "--moe-mask", "hard", "-s", "11"], experts: 6 },
    ];
    const answers = await Promise.all(cases.map((c) => client.completions.create({ model: "tiny", prompt, max_tokens: 8, ...c.fields } as never) as Promise<OpenAI.Completion>));
    for (const [i, c] of cases.entries()) {
      const cli = await runCliAsync(["-p", prompt, "-n", "8", "--no-display-prompt", ...c.flags]);
      expect(cli.status, cli.stderr).toBe(0);
      expect(answers[i].choices[0].text + "\n").toBe(cli.stdout);
      expect((answers[i] as unknown as Extras).moe.mean_experts_per_token).toBe(c.experts);
    }
    expect(answers[0].choices[0].text).not.toBe(answers[1].choices[0].text);
  });

  it("/tokenize and /detokenize round-trip; /health and /v1/models", async () => {
    const t = await http(main.base, "/tokenize", { body: { content: "Once upon a time" } });
    expect(t.status).toBe(200);
    const ids = t.json().tokens as number[];
    expect(ids.length).toBeGreaterThan(1);
    const d = await http(main.base, "/detokenize", { body: { tokens: ids } });
    expect(d.json().content).toBe("Once upon a time");
    expect((await http(main.base, "/health")).json()).toEqual({ status: "ok" });
    const models = await client.models.list();
    expect(models.data[0].id).toBe("tiny-moe-32x8-q8_0.gguf");
  });
});

describe("tsmoe serve: bad requests", () => {
  const cases: [string, unknown, RegExp][] = [
    ["bad JSON", '{"prompt": "x",', /invalid JSON/],
    ["not an object", "[1, 2]", /JSON object/],
    ["no prompt", {}, /prompt: missing/],
    ["wrong-typed temperature", { prompt: "x", temperature: "hot" }, /temperature: expected a number/],
    ["top_p out of range", { prompt: "x", top_p: 3 }, /top_p: must be between 0 and 1/],
    ["fractional max_tokens", { prompt: "x", max_tokens: 1.5 }, /max_tokens: expected an integer/],
    ["stop of the wrong type", { prompt: "x", stop: [1] }, /stop: expected a string or a list/],
    ["too many experts", { prompt: "x", moe_n_expert: 33 }, /moe_n_expert 33: the model has only 32 experts/],
    ["hard mask above k", { prompt: "x", moe_n_expert: 9, moe_mask: "hard" }, /hard mask keeps at most the model's 8/],
    ["unknown mask", { prompt: "x", moe_mask: "medium" }, /moe_mask: expected soft or hard/],
    ["layer out of range", { prompt: "x", moe_n_expert_layers: "0-9:4" }, /moe_n_expert_layers: layer 6 out of range/],
    ["cum_p out of range", { prompt: "x", moe_cum_p: 1.5 }, /moe_cum_p: P must be in \(0, 1\]/],
    ["ser malformed", { prompt: "x", moe_ser: "2" }, /moe_ser: expected KMIN,T/],
    ["ser T out of range", { prompt: "x", moe_ser: [2, 3] }, /moe_ser: T must be in \[0, 1\]/],
    ["prompt longer than the context", { prompt: Array.from({ length: N_CTX + 4 }, () => 100) }, /prompt is too long: 260 tokens for a context of 256/],
  ];
  for (const [what, body, re] of cases)
    it(`${what}: 400 with an OpenAI error body`, async () => {
      const r = await http(main.base, "/v1/completions", { body });
      expect(r.status).toBe(400);
      const err = r.json().error;
      expect(err.type).toBe("invalid_request_error");
      expect(err.code).toBe(400);
      expect(err.message).toMatch(re);
    });

  it("chat messages of the wrong shape: 400", async () => {
    const r = await http(main.base, "/v1/chat/completions", { body: { messages: [{ content: "no role" }] } });
    expect(r.status).toBe(400);
    expect(r.json().error.message).toMatch(/messages\[0\]/);
  });

  it("a body over the limit: 413; an unknown route: 404", async () => {
    const big = await http(main.base, "/v1/completions", { body: { prompt: "x".repeat(1.2 * 2 ** 20) } });
    expect(big.status).toBe(413);
    expect(big.json().error.message).toMatch(/larger than/);
    const missing = await http(main.base, "/v1/embeddings", { body: {} });
    expect(missing.status).toBe(404);
  });

  it("with --api-key: 401 without the key, 200 with it; /health stays open", async () => {
    const { base } = await start({ apiKey: "sesame" });
    const no = await http(base, "/v1/completions", { body: { prompt: "x", max_tokens: 1 } });
    expect(no.status).toBe(401);
    expect(no.json().error.type).toBe("authentication_error");
    const wrong = await http(base, "/tokenize", { body: { content: "x" }, headers: { Authorization: "Bearer sesam" } });
    expect(wrong.status).toBe(401);
    expect((await http(base, "/health")).status).toBe(200);
    const keyed = new OpenAI({ baseURL: `${base}/v1`, apiKey: "sesame", maxRetries: 0 });
    const r = await keyed.completions.create({ model: "tiny", prompt: "x", max_tokens: 1 });
    expect(r.choices[0].text.length).toBeGreaterThanOrEqual(0);
    expect(r.usage?.completion_tokens).toBe(1);
  });
});

describe("tsmoe serve: queue and disconnects", () => {
  it("beyond the slot and the queue: 503; a client that goes away stops its generation and frees the slot", async () => {
    const { server, base, log } = await start({ parallel: 1, maxQueue: 1 });
    // A: a long streamed generation holding the only slot
    const a = request(`${base}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json" } });
    a.on("error", () => {});
    const firstChunk = new Promise<void>((resolve) => a.on("response", (res) => res.once("data", () => resolve())));
    a.end(JSON.stringify({ prompt: "Once upon a time", max_tokens: 200, ignore_eos: true, stream: true }));
    await firstChunk;
    // B waits for the slot, C finds the queue full
    const b = http(base, "/v1/completions", { body: { prompt: "x", max_tokens: 2 } });
    while (server.pool.queued < 1) await new Promise((r) => setTimeout(r, 5));
    const c = await http(base, "/v1/completions", { body: { prompt: "x", max_tokens: 2 } });
    expect(c.status).toBe(503);
    expect(c.json().error.type).toBe("unavailable_error");
    a.destroy();
    const rb = await b;
    expect(rb.status).toBe(200);
    expect(rb.json().usage.completion_tokens).toBe(2);
    const entryA = log.find((e) => e.finishReason === "cancelled");
    expect(entryA, JSON.stringify(log)).toBeDefined();
    expect(entryA!.completionTokens).toBeLessThan(200);
    expect(server.pool.busy).toBe(0);
  });
});

describe("StopFilter", () => {
  it("holds back a possible stop string across pieces and cuts at the first one", () => {
    const f = new StopFilter(["</s>", "END"]);
    expect(f.push("Hello <")).toBe("Hello ");
    expect(f.push("/")).toBe("");
    expect(f.push("x")).toBe("</x");
    expect(f.push(" EN")).toBe(" ");
    expect(f.push("D more")).toBe("");
    expect(f.matched).toBe(true);
    expect(f.flush()).toBe("");
    const g = new StopFilter(["zz"]);
    expect(g.push("abz")).toBe("ab");
    expect(g.flush()).toBe("z");
  });
});

describe("the tsmoe serve command", () => {
  it("listens on the port it prints, answers, and ends on SIGTERM (also mid-generation) with status 0", async () => {
    const child = spawn(process.execPath, [join(ROOT, "bin", "tsmoe"), "serve", "--port", "0", "-t", "1", "-c", "512", "--parallel", "2", "--moe-n-expert", "4"], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    const base = await new Promise<string>((resolve, reject) => {
      child.stderr.on("data", (d: Buffer) => {
        stderr += d.toString();
        const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr);
        if (m) resolve(m[1]);
      });
      child.on("exit", () => reject(new Error(stderr)));
    });
    expect(stderr).toMatch(/2 slot\(s\) of 256 tokens/);
    const r = await http(base, "/v1/completions", { body: { prompt: "x", max_tokens: 2 } });
    expect(r.json().moe.mean_experts_per_token).toBe(4); // the server's --moe-n-expert is the default
    // shutting down in the middle of a generation stops it
    const long = request(`${base}/v1/completions`, { method: "POST" });
    long.on("error", () => {});
    const firstChunk = new Promise<void>((resolve) => long.on("response", (res) => res.once("data", () => resolve())));
    long.end(JSON.stringify({ prompt: "x", max_tokens: 200, ignore_eos: true, stream: true }));
    await firstChunk;
    const exit = new Promise<number | null>((resolve) => child.on("exit", resolve));
    child.kill("SIGTERM");
    expect(await exit).toBe(0);
    expect(stderr).toMatch(/POST \/v1\/completions 200 \d+\+2 tokens length 4\.00 experts\/token/);
  });

  it("bad flags: one-line errors", async () => {
    for (const [flags, re] of [
      [["--port", "70000"], /--port: must be at most 65535/],
      [["--parallel", "0"], /--parallel: must be at least 1/],
      [["--moe-n-expert", "40"], /--moe-n-expert 40: the model has only 32 experts/],
      [["-c", "64", "--parallel", "16"], /leaves 4 tokens per slot/],
    ] as [string[], RegExp][]) {
      const r = await runCliAsync(["serve", "--port", "0", ...flags]);
      expect(r.status, r.stderr).toBe(1);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(re);
    }
  });
});
