/**
 * In-place softmax of v[0..n) (float exps, double sum, as ggml_vec_soft_max_f32). With `sink` (an
 * attention sink logit, gpt-oss) the sink joins the max and the denominator but gets no output slot,
 * as ggml_soft_max_add_sinks does.
 */
const f32 = Math.fround;

export function softmaxInPlace(v: Float32Array, n: number, sink?: number): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (v[i]! > max) max = v[i]!;
  if (sink !== undefined && sink > max) max = sink;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = f32(Math.exp(v[i]! - max));
    v[i] = e;
    sum += e;
  }
  if (sink !== undefined) sum += f32(Math.exp(sink - max));
  const inv = f32(1 / sum);
  for (let i = 0; i < n; i++) v[i]! *= inv;
}
