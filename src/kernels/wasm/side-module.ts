/**
 * A small WASM module of its own next to the matmul kernels (attention, activation quantization): emitted
 * and compiled once per thread (or adopted from another thread, see ./shared-modules.ts), instantiated
 * over the shared memory (./memory.ts), with a scratch area of this thread's in that memory. `kernels()` is undefined when WASM is off or the module does not compile,
 * and the callers then run their TypeScript code.
 */
import { Wasm, type WasmMemory, type WasmModule } from "./webassembly.ts";
import { wasmAlloc, wasmDisabled, wasmMemory } from "./memory.ts";

export class SideModule<K extends object> {
  private compiled: WasmModule | undefined;
  private current: (K & { memory: WasmMemory }) | undefined;
  private failed = false;
  private scratch = { addr: 0, size: 0 };

  constructor(
    private readonly bytes: () => Uint8Array<ArrayBuffer>,
    private readonly bind: (exports: Record<string, unknown>) => K,
  ) {}

  /** This thread's kernels over the shared memory, or undefined when WASM is off or unavailable. */
  kernels(): (K & { memory: WasmMemory }) | undefined {
    if (this.failed) return undefined;
    const memory = wasmMemory();
    if (!memory || wasmDisabled()) return undefined;
    if (this.current && this.current.memory === memory) return this.current;
    const module = this.compiledModule();
    if (!module) return undefined;
    try {
      const inst = new Wasm!.Instance(module, { env: { memory } });
      this.current = { ...this.bind(inst.exports), memory };
      this.scratch = { addr: 0, size: 0 };
      return this.current;
    } catch {
      this.failed = true;
      return undefined;
    }
  }

  /** The compiled module (compiled now if need be), to hand to worker threads; undefined if it does not compile. */
  compiledModule(): WasmModule | undefined {
    if (this.failed || !Wasm) return undefined;
    try {
      return (this.compiled ??= new Wasm.Module(this.bytes()));
    } catch {
      this.failed = true;
      return undefined;
    }
  }

  /** Uses a module another thread compiled (see compiledModule) instead of emitting and compiling it here. */
  adopt(module: WasmModule): void {
    this.compiled ??= module;
  }

  /** The address of this thread's scratch area of at least `bytes` bytes (grown on demand). */
  scratchAddr(bytes: number): number | undefined {
    if (this.scratch.size < bytes) {
      const size = Math.max(bytes, 2 * this.scratch.size, 1 << 16);
      const addr = wasmAlloc(size);
      if (addr === undefined) return undefined;
      this.scratch = { addr, size };
    }
    return this.scratch.addr;
  }
}
