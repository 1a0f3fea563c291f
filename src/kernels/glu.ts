/**
 * SwiGLU, the gated activation of llama-style FFNs (ggml_swiglu): gate = silu(gate) * up, element by
 * element, in float32 as the C code computes it. Kept next to the kernels because the worker pool applies
 * it to the rows it has just computed (fused gate/up products, see src/pool/job.ts).
 */
const f32 = Math.fround;

export function silu(x: number): number {
  return f32(x / f32(1 + f32(Math.exp(-x))));
}

/** gate[i] = silu(gate[i]) * up[i] for start <= i < end (in place in gate). */
export function swigluRange(gate: Float32Array, up: Float32Array, start: number, end: number): void {
  for (let i = start; i < end; i++) gate[i] = silu(gate[i]!) * up[i]!;
}
