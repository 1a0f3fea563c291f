/**
 * Element-wise and row-wise tensor operations of the forward pass on row-major Float32Arrays, computed in
 * float32 the way ggml's CPU backend computes them (RMSNorm with a double sum, RoPE with a float theta
 * recurrence, SiLU as x / (1 + e^-x)). Writing each intermediate into a Float32Array rounds it to float32.
 */
import type { ModelHParams } from "./hparams.ts";

import { swigluRange } from "../kernels/glu.ts";

const f32 = Math.fround;

/**
 * RMS normalisation of nRows rows of length n: dst = src / sqrt(mean(src^2) + eps) [* w].
 * src and dst may be the same array. Offsets let callers normalise rows inside a larger buffer.
 */
export function rmsNorm(
  src: Float32Array,
  dst: Float32Array,
  nRows: number,
  n: number,
  eps: number,
  w?: Float32Array,
  stride = n,
): void {
  for (let r = 0; r < nRows; r++) {
    const o = r * stride;
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const v = src[o + i];
      sum += f32(v * v);
    }
    const mean = f32(sum / n);
    const scale = f32(1 / f32(Math.sqrt(f32(mean + eps))));
    if (w) {
      for (let i = 0; i < n; i++) dst[o + i] = f32(src[o + i] * scale) * w[i];
    } else {
      for (let i = 0; i < n; i++) dst[o + i] = src[o + i] * scale;
    }
  }
}

/** a[i] += b[i] for i < n */
export function addInPlace(a: Float32Array, b: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) a[i] += b[i];
}

/** x[i] = x[i] * s in float32 for i < n (ggml_scale) */
export function scaleInPlace(x: Float32Array, s: number, n: number): void {
  const f = f32(s);
  for (let i = 0; i < n; i++) x[i] *= f;
}

/** Adds the bias vector b (length n) to each of nRows rows of x. */
export function addRowBias(x: Float32Array, b: Float32Array, nRows: number, n: number): void {
  for (let r = 0; r < nRows; r++) {
    const o = r * n;
    for (let i = 0; i < n; i++) x[o + i] += b[i];
  }
}

/** SiLU in float32: x / (1 + e^-x). */
export { silu } from "../kernels/glu.ts";

export function sigmoid(x: number): number {
  return f32(1 / f32(1 + f32(Math.exp(-x))));
}

/** SwiGLU: gate[i] = silu(gate[i]) * up[i] for i < n (in place in gate). */
export function swiglu(gate: Float32Array, up: Float32Array, n: number): void {
  swigluRange(gate, up, 0, n);
}

/**
 * gpt-oss's clamped SwiGLU (ggml_swiglu_oai): x = min(gate, limit), y = clamp(up, -limit, limit),
 * gate[i] = x / (1 + e^(-alpha x)) * (y + 1), in place in gate.
 */
export function swigluOai(gate: Float32Array, up: Float32Array, n: number, alpha = 1.702, limit = 7): void {
  const a = f32(alpha);
  for (let i = 0; i < n; i++) {
    const x = Math.min(gate[i], limit);
    const y = Math.min(Math.max(up[i], -limit), limit);
    const glu = f32(x / f32(1 + f32(Math.exp(f32(a * -x)))));
    gate[i] = glu * f32(y + 1);
  }
}

/** The RoPE parameters of a model (ggml_rope_ext's arguments, as llama.cpp passes them). */
export interface RopeParams {
  nRot: number;
  neox: boolean;
  freqBase: number;
  freqScale: number;
  extFactor: number;
  attnFactor: number;
  /** YaRN correction dims [start, end] */
  corrDims: [number, number];
  /** per-pair frequency divisors (Llama 3 rope_freqs.weight), length nRot/2 */
  freqFactors?: Float32Array;
}

/**
 * RoPE parameters as llama_context derives them: YaRN (ext_factor 1) when the scaling type is yarn, with
 * its magnitude correction folded into the attention factor.
 */
export function ropeParams(hp: ModelHParams, freqFactors?: Float32Array): RopeParams {
  const nRot = hp.nRot;
  const extFactor = hp.ropeScaling === "yarn" ? 1 : 0;
  let attnFactor = 1;
  if (extFactor !== 0) {
    const factor = 1 / hp.ropeFreqScale;
    const mscale = (scale: number, m: number) => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1);
    attnFactor = hp.ropeYarnLogMul !== 0 ? mscale(factor, 1) / mscale(factor, hp.ropeYarnLogMul) : mscale(factor, 1);
    attnFactor *= 1 / (1 + 0.1 * Math.log(factor));
  }
  attnFactor *= hp.ropeAttnFactor;
  const corrDim = (beta: number) =>
    (nRot * Math.log(hp.nCtxOrigYarn / (beta * 2 * Math.PI))) / (2 * Math.log(hp.ropeBase));
  const start = Math.floor(f32(corrDim(hp.yarnBetaFast)));
  const end = Math.ceil(f32(corrDim(hp.yarnBetaSlow)));
  return {
    nRot,
    neox: hp.ropeType === "neox",
    freqBase: hp.ropeBase,
    freqScale: f32(hp.ropeFreqScale),
    extFactor,
    attnFactor: f32(attnFactor),
    corrDims: [Math.max(0, start), Math.min(nRot - 1, end)],
    freqFactors,
  };
}

/**
 * cos/sin table for the given positions: table[(t * nRot/2 + i) * 2 + {0: cos, 1: sin}] for the i-th
 * rotated pair of token t (ggml_rope_cache_init: theta = pos * base^(-2i/nRot), float recurrence, divided
 * by the optional frequency factors, YaRN ramp).
 */
export function ropeTable(p: RopeParams, positions: ArrayLike<number>, nTokens: number, table: Float32Array): void {
  const half = p.nRot / 2;
  const thetaScale = f32(Math.pow(p.freqBase, -2 / p.nRot));
  let mscale = p.attnFactor;
  if (p.extFactor !== 0) mscale = f32(mscale * f32(1 + f32(0.1 * Math.log(1 / p.freqScale))));
  for (let t = 0; t < nTokens; t++) {
    let theta = f32(positions[t]);
    const o = t * half * 2;
    for (let i = 0; i < half; i++) {
      const thetaExtrap = p.freqFactors ? f32(theta / p.freqFactors[i]) : theta;
      let th = f32(p.freqScale * thetaExtrap);
      if (p.extFactor !== 0) {
        const y = (i - p.corrDims[0]) / Math.max(0.001, p.corrDims[1] - p.corrDims[0]);
        const ramp = f32(f32(1 - Math.min(1, Math.max(0, y))) * p.extFactor);
        th = f32(f32(th * f32(1 - ramp)) + f32(thetaExtrap * ramp));
      }
      table[o + 2 * i] = f32(Math.cos(th)) * mscale;
      table[o + 2 * i + 1] = f32(Math.sin(th)) * mscale;
      theta = f32(theta * thetaScale);
    }
  }
}

/**
 * Rotates the first nRot values of each head in place: x holds nTokens rows of nHeads heads of headDim.
 * NORM rotates adjacent pairs (2i, 2i+1); NEOX rotates (i, i + nRot/2).
 */
export function rope(
  p: RopeParams,
  table: Float32Array,
  x: Float32Array,
  nTokens: number,
  nHeads: number,
  headDim: number,
): void {
  const half = p.nRot / 2;
  const step = p.neox ? 1 : 2;
  const off = p.neox ? half : 1;
  for (let t = 0; t < nTokens; t++) {
    const to = t * half * 2;
    for (let h = 0; h < nHeads; h++) {
      const base = (t * nHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const c = table[to + 2 * i];
        const s = table[to + 2 * i + 1];
        const a = base + i * step;
        const x0 = x[a];
        const x1 = x[a + off];
        x[a] = f32(x0 * c) - f32(x1 * s);
        x[a + off] = f32(x0 * s) + f32(x1 * c);
      }
    }
  }
}

export { softmaxInPlace } from "../kernels/softmax.ts";
