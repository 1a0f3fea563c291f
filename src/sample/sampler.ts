/**
 * Token sampling with llama.cpp's default chain and defaults:
 * repetition penalty → top-k → top-p → min-p → temperature → random draw (`--temp 0` is greedy).
 * The candidate list is kept sorted by logit (descending) after top-k, as llama.cpp does.
 */
import { UsageError } from "../errors.ts";
import { Rng, resolveSeed } from "./rng.ts";

export interface SamplerParams {
  /** <= 0: greedy (always the most likely token) */
  temp: number;
  /** <= 0: the whole vocabulary */
  topK: number;
  /** 1.0 disables */
  topP: number;
  /** 0.0 disables */
  minP: number;
  /** 1.0 disables */
  repeatPenalty: number;
  /** last N tokens penalised (0 disables, -1 = the context size) */
  repeatLastN: number;
  /** negative or 0xFFFFFFFF: random */
  seed: number;
  /** the fewest candidates top-p / min-p keep */
  minKeep: number;
}

/** llama.cpp's defaults (common/common.h). */
export const DEFAULT_SAMPLER_PARAMS: SamplerParams = {
  temp: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1.0,
  repeatLastN: 64,
  seed: -1,
  minKeep: 1,
};

export function validateSamplerParams(p: SamplerParams): void {
  const bad = (name: string, why: string) => {
    throw new UsageError(`${name}: ${why}`);
  };
  if (!Number.isFinite(p.temp)) bad("--temp", "must be a number");
  if (!Number.isInteger(p.topK)) bad("--top-k", "must be an integer");
  if (!(p.topP >= 0 && p.topP <= 1)) bad("--top-p", `must be between 0 and 1 (got ${p.topP})`);
  if (!(p.minP >= 0 && p.minP <= 1)) bad("--min-p", `must be between 0 and 1 (got ${p.minP})`);
  if (!(p.repeatPenalty > 0) || !Number.isFinite(p.repeatPenalty))
    bad("--repeat-penalty", `must be a positive number (got ${p.repeatPenalty})`);
  if (!Number.isInteger(p.repeatLastN) || p.repeatLastN < -1)
    bad("--repeat-last-n", `must be an integer >= -1 (got ${p.repeatLastN})`);
}

/** The candidates left after each step: token ids and their (possibly modified) logits. */
export interface Candidates {
  ids: Int32Array;
  logits: Float32Array;
  size: number;
}

export class Sampler {
  readonly params: SamplerParams;
  /** the seed actually used (resolved when random) */
  readonly seed: number;
  private readonly rng: Rng;
  private readonly history: number[] = [];
  private readonly counts = new Map<number, number>();
  private readonly penaltyWindow: number;

  constructor(params: Partial<SamplerParams>, nCtx = 4096) {
    this.params = { ...DEFAULT_SAMPLER_PARAMS, ...params };
    validateSamplerParams(this.params);
    this.seed = resolveSeed(this.params.seed);
    this.rng = new Rng(this.seed);
    this.penaltyWindow = this.params.repeatLastN === -1 ? nCtx : this.params.repeatLastN;
  }

  /** Records a token (prompt or generated) for the repetition penalty. */
  accept(token: number): void {
    if (this.penaltyWindow <= 0) return;
    this.history.push(token);
    this.counts.set(token, (this.counts.get(token) ?? 0) + 1);
    if (this.history.length > this.penaltyWindow) {
      const old = this.history.shift()!;
      const c = this.counts.get(old)! - 1;
      if (c === 0) this.counts.delete(old);
      else this.counts.set(old, c);
    }
  }

  /** Picks the next token from one row of logits (does not call accept). */
  sample(logits: Float32Array): number {
    const p = this.params;
    const work = this.applyPenalties(logits);
    if (p.temp <= 0) return argmax(work);
    const cand = topK(work, p.topK);
    topP(cand, p.topP, p.minKeep);
    minP(cand, p.minP, p.minKeep);
    applyTemperature(cand, p.temp);
    return cand.ids[drawIndex(cand, this.rng.nextDouble())];
  }

  /** The penalised logits (a copy when any penalty applies). */
  applyPenalties(logits: Float32Array): Float32Array {
    const penalty = this.params.repeatPenalty;
    if (penalty === 1 || this.counts.size === 0) return logits;
    const out = new Float32Array(logits);
    for (const tok of this.counts.keys()) {
      if (tok < 0 || tok >= out.length) continue;
      out[tok] = out[tok] <= 0 ? out[tok] * penalty : out[tok] / penalty;
    }
    return out;
  }
}

export function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** The k largest logits, sorted descending (k <= 0: all of them). */
export function topK(logits: Float32Array, k: number): Candidates {
  const n = logits.length;
  if (k <= 0 || k > n) k = n;
  let ids: Int32Array;
  if (k === n) {
    ids = new Int32Array(n);
    for (let i = 0; i < n; i++) ids[i] = i;
  } else {
    ids = selectTopK(logits, k);
  }
  const order = Array.from(ids).sort((a, b) => logits[b] - logits[a] || a - b);
  const out: Candidates = { ids: Int32Array.from(order), logits: new Float32Array(k), size: k };
  for (let i = 0; i < k; i++) out.logits[i] = logits[out.ids[i]];
  return out;
}

/** Indices of the k largest values (unordered), by a size-k min-heap. */
function selectTopK(x: Float32Array, k: number): Int32Array {
  const heap = new Int32Array(k);
  let size = 0;
  const less = (a: number, b: number) => x[a] < x[b] || (x[a] === x[b] && a > b);
  const siftDown = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < size && less(heap[l], heap[m])) m = l;
      if (r < size && less(heap[r], heap[m])) m = r;
      if (m === i) return;
      const t = heap[i];
      heap[i] = heap[m];
      heap[m] = t;
      i = m;
    }
  };
  for (let i = 0; i < x.length; i++) {
    if (size < k) {
      let j = size++;
      heap[j] = i;
      while (j > 0) {
        const parent = (j - 1) >> 1;
        if (!less(heap[j], heap[parent])) break;
        const t = heap[j];
        heap[j] = heap[parent];
        heap[parent] = t;
        j = parent;
      }
    } else if (less(heap[0], i)) {
      heap[0] = i;
      siftDown(0);
    }
  }
  return heap;
}

/** Softmax probabilities of the candidates (which are sorted, so the first logit is the largest). */
export function softmaxCandidates(c: Candidates): Float64Array {
  const probs = new Float64Array(c.size);
  const max = c.logits[0];
  let sum = 0;
  for (let i = 0; i < c.size; i++) {
    probs[i] = Math.exp(c.logits[i] - max);
    sum += probs[i];
  }
  for (let i = 0; i < c.size; i++) probs[i] /= sum;
  return probs;
}

/** Keeps the fewest top candidates whose probabilities sum to at least p (and at least minKeep). */
export function topP(c: Candidates, p: number, minKeep = 1): void {
  if (p >= 1 || c.size === 0) return;
  const probs = softmaxCandidates(c);
  let cum = 0;
  for (let i = 0; i < c.size; i++) {
    cum += probs[i];
    if (cum >= p && i + 1 >= minKeep) {
      c.size = i + 1;
      return;
    }
  }
}

/** Keeps candidates whose probability is at least p times the top candidate's (and at least minKeep). */
export function minP(c: Candidates, p: number, minKeep = 1): void {
  if (p <= 0 || c.size === 0) return;
  const minLogit = c.logits[0] + Math.log(p);
  let i = 1;
  while (i < c.size && (c.logits[i] >= minLogit || i < minKeep)) i++;
  c.size = i;
}

export function applyTemperature(c: Candidates, temp: number): void {
  if (temp <= 0) {
    c.size = Math.min(c.size, 1);
    return;
  }
  for (let i = 0; i < c.size; i++) c.logits[i] /= temp;
}

/** Index into the candidates drawn from their softmax with a uniform number u in [0, 1). */
export function drawIndex(c: Candidates, u: number): number {
  if (c.size <= 1) return 0;
  const probs = softmaxCandidates(c);
  let cum = 0;
  for (let i = 0; i < c.size; i++) {
    cum += probs[i];
    if (cum > u) return i;
  }
  return c.size - 1;
}
