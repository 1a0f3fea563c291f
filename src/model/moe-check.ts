/**
 * Checks an expert setting (MoeOptions) against a model's hyperparameters (after --override-kv): counts in
 * 1..n_expert (at most the model's k under the hard mask), per-layer counts and thresholds on existing layers, P in (0, 1],
 * KMIN >= 1 and T in [0, 1]. The messages name the command-line options that set each value.
 */
import { TsmoeError } from "../errors.ts";
import type { HParams, MoeOptions } from "./api.ts";

/** The hyperparameters the check needs. */
export type MoeCheckHParams = Pick<HParams, "nExpert" | "nExpertUsed" | "nLayer">;

/** Where an expert count came from, for messages. */
function countSource(moe: MoeOptions, layer: number | undefined): string {
  return layer === undefined ? `--moe-n-expert ${moe.nExpert}` : `--moe-n-expert-layers: layer ${layer} count ${moe.layers!.get(layer)}`;
}

/** The first problem of `moe` on a mixture-of-experts model with these hyperparameters, or undefined. */
export function moeOptionsProblem(moe: MoeOptions, hp: MoeCheckHParams): string | undefined {
  const n = hp.nExpert;
  const k = hp.nExpertUsed;
  const countProblem = (count: number, layer: number | undefined) => {
    const src = countSource(moe, layer);
    if (!Number.isInteger(count)) return `${src}: must be a whole number`;
    if (count < 1) return `${src}: must be at least 1`;
    if (count > n) return `${src}: the model has only ${n} experts`;
    if (moe.mask === "hard" && count > k) return `${src}: the hard mask keeps at most the model's ${k} experts per token (use --moe-mask soft for more)`;
    return undefined;
  };
  if (moe.mask !== "soft" && moe.mask !== "hard") return `--moe-mask: expected soft or hard, got '${String(moe.mask)}'`;
  if (moe.nExpert !== undefined) {
    const p = countProblem(moe.nExpert, undefined);
    if (p) return p;
  }
  for (const [layer, count] of moe.layers ?? []) {
    if (!Number.isInteger(layer) || layer < 0 || layer >= hp.nLayer) return `--moe-n-expert-layers: layer ${layer} out of range (the model has layers 0-${hp.nLayer - 1})`;
    const p = countProblem(count, layer);
    if (p) return p;
  }
  if (moe.cumP !== undefined && !(moe.cumP > 0 && moe.cumP <= 1)) return `--moe-cum-p: P must be in (0, 1], got ${moe.cumP}`;
  for (const [layer, p] of moe.layerCumP ?? []) {
    if (!Number.isInteger(layer) || layer < 0 || layer >= hp.nLayer) return `--moe-cum-p-layers: layer ${layer} out of range (the model has layers 0-${hp.nLayer - 1})`;
    if (!(p > 0 && p <= 1)) return `--moe-cum-p-layers: P must be in (0, 1], got ${p} for layer ${layer}`;
  }
  if (moe.ser !== undefined) {
    if (!(moe.ser.kmin >= 1)) return `--moe-ser: KMIN must be at least 1, got ${moe.ser.kmin}`;
    if (!(moe.ser.t >= 0 && moe.ser.t <= 1)) return `--moe-ser: T must be in [0, 1], got ${moe.ser.t}`;
  }
  return undefined;
}

/** Throws a one-line TsmoeError when `moe` does not fit a mixture-of-experts model. */
export function checkMoeOptions(moe: MoeOptions, hp: MoeCheckHParams): void {
  const problem = moeOptionsProblem(moe, hp);
  if (problem) throw new TsmoeError(problem);
}
