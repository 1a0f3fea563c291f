/**
 * `tsmoe info [-m FILE] [--json]`: architecture, hyper-parameters, tensor counts by type, parameter count and
 * file size of a GGUF model (header only: tensor data is not read).
 */
import type { Command } from "commander";
import { loadGguf } from "../gguf/reader.ts";
import { modelOption } from "./progress.ts";
import { formatSummary, summarize } from "../gguf/summary.ts";
import { formatReferenceKernels, referenceKernels, wasmInstructionSet } from "../model/kernel-report.ts";

export function register(program: Command): void {
  program
    .command("info")
    .description("print a GGUF model's architecture, hyper-parameters and tensor types")
    .addOption(modelOption())
    .option("--json", "print one JSON object")
    .action(async (opts: { model: string; json?: boolean }) => {
      const file = await loadGguf(opts.model, { headerOnly: true });
      const summary = summarize(file);
      const kernels = referenceKernels(file.tensors, false);
      const slow = formatReferenceKernels(kernels);
      const simd = wasmInstructionSet();
      if (opts.json) process.stdout.write(JSON.stringify({ ...summary, reference_kernels: kernels.slow, wasm_simd: simd ?? null }) + "\n");
      else process.stdout.write(formatSummary(summary, [["kernels", (slow ?? `WASM for all ${kernels.tensors} weight tensors`) + (simd ? `; ${simd}` : "")]]) + "\n");
    });
}
