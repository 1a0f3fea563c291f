/**
 * tsmoe command line: one file per command in src/cli/, each exporting `register(program)`.
 * Errors thrown by commands become one line on stderr and exit code 1.
 */
import { Command, CommanderError } from "commander";
import { TsmoeError } from "../errors.ts";
import { register as registerInfo } from "./info.ts";
import { register as registerBench } from "./bench.ts";
import { register as registerRun, expandLlamaFlags } from "./run.ts";
import { register as registerPerplexity } from "./perplexity.ts";
import { register as registerTradeoff } from "./tradeoff.ts";
import { register as registerTune } from "./tune.ts";
import { register as registerTokenize } from "./tokenize.ts";
import { register as registerEval } from "./eval.ts";

export function buildProgram(): Command {
  const program = new Command();
  program
    .name("tsmoe")
    .description("Pure-TypeScript CPU inference for GGUF Mixture-of-Experts models, with --moe-n-expert")
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

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(expandLlamaFlags(argv));
  } catch (err) {
    reportError(err);
  }
}
