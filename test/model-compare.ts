/**
 * Comparing next-token distributions of two sets of logits (tsmoe vs llama.cpp): per-position KL
 * divergence KL(ref || ours) in nats and top-1 agreement, with positions left out where a MoE router's
 * top-k margin is below a threshold (a different expert may legitimately be chosen there).
 */
import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";

export interface Golden {
  model: string;
  arch: string;
  n_expert?: number;
  n_expert_used?: number;
  n_vocab: number;
  tokens: number[];
  logits: number[][];
  router_margins?: { per_position_min: number[]; min: number };
}

export function readGolden(path: string): Golden {
  return JSON.parse(gunzipSync(readFileSync(path)).toString("utf8")) as Golden;
}

function logSoftmax(row: ArrayLike<number>, n: number, off = 0): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, row[off + i]);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(row[off + i] - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = row[off + i] - lse;
  return out;
}

function argmax(v: ArrayLike<number>, n: number, off = 0): number {
  let b = 0;
  for (let i = 1; i < n; i++) if (v[off + i] > v[off + b]) b = i;
  return b;
}

export interface Agreement {
  /** positions compared (after leaving out tiny router margins) */
  positions: number;
  left_out: number;
  meanKl: number;
  maxKl: number;
  top1: number;
  /** largest absolute logit difference over compared positions */
  maxAbsDiff: number;
}

/**
 * Compares reference rows of logits (one per position; log-probabilities serve too, -Infinity for a
 * probability of 0) with ours (row-major [positions x nVocab]).
 * `margins`/`minMargin`: positions whose router margin is below minMargin are left out.
 */
export function compareLogits(
  ref: ArrayLike<number>[],
  ours: Float32Array,
  nVocab: number,
  margins?: number[],
  minMargin = 0,
): Agreement {
  let n = 0;
  let klSum = 0;
  let maxKl = 0;
  let same = 0;
  let maxAbsDiff = 0;
  let leftOut = 0;
  for (let p = 0; p < ref.length; p++) {
    if (margins && margins[p] < minMargin) {
      leftOut++;
      continue;
    }
    const lp = logSoftmax(ref[p], nVocab);
    const lq = logSoftmax(ours, nVocab, p * nVocab);
    let kl = 0;
    for (let i = 0; i < nVocab; i++) {
      if (lp[i] > -Infinity) kl += Math.exp(lp[i]) * (lp[i] - lq[i]); // a zero reference probability adds nothing
      maxAbsDiff = Math.max(maxAbsDiff, Math.abs(ref[p][i] - ours[p * nVocab + i]));
    }
    klSum += kl;
    maxKl = Math.max(maxKl, kl);
    if (argmax(ref[p], nVocab) === argmax(ours, nVocab, p * nVocab)) same++;
    n++;
  }
  return { positions: n, left_out: leftOut, meanKl: n ? klSum / n : 0, maxKl, top1: n ? same / n : 1, maxAbsDiff };
}
