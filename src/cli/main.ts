/**
 * tsmoe command line: one file per command in src/cli/, each exporting `register(program)`.
 * Errors thrown by commands become one line on stderr and exit code 1.
 */
import { Command, CommanderError } from "commander";
import { TsmoeError, UsageError } from "../errors.ts";
import { VERSION } from "../version.ts";
import { register as registerInfo } from "./info.ts";
import { register as registerBench } from "./bench.ts";
import { register as registerRun, expandLlamaFlags } from "./run.ts";
import { register as registerPerplexity } from "./perplexity.ts";
import { register as registerTradeoff } from "./tradeoff.ts";
import { register as registerTune } from "./tune.ts";
import { register as registerTokenize } from "./tokenize.ts";
import { register as registerEval } from "./eval.ts";
import { register as registerServe } from "./serve.ts";

export function buildProgram(): Command {
  const program = new Command();
  program
    .name("tsmoe")
    .description("Pure-TypeScript CPU inference for GGUF Mixture-of-Experts models, with --moe-n-expert")
    .version(`version: ${VERSION} (Node.js ${process.version}, ${process.platform}-${process.arch})`, "--version", "print the version and exit")
    .showHelpAfterError(false)
    .exitOverride();
  registerInfo(program);
  registerBench(program);
  registerRun(program);
  registerPerplexity(program);
  registerTradeoff(program);
  registerTune(program);
  registerTokenize(program);
  registerEval(program);
  registerServe(program);
  return program;
}

export function reportError(err: unknown): never {
  if (err instanceof CommanderError) {
    // commander already printed its message (help, version, usage errors)
    process.exit(err.exitCode === 0 ? 0 : 1);
  }
  const msg = err instanceof TsmoeError ? err.message : err instanceof Error ? err.message : String(err);
  process.stderr.write(`error: ${msg.split("\n")[0]}\n`);
  if (process.env.TSMOE_DEBUG && err instanceof Error && err.stack) process.stderr.write(err.stack + "\n");
  process.exit(1);
}

/**
 * A closed pipe (`tsmoe tokenize ... | head -2`) ends the command quietly with exit status 0, as most
 * command-line tools end on a closed pipe, instead of an unhandled EPIPE. A command that wants to finish up
 * first (run stops generating and prints its timings) adds its own "error" listener on stdout; then this
 * one leaves the stream to it. Other write errors are reported as one line.
 */
export function endQuietlyOnClosedPipe(stream: NodeJS.WriteStream): void {
  stream.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code !== "EPIPE") reportError(e);
    if (stream.listenerCount("error") === 1) process.exit(0);
  });
}

/** Levenshtein distance (insertions, deletions, substitutions) */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

/**
 * A first argument that is not an option must name a command (run takes no positional arguments). Without
 * this, `tsmoe perplexty` reached the default command as "too many arguments for 'run'"; like git, name
 * the closest command instead.
 */
function checkCommandName(program: Command, argv: string[]): void {
  const word = argv[2];
  if (word === undefined || word.startsWith("-")) return;
  const names = [...program.commands.map((c) => c.name()), "help"];
  if (names.includes(word)) return;
  const best = names.map((n) => ({ n, d: editDistance(word, n) })).sort((x, y) => x.d - y.d)[0];
  const hint = best.d <= Math.max(2, Math.floor(best.n.length / 3)) ? `; did you mean '${best.n}'?` : ` (commands: ${names.join(", ")})`;
  throw new UsageError(`'${word}' is not a tsmoe command${hint}`);
}

export async function main(argv: string[]): Promise<void> {
  endQuietlyOnClosedPipe(process.stdout);
  endQuietlyOnClosedPipe(process.stderr);
  try {
    const program = buildProgram();
    const args = expandLlamaFlags(argv);
    checkCommandName(program, args);
    await program.parseAsync(args);
  } catch (err) {
    reportError(err);
  }
}
