/**
 * The HTTP side of `tsmoe serve` (node:http, no framework: six JSON routes and server-sent events need no
 * more): llama-server's endpoints GET /health, GET /v1/models, POST /v1/completions,
 * POST /v1/chat/completions, POST /tokenize, POST /detokenize (the /v1 routes also without /v1).
 * Request bodies are limited in size and checked before they queue (400 with an OpenAI-style error body);
 * requests wait for one of the slots in a bounded queue (503 when full); with an API key every route but
 * /health and /models needs `Authorization: Bearer KEY` (401). A client that goes away stops its generation
 * (or leaves the queue).
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { basename } from "node:path";
import type { Model, MoeOptions, Session } from "../model/api.ts";
import type { MoeCliValues } from "../cli/moe-options.ts";
import { Tokenizer } from "../tokenizer/tokenizer.ts";
import { runGeneration, serverTimings, type GenerationResult } from "./completion.ts";
import { chatPrompt, completionPrompt, serverChatTemplate } from "./prompt.ts";
import { badRequest, HttpError, optBool, optInt, parseBody, requestMoe, samplingParams, stopStrings, tokenBudget, type Body } from "./request.ts";
import { SlotPool } from "./slots.ts";

export interface ServerOptions {
  model: Model;
  tokenizer: Tokenizer;
  /** one session per slot (--parallel), all with the same context size */
  sessions: Session[];
  /** requests that may wait for a slot (beyond that: 503) */
  maxQueue: number;
  /** the chat template (the model's, else chatml) */
  chatTemplate: string;
  /** --api-key */
  apiKey?: string;
  /** the server's MoE flags: every request's defaults */
  moeDefaults?: MoeCliValues;
  /** largest request body in bytes (default 1 MiB) */
  maxBodyBytes?: number;
  /** called once per answered request */
  log?: (entry: RequestLog) => void;
}

export interface RequestLog {
  method: string;
  path: string;
  status: number;
  ms: number;
  /** generation requests: prompt and generated tokens, how generation ended, mean experts per token */
  promptTokens?: number;
  completionTokens?: number;
  finishReason?: string;
  meanExperts?: number;
}

/** What `serverFor` needs besides the model. */
export interface ServerSetup extends Pick<ServerOptions, "maxQueue" | "apiKey" | "moeDefaults" | "maxBodyBytes" | "log"> {
  /** slots (--parallel) and the context of each */
  parallel: number;
  nCtxSlot: number;
  /** the sessions' initial expert setting (each request sets its own) */
  moe?: MoeOptions;
}

/** A server for a loaded model: its tokenizer, one session per slot, its chat template (else chatml). */
export function serverFor(model: Model, setup: ServerSetup): { server: TsmoeServer; chatml: boolean } {
  const tokenizer = Tokenizer.fromMetadata(model.metadata);
  const sessions = Array.from({ length: setup.parallel }, () => model.createSession({ nCtx: setup.nCtxSlot, moe: setup.moe }));
  const chat = serverChatTemplate(tokenizer);
  return { server: new TsmoeServer({ ...setup, model, tokenizer, sessions, chatTemplate: chat.template }), chatml: chat.builtin };
}

const DEFAULT_MAX_BODY = 1 << 20;
const KEEP_ALIVE_MS = 30_000;
const PUBLIC_PATHS = new Set(["/health", "/v1/health", "/models", "/v1/models"]);

export class TsmoeServer {
  readonly http: Server;
  readonly pool: SlotPool<Session>;
  readonly modelId: string;
  private readonly created = Math.floor(Date.now() / 1000);

  constructor(private readonly o: ServerOptions) {
    this.pool = new SlotPool(o.sessions, o.maxQueue);
    this.modelId = basename(o.model.path);
    this.http = createServer((req, res) => void this.handle(req, res));
    // a forward pass holds the event loop (a long prompt: seconds), and an idle connection that times out
    // just then races a client's next request on it (ECONNRESET): keep idle connections for longer
    this.http.keepAliveTimeout = KEEP_ALIVE_MS;
  }

  /** Listens (port 0: a free port) and resolves with the address. */
  listen(port: number, host: string): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.http.once("error", reject);
      this.http.listen(port, host, () => resolve(this.http.address() as AddressInfo));
    });
  }

  /**
   * Stops listening and drops open connections; resolves once the running generations, which see their
   * client gone, have stopped (so the model can be disposed of).
   */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    this.http.closeAllConnections();
    await closed;
    while (this.pool.busy > 0) await new Promise((resolve) => setTimeout(resolve, 10));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = performance.now();
    const path = (req.url ?? "/").split("?")[0];
    const entry: RequestLog = { method: req.method ?? "", path, status: 200, ms: 0 };
    res.setHeader("Access-Control-Allow-Origin", "*");
    try {
      if (req.method === "OPTIONS") {
        res.writeHead(204, { "Access-Control-Allow-Methods": "GET, POST, OPTIONS", "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Api-Key" }).end();
        return;
      }
      if (this.o.apiKey !== undefined && !PUBLIC_PATHS.has(path) && !this.authorized(req)) throw new HttpError(401, "Invalid API Key", "authentication_error");
      await this.route(req, res, path, entry);
    } catch (e) {
      const err = e instanceof HttpError ? e : new HttpError(500, (e as Error).message?.split("\n")[0] ?? String(e), "server_error");
      entry.status = err.status;
      sendError(res, err);
    } finally {
      entry.status = entry.status === 200 ? res.statusCode : entry.status;
      entry.ms = performance.now() - t0;
      this.o.log?.(entry);
    }
  }

  private authorized(req: IncomingMessage): boolean {
    const auth = req.headers.authorization;
    const given = auth?.startsWith("Bearer ") ? auth.slice(7) : (req.headers["x-api-key"] as string | undefined);
    if (given === undefined) return false;
    const a = Buffer.from(given);
    const b = Buffer.from(this.o.apiKey!);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  private async route(req: IncomingMessage, res: ServerResponse, path: string, entry: RequestLog): Promise<void> {
    const get = req.method === "GET";
    const route = path.replace(/^\/v1\//, "/");
    if ((route === "/health" || route === "/models") && !get) throw new HttpError(405, `${path} takes GET`);
    if (route === "/health") return sendJson(res, 200, { status: "ok" });
    if (route === "/models") return sendJson(res, 200, this.models());
    const post = ["/completions", "/chat/completions", "/tokenize", "/detokenize"];
    if (!post.includes(route)) throw new HttpError(404, `no such endpoint: ${req.method} ${path}`, "not_found_error");
    if (req.method !== "POST") throw new HttpError(405, `${path} takes POST`);
    const body = parseBody(await readBody(req, this.o.maxBodyBytes ?? DEFAULT_MAX_BODY));
    if (route === "/tokenize") return sendJson(res, 200, this.tokenize(body));
    if (route === "/detokenize") return sendJson(res, 200, this.detokenize(body));
    await this.complete(req, res, body, route === "/chat/completions", entry);
  }

  private models() {
    const hp = this.o.model.hparams;
    const meta = { n_vocab: hp.nVocab, n_ctx_train: hp.nCtxTrain, n_ctx_slot: this.o.sessions[0].nCtx, n_params: this.o.model.nParams, size: this.o.model.fileSize, n_expert: hp.nExpert, n_expert_used: hp.nExpertUsed };
    return { object: "list", data: [{ id: this.modelId, object: "model", created: this.created, owned_by: "tsmoe", meta }] };
  }

  /** llama-server's /tokenize: `content`, `add_special` (default false), `parse_special` (default true), `with_pieces`. */
  private tokenize(body: Body) {
    if (typeof body.content !== "string") throw badRequest("content: expected a string");
    const tok = this.o.tokenizer;
    const ids = tok.tokenize(body.content, { addSpecial: optBool(body, "add_special") ?? false, parseSpecial: optBool(body, "parse_special") ?? true });
    if (!optBool(body, "with_pieces")) return { tokens: ids };
    return { tokens: ids.map((id) => ({ id, piece: tok.tokenToPiece(id, { special: true }) })) };
  }

  private detokenize(body: Body) {
    const ids = body.tokens;
    const n = this.o.tokenizer.nVocab;
    if (!Array.isArray(ids) || !ids.every((t) => Number.isInteger(t) && t >= 0 && t < n))
      throw badRequest(`tokens: expected a list of token ids (0..${n - 1})`);
    return { content: this.o.tokenizer.detokenize(ids as number[]) };
  }

  private async complete(req: IncomingMessage, res: ServerResponse, body: Body, chat: boolean, entry: RequestLog): Promise<void> {
    const { tokenizer, model } = this.o;
    // everything is checked before the request queues
    const prompt = chat ? chatPrompt(body, tokenizer, this.o.chatTemplate) : completionPrompt(body, tokenizer);
    const nCtx = this.o.sessions[0].nCtx;
    if (prompt.length >= nCtx) throw badRequest(`the prompt is too long: ${prompt.length} tokens for a context of ${nCtx} per slot (raise -c)`);
    const sampling = samplingParams(body);
    const moe = requestMoe(body, this.o.moeDefaults ?? {}, model.hparams);
    const nPredict = tokenBudget(body);
    const stop = stopStrings(body);
    const ignoreEos = optBool(body, "ignore_eos") ?? false;
    const stream = optBool(body, "stream") ?? false;
    const n = optInt(body, "n");
    if (n !== undefined && n !== 1) throw badRequest("n: only one choice per request is supported");

    let gone = false;
    res.on("close", () => (gone = !res.writableFinished));
    const waiter = this.pool.acquire();
    res.on("close", waiter.cancel);
    const session = await waiter.slot;
    const id = (chat ? "chatcmpl-" : "cmpl-") + randomBytes(12).toString("hex");
    const created = Math.floor(Date.now() / 1000);
    const head = { id, object: chat ? "chat.completion" : "text_completion", created, model: this.modelId };
    const sse = new EventStream(res, stream);
    let result: GenerationResult;
    try {
      let first = true;
      result = await runGeneration(session, tokenizer, {
        prompt,
        sampling,
        moe,
        nPredict,
        stop,
        ignoreEos,
        cancelled: () => gone,
        onText: stream
          ? (text) => {
              sse.send({ ...head, object: chat ? "chat.completion.chunk" : "text_completion", choices: [choice(chat, text, null, first, true)] });
              first = false;
            }
          : undefined,
      });
    } finally {
      this.pool.release(session);
    }
    entry.promptTokens = prompt.length;
    entry.completionTokens = result.tokens.length;
    entry.finishReason = result.finishReason;
    entry.meanExperts = result.meanExperts;
    if (result.finishReason === "cancelled") {
      entry.status = 499;
      return;
    }
    const tail = {
      usage: { prompt_tokens: prompt.length, completion_tokens: result.tokens.length, total_tokens: prompt.length + result.tokens.length },
      timings: serverTimings(result.timings, result.tokens.length),
      moe: this.moeReport(result),
      seed: result.seed,
    };
    if (stream) {
      sse.send({ ...head, object: chat ? "chat.completion.chunk" : "text_completion", choices: [choice(chat, "", result.finishReason, false, true)], ...tail });
      sse.end();
    } else {
      sendJson(res, 200, { ...head, choices: [choice(chat, result.text, result.finishReason, true, false)], ...tail });
    }
  }

  /** The experts the request used: mean routed experts per token, against the model's k of n. */
  private moeReport(r: GenerationResult) {
    const hp = this.o.model.hparams;
    if (r.meanExperts === undefined) return undefined;
    return { mean_experts_per_token: r.meanExperts, model_experts_per_token: hp.nExpertUsed, n_expert: hp.nExpert };
  }
}

/** A choice of a response or of a stream chunk (chat: message / delta; completion: text). */
function choice(chat: boolean, text: string, finish: string | null, withRole: boolean, delta: boolean) {
  if (!chat) return { index: 0, text, logprobs: null, finish_reason: finish };
  const content = delta && finish !== null ? {} : { ...(withRole ? { role: "assistant" } : {}), content: text };
  return { index: 0, [delta ? "delta" : "message"]: content, logprobs: null, finish_reason: finish };
}

/** Server-sent events: `data: {json}` chunks, then `data: [DONE]`. */
class EventStream {
  constructor(
    private readonly res: ServerResponse,
    enabled: boolean,
  ) {
    if (enabled) res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache", Connection: "keep-alive" });
  }
  send(data: unknown): void {
    if (!this.res.destroyed) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }
  end(): void {
    if (!this.res.destroyed) this.res.end("data: [DONE]\n\n");
  }
}

function sendJson(res: ServerResponse, status: number, data: unknown): void {
  const text = JSON.stringify(data);
  res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(text) }).end(text);
}

/** The OpenAI error body; inside a started event stream, an `error` event. */
function sendError(res: ServerResponse, err: HttpError): void {
  const body = { error: { code: err.status, message: err.message, type: err.type } };
  if (res.destroyed) return;
  if (res.headersSent) {
    res.end(`error: ${JSON.stringify(body)}\n\n`);
    return;
  }
  if (err.status === 413) res.setHeader("Connection", "close");
  sendJson(res, err.status, body);
}

/** The request body as text; 413 beyond `limit` bytes. */
function readBody(req: IncomingMessage, limit: number): Promise<string> {
  const tooLarge = () => new HttpError(413, `the request body is larger than ${limit} bytes`);
  if (Number(req.headers["content-length"] ?? 0) > limit) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.removeAllListeners("data");
        req.resume();
        reject(tooLarge());
      } else chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}
