/**
 * WebAssembly relaxed SIMD: whether the batch and decode kernels of Q4_K, Q5_K and Q6_K
 * (./tile-kernels.ts `emitDotKRelaxed`, ./decode-kernels.ts) use `i16x8.relaxed_dot_i8x16_i7x16_s`, which
 * multiplies 16 int8 activations by 16 weight quants in one instruction (x86 pmaddubsw), where SIMD128's
 * best, `i32x4.dot_i16x8_s`, takes 8 values widened to int16 first.
 *
 * The relaxed dot product is exact and the same on every engine when its second operand's lanes lie in
 * 0..127 and the sum of two products fits in int16: the kernels give it the unsigned weight quants
 * (0..15, 0..31, 0..63) and the int8 activations (|2 * 63 * 128| < 32768), so results are bit-identical
 * to the SIMD128 kernels (tested in test/wasm-relaxed.test.ts).
 *
 * Node 22+ has relaxed SIMD; Node 20 (V8 11.3) only behind --experimental-wasm-relaxed-simd.
 * TSMOE_WASM_RELAXED=1 sets that flag at run time (before the kernel module is compiled; V8 flags are
 * process-wide, so worker threads see it too), TSMOE_WASM_RELAXED=0 keeps the SIMD128 kernels where relaxed
 * SIMD is available. Which path runs is shown by `tsmoe info` (kernels row).
 */
import v8 from "node:v8";
import { Code, Simd, V128, encodeModule } from "./emitter.ts";
import { Wasm } from "./webassembly.ts";

const V8_FLAG = "--experimental-wasm-relaxed-simd";

/** A module with one function using the relaxed dot product: accepted iff the engine has relaxed SIMD. */
function probeBytes(): Uint8Array<ArrayBuffer> {
  const c = new Code(2);
  c.get(0).get(1).simd(Simd.i16x8RelaxedDotI8x16I7x16S);
  return encodeModule([{ name: "probe", params: [V128, V128], results: [V128], code: c }], 1, 1);
}

function engineHasRelaxed(): boolean {
  try {
    return Wasm?.validate(probeBytes()) ?? false;
  } catch {
    return false;
  }
}

export interface RelaxedStatus {
  /** whether the engine has relaxed SIMD (after TSMOE_WASM_RELAXED=1 set the V8 flag) */
  available: boolean;
  /** whether the kernels use it */
  on: boolean;
  /** whether TSMOE_WASM_RELAXED=1 set the V8 flag to get it */
  flagged: boolean;
  /** one phrase for `tsmoe info` */
  describe: string;
}

let status: RelaxedStatus | undefined;

/** Detects relaxed SIMD (once per thread), setting the V8 flag first when TSMOE_WASM_RELAXED=1 asks for it. */
export function relaxedSimd(): RelaxedStatus {
  if (status) return status;
  const env = process.env.TSMOE_WASM_RELAXED;
  let available = engineHasRelaxed();
  let flagged = false;
  if (!available && env === "1") {
    v8.setFlagsFromString(V8_FLAG);
    available = engineHasRelaxed();
    flagged = available;
  }
  const on = available && env !== "0";
  let describe: string;
  if (on) describe = `relaxed SIMD (Q4_K/Q5_K/Q6_K batch and decode kernels${flagged ? `; V8 ${V8_FLAG} set by TSMOE_WASM_RELAXED=1` : ""})`;
  else if (available) describe = "SIMD128 (relaxed SIMD off: TSMOE_WASM_RELAXED=0)";
  else if (env === "1") describe = `SIMD128 (TSMOE_WASM_RELAXED=1, but Node ${process.versions.node} has no relaxed SIMD)`;
  else describe = `SIMD128 (relaxed SIMD: Node 22+, or TSMOE_WASM_RELAXED=1 on Node ${process.versions.node})`;
  status = { available, on, flagged, describe };
  return status;
}

/**
 * Benchmarks and tests: switches this thread's batch kernels between the relaxed (`on`) and the SIMD128
 * ones. Throws when relaxed SIMD is unavailable and `on` is asked for.
 */
export function setRelaxedSimd(on: boolean): void {
  const s = relaxedSimd();
  if (on && !s.available) throw new Error("relaxed SIMD is not available in this engine");
  status = { ...s, on };
}
