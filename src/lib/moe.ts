/**
 * The library's `moe` session option: the CLI's MoE options as values, read by the CLI's own parser
 * (src/cli/moe-options.ts) and checked by src/model/moe-check.ts as the CLI's are, so a bad value throws the
 * same one-line UsageError as the flag.
 */
import { UsageError } from "../errors.ts";
import type { HParams, MoeOptions } from "../model/api.ts";
import { moeOptionsFrom, type MoeCliValues } from "../cli/moe-options.ts";
import { moeForModel } from "../model/moe-check.ts";

/** Expert-count override and dynamic routing; see the README's "Expert-count override". */
export interface MoeSettings {
  /** --moe-n-expert: routed experts per token (default: the model's expert_used_count) */
  nExpert?: number;
  /** --moe-mask: "soft" (default) routes with the top-N; "hard" keeps the first N of the model's top-k */
  mask?: "soft" | "hard";
  /** --moe-n-expert-layers: per-layer counts, as the flag's text ("0-3:8,4-47:4") or { layer: N } */
  layers?: string | Record<number, number>;
  /** --moe-cum-p: top-p routing, P in (0, 1] */
  cumP?: number;
  /** --moe-ser: smart expert reduction, as "KMIN,T" or { kmin, t } */
  ser?: string | { kmin: number; t: number };
}

const KEYS = ["nExpert", "mask", "layers", "cumP", "ser"];

function text(value: unknown): string | undefined {
  return value === undefined ? undefined : String(value);
}

/** The settings as the strings the CLI parser takes. */
function cliValues(s: MoeSettings): MoeCliValues {
  const layers = typeof s.layers === "object" && s.layers !== null ? Object.entries(s.layers).map(([l, n]) => `${l}:${n}`).join(",") : s.layers;
  const ser = typeof s.ser === "object" && s.ser !== null ? `${s.ser.kmin},${s.ser.t}` : s.ser;
  return { moeNExpert: text(s.nExpert), moeMask: text(s.mask), moeNExpertLayers: text(layers), moeCumP: text(s.cumP), moeSer: text(ser) };
}

/**
 * Checks `settings` against the model and returns the engine's MoeOptions (undefined: the model's own
 * routing). On a dense model the settings are ignored with a process warning, as the CLI warns.
 */
export function resolveMoe(settings: MoeSettings | undefined, hp: Pick<HParams, "nExpert" | "nExpertUsed" | "nLayer" | "arch">): MoeOptions | undefined {
  if (settings === undefined) return undefined;
  if (typeof settings !== "object" || settings === null) throw new UsageError(`moe: expected an object of MoE options, got ${String(settings)}`);
  for (const key of Object.keys(settings))
    if (!KEYS.includes(key)) throw new UsageError(`moe: unknown option '${key}' (expected ${KEYS.join(", ")})`);
  const { moe } = moeOptionsFrom(cliValues(settings));
  return moeForModel(moe, hp, (m) => process.emitWarning(m, "TsmoeWarning"));
}
