/**
 * `tsmoe` / `tsmoe run`: llama-cli for tsmoe. Generates from a prompt (or chats with `-cnv`, reading user
 * turns from stdin), streaming tokens to stdout; at the end prints timings and the mean experts per token
 * to stderr. Ctrl-C stops generation, prints the timings and exits with status 130 (in chat it ends the
 * reply). Chat uses the model's chat template, or --chat-template / --chat-template-file, or chatml when
 * the model has none.
 */
import { createInterface } from "node:readline";
import type { Command } from "commander";
import { UsageError } from "../errors.ts";
import { parseIntArg, parseNumberArg, parseThreadsArg } from "./grid-options.ts";
import { formatMeanExperts, formatMoeStats } from "../eval/moe-report.ts";
import { readTextFile } from "../eval/text.ts";
import type { Model, Session } from "../model/api.ts";
import { emptyTimings, formatTimings, generate, type GenerationTimings } from "../sample/generate.ts";
import { Sampler, type SamplerParams } from "../sample/sampler.ts";
import { applyChatTemplate, type ChatMessage } from "../tokenizer/chat.ts";
import { BUILTIN_CHAT_TEMPLATES, chatTemplateFromOptions } from "../tokenizer/chat-builtin.ts";
import { Tokenizer } from "../tokenizer/tokenizer.ts";
import { addAttentionOptions, attentionFrom, type AttentionCliValues } from "./attention-options.ts";
import { addMoeOptions, moeOptionsFrom, type MoeCliValues } from "./moe-options.ts";
import { modelOption, openModel } from "./progress.ts";

/** The prompt used when none is given. */
export const DEFAULT_PROMPT = "Once upon a time";

/** llama.cpp's multi-letter single-dash flags, which commander cannot parse, mapped to their long forms. */
const LLAMA_FLAGS: Record<string, string> = {
  "-cnv": "--conversation",
  "-sys": "--system-prompt",
  "-ctk": "--cache-type-k",
  "-ctv": "--cache-type-v",
  "-fa": "--flash-attn",
};

/** Rewrites `-cnv`, `-sys`, `-ctk`, `-ctv`, `-fa` into their long forms (everything after `--` is left alone). */
export function expandLlamaFlags(argv: string[]): string[] {
  const end = argv.indexOf("--");
  return argv.map((a, i) => (end >= 0 && i > end ? a : (LLAMA_FLAGS[a] ?? a)));
}

interface RunCliOptions extends MoeCliValues, AttentionCliValues {
  model: string;
  prompt?: string;
  file?: string;
  nPredict: string;
  ctxSize: string;
  threads?: string;
  seed: string;
  temp: string;
  topK: string;
  topP: string;
  minP: string;
  repeatPenalty: string;
  repeatLastN: string;
  conversation?: boolean;
  systemPrompt?: string;
  chatTemplate?: string;
  chatTemplateFile?: string;
  displayPrompt: boolean;
  ignoreEos?: boolean;
}

function samplerParams(o: RunCliOptions): Partial<SamplerParams> {
  return {
    temp: parseNumberArg("--temp", o.temp),
    topK: parseIntArg("--top-k", o.topK),
    topP: parseNumberArg("--top-p", o.topP),
    minP: parseNumberArg("--min-p", o.minP),
    repeatPenalty: parseNumberArg("--repeat-penalty", o.repeatPenalty),
    repeatLastN: parseIntArg("--repeat-last-n", o.repeatLastN, -1),
    seed: parseIntArg("--seed", o.seed, -1),
  };
}

/**
 * Ctrl-C handling: the first press asks generation to stop, a second one exits at once. A closed stdout
 * also asks generation to stop (`requested` without `bySignal`).
 */
class Interrupt {
  requested = false;
  /** a SIGINT asked for the stop (a plain completion then exits with status 130, as llama-cli does) */
  bySignal = false;
  private readonly handler = () => {
    if (this.requested) process.exit(130);
    this.requested = true;
    this.bySignal = true;
  };
  install(): void {
    process.on("SIGINT", this.handler);
  }
  remove(): void {
    process.off("SIGINT", this.handler);
  }
}

export function register(program: Command): void {
  const cmd = program
    .command("run", { isDefault: true })
    .description("generate text from a prompt or chat with the model (llama-cli); the default command")
    .addOption(modelOption())
    .option("-p, --prompt <text>", `prompt (default: "${DEFAULT_PROMPT}")`)
    .option("-f, --file <file>", "read the prompt from a file")
    .option("-n, --n-predict <n>", "tokens to generate (-1: until end of text or a full context)", "-1")
    .option("-c, --ctx-size <n>", "context size (0: the model's training context, at most 4096)", "0")
    .option("-t, --threads <n>", "worker threads (default: number of cores)")
    .option("-s, --seed <n>", "sampling seed (-1: random)", "-1")
    .option("--temp <t>", "temperature (0: greedy)", "0.8")
    .option("--top-k <k>", "top-k sampling (0: off)", "40")
    .option("--top-p <p>", "top-p sampling (1.0: off)", "0.95")
    .option("--min-p <p>", "min-p sampling (0.0: off)", "0.05")
    .option("--repeat-penalty <x>", "penalise repeated tokens (1.0: off)", "1.0")
    .option("--repeat-last-n <n>", "tokens considered by the repeat penalty (0: off, -1: the context)", "64")
    .option("--conversation", "chat mode (also -cnv): user turns from stdin, the model's chat template")
    .option("--system-prompt <text>", "system message in chat mode (also -sys)")
    .option("--chat-template <name|template>", `chat template instead of the model's: a Jinja template or a name (${Object.keys(BUILTIN_CHAT_TEMPLATES).join(", ")})`)
    .option("--chat-template-file <file>", "read the chat template (Jinja) from a file")
    .option("--no-display-prompt", "do not print the prompt before the generated text")
    .option("--ignore-eos", "never sample end-of-generation tokens (generate until -n or a full context)");
  addAttentionOptions(cmd);
  addMoeOptions(cmd);
  cmd.action(async (o: RunCliOptions) => {
    const attention = attentionFrom(o);
    const nPredict = parseIntArg("--n-predict", o.nPredict, -1);
    const nCtxOpt = parseIntArg("--ctx-size", o.ctxSize, 0);
    const threads = o.threads === undefined ? undefined : parseThreadsArg(o.threads);
    const sp = samplerParams(o);
    new Sampler(sp); // validates the sampling options before the model loads
    const parsed = moeOptionsFrom(o);
    if (o.prompt !== undefined && o.file !== undefined) throw new UsageError("give the prompt with -p or -f, not both");
    if (o.systemPrompt !== undefined && !o.conversation) throw new UsageError("--system-prompt (-sys) needs --conversation (-cnv)");
    const chatTemplate = chatTemplateFromOptions(o);
    if (chatTemplate !== undefined && !o.conversation) throw new UsageError("--chat-template needs --conversation (-cnv)");
    const promptText = o.file !== undefined ? readTextFile(o.file) : o.prompt;

    const tStart = performance.now();
    const { model, loadMs, moe } = await openModel(o.model, { moe: parsed.moe, overrideKv: parsed.overrideKv, threads, stats: parsed.stats, moeCache: parsed.moeCache, moePrefetch: parsed.moePrefetch, nCtx: nCtxOpt > 0 ? nCtxOpt : undefined });
    const timings = emptyTimings();
    let session: Session | undefined;
    try {
      const tokenizer = Tokenizer.fromMetadata(model.metadata);
      session = model.createSession({ ...(nCtxOpt > 0 ? { nCtx: nCtxOpt } : {}), moe, moeStats: parsed.stats, ...attention });
      const sampler = new Sampler(sp, session.nCtx);
      const ctx: RunContext = { model, session, tokenizer, sampler, timings, nPredict, ignoreEos: o.ignoreEos === true, interrupt: new Interrupt() };
      // a closed pipe (`tsmoe ... | head`) ends generation like Ctrl-C instead of crashing
      process.stdout.on("error", (e: NodeJS.ErrnoException) => {
        if (e.code !== "EPIPE") throw e;
        ctx.interrupt.requested = true;
      });
      if (o.conversation) await chat(ctx, { systemPrompt: o.systemPrompt, template: chatTemplate }, promptText);
      else await complete(ctx, promptText ?? DEFAULT_PROMPT, o.displayPrompt);
    } finally {
      if (timings.nPrompt > 0) printSummary(model, session!, loadMs, timings, performance.now() - tStart, parsed.stats);
      await model.dispose();
    }
  });
}

/** Timings and expert usage on stderr, once generation has started (also after Ctrl-C or an error). */
function printSummary(model: Model, session: Session, loadMs: number, timings: GenerationTimings, totalMs: number, stats: boolean): void {
  process.stderr.write("\n" + formatTimings(loadMs, timings, totalMs) + "\n");
  if (model.hparams.nExpert > 0) {
    process.stderr.write(formatMeanExperts(session.moeStats(), model.hparams) + "\n");
    if (stats) process.stderr.write(formatMoeStats(session.moeStats(), model.streaming?.stats()) + "\n");
  }
}

interface RunContext {
  model: Model;
  session: Session;
  tokenizer: Tokenizer;
  sampler: Sampler;
  timings: GenerationTimings;
  nPredict: number;
  ignoreEos: boolean;
  interrupt: Interrupt;
}

function checkFits(ctx: RunContext, nTokens: number): void {
  if (nTokens >= ctx.session.nCtx)
    throw new UsageError(`the prompt is too long: ${nTokens} tokens for a context of ${ctx.session.nCtx} (raise -c)`);
}

/** Plain completion of one prompt. */
async function complete(ctx: RunContext, prompt: string, display: boolean): Promise<void> {
  const tokens = ctx.tokenizer.tokenize(prompt, { addSpecial: true, parseSpecial: true });
  if (tokens.length === 0) throw new UsageError("the prompt is empty");
  checkFits(ctx, tokens.length);
  process.stderr.write(`sampler seed: ${ctx.sampler.seed}\n`);
  if (display) process.stdout.write(prompt);
  ctx.interrupt.install();
  try {
    const { stop } = await generate(ctx.session, ctx.sampler, ctx.tokenizer, tokens, {
      nPredict: ctx.nPredict,
      ignoreEos: ctx.ignoreEos,
      write: (s) => process.stdout.write(s),
      shouldStop: () => ctx.interrupt.requested,
      timings: ctx.timings,
    });
    process.stdout.write("\n");
    if (stop === "context") process.stderr.write("\ncontext full: generation stopped (raise -c)\n");
    if (stop === "interrupted") process.stderr.write("\ninterrupted\n");
    if (stop === "interrupted" && ctx.interrupt.bySignal) process.exitCode = 130; // after the timings, like llama-cli
  } finally {
    ctx.interrupt.remove();
  }
}

/**
 * Chat: each user line is added to the conversation, the whole conversation is rendered with the chat
 * template and tokenized, and only the tokens after what the session already holds are evaluated.
 */
async function chat(ctx: RunContext, opts: { systemPrompt?: string; template?: string }, firstUser: string | undefined): Promise<void> {
  const { tokenizer, session } = ctx;
  const { systemPrompt } = opts;
  let template = opts.template;
  if (template === undefined && !tokenizer.chatTemplate) {
    // as llama.cpp does for a model without a chat template
    process.stderr.write("the model has no chat template: using chatml (choose another with --chat-template)\n");
    template = BUILTIN_CHAT_TEMPLATES.chatml;
  }
  applyChatTemplate(tokenizer, [], { systemPrompt, template }); // a broken template fails before the first turn
  process.stderr.write(`sampler seed: ${ctx.sampler.seed}\n`);
  const messages: ChatMessage[] = [];
  let cached: number[] = [];
  const rl = createInterface({ input: process.stdin, terminal: false });
  const lines = rl[Symbol.asyncIterator]();
  let pendingFirst = firstUser;
  try {
    for (;;) {
      let user: string;
      if (pendingFirst !== undefined) {
        user = pendingFirst;
        pendingFirst = undefined;
        process.stdout.write(`\n> ${user}\n`);
      } else {
        process.stdout.write("\n> ");
        const next = await lines.next();
        if (next.done) break;
        user = next.value;
        if (!process.stdin.isTTY) process.stdout.write(user + "\n");
      }
      if (user.trim() === "") continue;
      messages.push({ role: "user", content: user });
      const text = applyChatTemplate(tokenizer, messages, { systemPrompt, template, addGenerationPrompt: true });
      const all = tokenizer.tokenize(text, { addSpecial: true, parseSpecial: true });
      checkFits(ctx, all.length);
      let keep = 0;
      while (keep < cached.length && keep < all.length - 1 && cached[keep] === all[keep]) keep++;
      session.truncate(keep);
      ctx.interrupt.requested = false;
      ctx.interrupt.bySignal = false;
      ctx.interrupt.install();
      let reply: number[];
      try {
        ({ tokens: reply } = await generate(session, ctx.sampler, tokenizer, all.slice(keep), {
          nPredict: ctx.nPredict,
          ignoreEos: ctx.ignoreEos,
          write: (s) => process.stdout.write(s),
          shouldStop: () => ctx.interrupt.requested,
          timings: ctx.timings,
        }));
      } finally {
        ctx.interrupt.remove();
      }
      process.stdout.write("\n");
      cached = [...all, ...reply];
      messages.push({ role: "assistant", content: tokenizer.detokenize(reply) });
      if (session.nPast >= session.nCtx - 1) {
        process.stderr.write("context full: conversation ended (raise -c)\n");
        break;
      }
    }
  } finally {
    rl.close();
  }
}
