/**
 * `tsmoe serve`: an OpenAI-compatible HTTP server like llama-server (src/server/), one loaded model, each
 * request with its own expert setting (moe_n_expert, moe_mask, ...; the server's MoE flags are the
 * defaults). -c is the total context, shared equally by the --parallel slots as in llama-server.
 */
import type { Command } from "commander";
import { UsageError } from "../errors.ts";
import { parseIntArg } from "./grid-options.ts";
import { DEFAULT_CTX } from "../model/load.ts";
import { serverFor, type RequestLog } from "../server/http.ts";
import { addMoeOptions, moeOptionsFrom, type MoeCliValues } from "./moe-options.ts";
import { modelOption, openModel } from "./progress.ts";

interface ServeCliOptions extends MoeCliValues {
  model: string;
  host: string;
  port: string;
  ctxSize: string;
  threads?: string;
  parallel: string;
  queueSize: string;
  apiKey?: string;
  logRequests: boolean;
}

/** One line per request on stderr: `POST /v1/completions 200 12+30 tokens stop 3.42 experts/token 85 ms` */
export function formatRequestLog(e: RequestLog): string {
  const gen = e.promptTokens === undefined ? "" : ` ${e.promptTokens}+${e.completionTokens} tokens ${e.finishReason}`;
  const experts = e.meanExperts === undefined ? "" : ` ${e.meanExperts.toFixed(2)} experts/token`;
  return `${e.method} ${e.path} ${e.status}${gen}${experts} ${e.ms.toFixed(0)} ms`;
}

export function register(program: Command): void {
  const cmd = program
    .command("serve")
    .description("OpenAI-compatible HTTP server (llama-server) with the expert setting chosen per request")
    .addOption(modelOption())
    .option("--host <addr>", "address to listen on", "127.0.0.1")
    .option("--port <n>", "port to listen on (0: any free port)", "8080")
    .option("-c, --ctx-size <n>", "total context, shared by the slots (0: the model's training context, at most 4096)", "0")
    .option("-t, --threads <n>", "worker threads (default: number of cores)")
    .option("--parallel <n>", "requests generated at the same time (slots)", "1")
    .option("--queue-size <n>", "requests that may wait for a slot; more get 503", "64")
    .option("--api-key <key>", "require `Authorization: Bearer KEY` (all but /health and /v1/models)")
    .option("--no-log-requests", "do not log one line per request to stderr");
  addMoeOptions(cmd);
  cmd.action(async (o: ServeCliOptions) => {
    const port = parseIntArg("--port", o.port, 0);
    if (port > 65535) throw new UsageError(`--port: must be at most 65535 (got ${port})`);
    const parallel = parseIntArg("--parallel", o.parallel, 1);
    const maxQueue = parseIntArg("--queue-size", o.queueSize, 0);
    const nCtxOpt = parseIntArg("--ctx-size", o.ctxSize, 0);
    const threads = o.threads === undefined ? undefined : parseIntArg("--threads", o.threads, 1);
    if (o.apiKey === "") throw new UsageError("--api-key: the key is empty");
    const parsed = moeOptionsFrom(o);
    const { model, moe } = await openModel(o.model, { moe: parsed.moe, overrideKv: parsed.overrideKv, threads, moeCache: parsed.moeCache, moePrefetch: parsed.moePrefetch, nCtx: nCtxOpt > 0 ? nCtxOpt : undefined });
    const total = nCtxOpt > 0 ? nCtxOpt : Math.min(model.hparams.nCtxTrain || DEFAULT_CTX, DEFAULT_CTX);
    const perSlot = Math.floor(total / parallel);
    if (perSlot < 8) {
      await model.dispose();
      throw new UsageError(`--ctx-size ${total} leaves ${perSlot} tokens per slot for --parallel ${parallel} (raise -c)`);
    }
    const { server, chatml } = serverFor(model, {
      parallel,
      nCtxSlot: perSlot,
      moe,
      maxQueue,
      apiKey: o.apiKey,
      moeDefaults: { moeNExpert: o.moeNExpert, moeMask: o.moeMask, moeNExpertLayers: o.moeNExpertLayers, moeCumP: o.moeCumP, moeSer: o.moeSer },
      log: o.logRequests ? (e) => process.stderr.write(formatRequestLog(e) + "\n") : undefined,
    });
    if (chatml) process.stderr.write("the model has no chat template: chat requests use chatml\n");
    const addr = await server.listen(port, o.host).catch(async (e: NodeJS.ErrnoException) => {
      await model.dispose();
      throw new UsageError(`cannot listen on ${o.host}:${port}: ${e.code ?? e.message}`);
    });
    const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
    process.stderr.write(`${server.modelId}: ${parallel} slot(s) of ${perSlot} tokens, queue of ${maxQueue}\n`);
    process.stderr.write(`server is listening on http://${host}:${addr.port}\n`);
    await new Promise<void>((resolve) => {
      const stop = () => resolve();
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
    });
    process.stderr.write("shutting down\n");
    await server.close();
    await model.dispose();
  });
}
