/**
 * What an expert setting (MoeOptions) means for a model: `checkMoeOptions(moe, hparams)` checks it against
 * the model's hyperparameters (after --override-kv) and returns the session's routing policy (MoePolicy,
 * moe-types.ts), the soft/hard rule that gives each layer its {K, computed} and its top-p threshold. The only
 * place the ranges are checked: counts in 1..n_expert (at most the model's k under the hard mask),
 * per-layer counts and thresholds on existing layers, P in (0, 1], KMIN >= 1 and T in [0, 1]. The
 * messages name the command-line options that set each value. Routing itself: moe.ts.
 */
import { UsageError } from "../errors.ts";
import type { HParams, MoeOptions } from "./api.ts";
import type { MoePolicy } from "./moe-types.ts";

/** The hyperparameters the check needs. */
export type MoeCheckHParams = Pick<HParams, "nExpert" | "nExpertUsed" | "nLayer">;

/** Where an expert count came from, for messages. */
function countSource(moe: MoeOptions, layer: number | undefined): string {
  return layer === undefined ? `--moe-n-expert ${moe.nExpert}` : `--moe-n-expert-layers: layer ${layer} count ${moe.layers!.get(layer)}`;
}

/** The first problem of the values that need no model (mask, counts >= 1, P and per-layer P, KMIN, T), or undefined. */
export function moeValueProblem(moe: MoeOptions): string | undefined {
  if (moe.mask !== "soft" && moe.mask !== "hard") return `--moe-mask: expected soft or hard, got '${String(moe.mask)}'`;
  const counts: [number, number | undefined][] = [];
  if (moe.nExpert !== undefined) counts.push([moe.nExpert, undefined]);
  for (const [layer, count] of moe.layers ?? []) counts.push([count, layer]);
  for (const [count, layer] of counts) {
    if (!Number.isInteger(count)) return `${countSource(moe, layer)}: must be a whole number`;
    if (count < 1) return `${countSource(moe, layer)}: must be at least 1`;
  }
  if (moe.cumP !== undefined && !(moe.cumP > 0 && moe.cumP <= 1)) return `--moe-cum-p: P must be in (0, 1], got ${moe.cumP}`;
  for (const [layer, p] of moe.layerCumP ?? []) {
    if (!(p > 0 && p <= 1)) return `--moe-cum-p-layers: P must be in (0, 1], got ${p} for layer ${layer}`;
  }
  if (moe.ser !== undefined) {
    if (!(moe.ser.kmin >= 1)) return `--moe-ser: KMIN must be at least 1, got ${moe.ser.kmin}`;
    if (!(moe.ser.t >= 0 && moe.ser.t <= 1)) return `--moe-ser: T must be in [0, 1], got ${moe.ser.t}`;
  }
  return undefined;
}

/** The first problem of `moe` on a mixture-of-experts model with these hyperparameters, or undefined. */
export function moeOptionsProblem(moe: MoeOptions, hp: MoeCheckHParams): string | undefined {
  const values = moeValueProblem(moe);
  if (values) return values;
  const countProblem = (count: number, layer: number | undefined) => {
    const src = countSource(moe, layer);
    if (count > hp.nExpert) return `${src}: the model has only ${hp.nExpert} experts`;
    if (moe.mask === "hard" && count > hp.nExpertUsed)
      return `${src}: the hard mask keeps at most the model's ${hp.nExpertUsed} experts per token (use --moe-mask soft for more)`;
    return undefined;
  };
  if (moe.nExpert !== undefined) {
    const p = countProblem(moe.nExpert, undefined);
    if (p) return p;
  }
  for (const [layer, count] of moe.layers ?? []) {
    if (!Number.isInteger(layer) || layer < 0 || layer >= hp.nLayer) return `--moe-n-expert-layers: layer ${layer} out of range (the model has layers 0-${hp.nLayer - 1})`;
    const p = countProblem(count, layer);
    if (p) return p;
  }
  for (const layer of moe.layerCumP?.keys() ?? []) {
    if (!Number.isInteger(layer) || layer < 0 || layer >= hp.nLayer) return `--moe-cum-p-layers: layer ${layer} out of range (the model has layers 0-${hp.nLayer - 1})`;
  }
  return undefined;
}

/**
 * The routing policy of `moe` (undefined: the model's own routing), unchecked. Soft mask: the layer's N
 * experts are selected, weighted and computed (K = computed = N). Hard mask: the model's k are selected and
 * weighted (K = k), the first N of them computed. N is the layer's count in `layers`, else `nExpert`, else k.
 * The layer's top-p threshold is its P in `layerCumP`, else `cumP` (undefined: none).
 */
export function moePolicy(moe: MoeOptions | undefined): MoePolicy {
  const hard = moe?.mask === "hard";
  return {
    hard,
    ser: moe?.ser,
    layer(il, k, nExpert) {
      const n = Math.max(1, Math.min(moe?.layers?.get(il) ?? moe?.nExpert ?? k, nExpert));
      const cumP = moe?.layerCumP?.get(il) ?? moe?.cumP;
      return hard ? { K: k, computed: Math.min(n, k), cumP } : { K: n, computed: n, cumP };
    },
  };
}

/** Checks `moe` against a mixture-of-experts model (a one-line UsageError) and returns its routing policy. */
export function checkMoeOptions(moe: MoeOptions | undefined, hp: MoeCheckHParams): MoePolicy {
  const problem = moe && moeOptionsProblem(moe, hp);
  if (problem) throw new UsageError(problem);
  return moePolicy(moe);
}

/** The warning for MoE options (or --moe-stats) given to a dense model, which ignores them. */
export function denseModelWarning(arch: string): string {
  return `the model (${arch}) is dense (no experts): the MoE options are ignored`;
}

/**
 * The expert setting to create a model's sessions with: `moe` checked against a mixture-of-experts model
 * (checkMoeOptions), or undefined on a dense model, which ignores it (`warn` is told when `moe` was given).
 */
export function moeForModel(
  moe: MoeOptions | undefined,
  hp: MoeCheckHParams & Pick<HParams, "arch">,
  warn: (message: string) => void = () => {},
): MoeOptions | undefined {
  if (hp.nExpert === 0) {
    if (moe !== undefined) warn(denseModelWarning(hp.arch));
    return undefined;
  }
  checkMoeOptions(moe, hp);
  return moe;
}
