/**
 * The WASM modules a thread has compiled, handed to the pool's worker threads when they start: a worker
 * then neither emits nor compiles them (a pool starts faster) and all threads share V8's compiled code.
 */
import { attentionModule } from "./attention-kernels.ts";
import { quantizeModule } from "./quantize-kernels.ts";
import { adoptCompiledKernels, compiledKernels, type Compiled } from "./runtime.ts";
import type { WasmModule } from "./webassembly.ts";

export interface CompiledWasm {
  kernels?: Compiled;
  attention?: WasmModule;
  quantize?: WasmModule;
}

/** This thread's compiled modules (compiling those not compiled yet); a field is absent where WASM fails. */
export function compiledWasm(): CompiledWasm {
  return { kernels: compiledKernels(), attention: attentionModule.compiledModule(), quantize: quantizeModule.compiledModule() };
}

/** Makes this thread use modules compiled by another thread of the same process. */
export function adoptCompiledWasm(c: CompiledWasm): void {
  if (c.kernels) adoptCompiledKernels(c.kernels);
  if (c.attention) attentionModule.adopt(c.attention);
  if (c.quantize) quantizeModule.adopt(c.quantize);
}
