import type { Command } from "commander";
export function register(program: Command): void {
  program.command("info").description("print model information").requiredOption("-m, --model <file>").action(() => {
    throw new Error("info: not written yet");
  });
}
