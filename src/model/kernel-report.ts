/**
 * Which weights run on the slower TypeScript reference kernels, and why: reported once at load (one line
 * on stderr, by the CLI) and by `tsmoe info`, so that no model is silently slow. A weight gets a WASM
 * kernel when its type has one and its bytes lie in a WebAssembly memory (src/kernels/wasm/memory.ts:
 * a tensor larger than one memory cannot).
 */
import { formatBytes } from "../gguf/summary.ts";
import type { TensorEntry } from "../gguf/types.ts";
import { arenaOf, maxArenaTensorBytes, wasmDisabled } from "../kernels/wasm/memory.ts";
import { kernelName, wasmRuntime } from "../kernels/wasm/runtime.ts";
import { relaxedSimd } from "../kernels/wasm/relaxed.ts";
import { typeName } from "../tensor/types.ts";

export interface ReferenceKernels {
  /** weight tensors (matrix products) and their bytes */
  tensors: number;
  bytes: number;
  /** of those, the ones on the reference kernels, by reason */
  slow: { reason: string; tensors: number; bytes: number }[];
}

/**
 * The tensors that matrix products read: every tensor of two or more dimensions, except the token
 * embedding (rows are looked up, not multiplied) unless the model has no output.weight (tied output).
 */
export function productTensors(tensors: Map<string, TensorEntry>): TensorEntry[] {
  const tied = !tensors.has("output.weight");
  return [...tensors.values()].filter((t) => t.shape.length >= 2 && (tied || t.name !== "token_embd.weight"));
}

/**
 * Why tensor `t` runs on the reference kernels, or undefined when it gets a WASM kernel. `placed`: whether
 * its bytes lie in a WebAssembly memory (undefined before the data is read: then judged by its size).
 */
function slowReason(t: TensorEntry, placed: boolean | undefined, wasmOk: boolean): string | undefined {
  if (wasmDisabled()) return process.env.TSMOE_WASM === "0" ? "WebAssembly kernels are off (TSMOE_WASM=0)" : "WebAssembly SIMD is unavailable";
  if (!wasmOk) return "WebAssembly SIMD is unavailable";
  if (kernelName(t.type, 1) === undefined) return `no WASM kernel for ${typeName(t.type)}`;
  const fits = placed ?? t.nBytes <= maxArenaTensorBytes();
  if (!fits) return `larger than a WebAssembly memory (${formatBytes(maxArenaTensorBytes())})`;
  return undefined;
}

/**
 * The weight tensors of a model and those on the reference kernels. With `loaded`, where their bytes
 * actually are decides; without (header only), their type and size.
 */
export function referenceKernels(tensors: Map<string, TensorEntry>, loaded: boolean): ReferenceKernels {
  const wasmOk = loaded ? wasmRuntime() !== undefined : true;
  const report: ReferenceKernels = { tensors: 0, bytes: 0, slow: [] };
  for (const t of productTensors(tensors)) {
    report.tensors++;
    report.bytes += t.nBytes;
    // a loaded tensor without data is streamed from the file (./expert-cache.ts) into slots in a WASM memory
    const placed = !loaded ? undefined : t.data.length === 0 && t.nBytes > 0 ? true : arenaOf(t.data.buffer) !== undefined;
    const reason = slowReason(t, placed, wasmOk);
    if (reason === undefined) continue;
    let r = report.slow.find((s) => s.reason === reason);
    if (!r) report.slow.push((r = { reason, tensors: 0, bytes: 0 }));
    r.tensors++;
    r.bytes += t.nBytes;
  }
  return report;
}

/** One line naming how many weight tensors and bytes run on the reference kernels and why; undefined when none. */
export function formatReferenceKernels(r: ReferenceKernels): string | undefined {
  if (r.slow.length === 0) return undefined;
  const n = r.slow.reduce((a, s) => a + s.tensors, 0);
  const b = r.slow.reduce((a, s) => a + s.bytes, 0);
  const why = r.slow.map((s) => `${s.reason} (${s.tensors} tensors, ${formatBytes(s.bytes)})`).join("; ");
  return `${n} of ${r.tensors} weight tensors (${formatBytes(b)} of ${formatBytes(r.bytes)}) run on the slower TypeScript reference kernels: ${why}`;
}

/** The instruction set the WASM kernels use (SIMD128, or relaxed SIMD: ../kernels/wasm/relaxed.ts); undefined when WASM is off. */
export function wasmInstructionSet(): string | undefined {
  return wasmDisabled() ? undefined : relaxedSimd().describe;
}
