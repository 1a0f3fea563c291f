/**
 * Command-line values for `bench` and `tradeoff`: strict number parsing and comma-separated lists that
 * make a grid of runs (`-t 1,2 --moe-n-expert 8,4,2,1 --moe-mask soft,hard`, `--moe-ser 2,0.2/4,0.4`).
 * The ranges of the MoE values are checked by src/model/moe-check.ts.
 */
import { availableParallelism } from "node:os";
import type { Command } from "commander";
import { UsageError } from "../errors.ts";
import type { KvOverride } from "../model/api.ts";
import { countSettings, dynamicSettings, scheduleSettings, type ExpertSetting } from "../eval/grid.ts";
import { checkMoeValues, collect, parseCumPLayerSpec, parseKvOverride, parseLayerSpec, parseSer } from "./moe-options.ts";

export function parseIntArg(flag: string, s: string, min = Number.MIN_SAFE_INTEGER): number {
  const t = s.trim();
  if (!/^[-+]?\d+$/.test(t)) throw new UsageError(`${flag}: expected an integer, got '${s}'`);
  const v = Number(t);
  if (v < min) throw new UsageError(`${flag}: must be at least ${min} (got ${v})`);
  return v;
}

export function parseNumberArg(flag: string, s: string): number {
  const t = s.trim();
  const v = Number(t);
  if (t === "" || !Number.isFinite(v)) throw new UsageError(`${flag}: expected a number, got '${s}'`);
  return v;
}

function splitList(flag: string, s: string, sep = ","): string[] {
  const parts = s.split(sep).map((p) => p.trim());
  if (parts.some((p) => p === "")) throw new UsageError(`${flag}: empty item in list '${s}'`);
  return parts;
}

export function parseIntList(flag: string, s: string, min = 1): number[] {
  return splitList(flag, s).map((p) => parseIntArg(flag, p, min));
}

/**
 * `-t` / `--threads`: 1 up to the machine's hardware threads. More is refused: extra workers only compete
 * for the same cores, and each costs its own memory (`-t 1000` would start 1000 workers).
 */
export function parseThreadsArg(s: string): number {
  const n = parseIntArg("--threads", s, 1);
  const hw = availableParallelism();
  if (n > hw) throw new UsageError(`--threads: ${n} is more than the ${hw} hardware threads of this machine`);
  return n;
}

/** A comma list of thread counts (bench), each checked as parseThreadsArg does. */
export function parseThreadsList(s: string): number[] {
  return splitList("--threads", s).map(parseThreadsArg);
}

export function parseMaskList(flag: string, s: string): ("soft" | "hard")[] {
  return splitList(flag, s).map((p) => {
    if (p !== "soft" && p !== "hard") throw new UsageError(`${flag}: expected soft or hard, got '${p}'`);
    return p;
  });
}

/** A comma list of top-p thresholds (syntax only: `--moe-cum-p` settings are range-checked by moe-check.ts). */
export function parseCumPList(flag: string, s: string): number[] {
  return splitList(flag, s).map((p) => parseNumberArg(flag, p));
}

/** `2,0.2/4,0.4` → [{kmin: 2, t: 0.2}, {kmin: 4, t: 0.4}] */
export function parseSerList(flag: string, s: string): { kmin: number; t: number }[] {
  return splitList(flag, s, "/").map(parseSer);
}

/** The grid options `bench` and `tradeoff` share, as commander collects them. */
export interface ExpertGridValues {
  moeNExpert?: string;
  moeMask: string;
  moeCumP?: string;
  moeSer?: string;
  moeNExpertLayers?: string[];
  moeCumPLayers?: string[];
  overrideKv?: string[];
}

/** Declares the expert-setting list options (and --override-kv) on a command. */
export function addExpertGridOptions(cmd: Command, defaults: { counts: string; mask: string }): Command {
  return cmd
    .option("--moe-n-expert <list>", `routed experts per token, comma list (e.g. 8,4,2,1; default: ${defaults.counts})`)
    .option("--moe-mask <list>", "masks for the expert counts and schedules: soft, hard or soft,hard", defaults.mask)
    .option("--moe-n-expert-layers <spec>", "a per-layer schedule as a setting, e.g. 0:6,1-5:4 (repeatable)", collect)
    .option("--moe-cum-p-layers <spec>", "per-layer top-p thresholds as a setting, e.g. 0:0.9,1-5:0.6 (repeatable)", collect)
    .option("--moe-cum-p <list>", "extra settings with dynamic top-p routing (comma list of P in (0,1])")
    .option("--moe-ser <list>", "extra settings with smart expert reduction (KMIN,T items separated by /, e.g. 2,0.2/4,0.4)")
    .option("--override-kv <KEY=TYPE:VALUE>", "override GGUF metadata (int, float, bool, str); repeatable", collect);
}

/**
 * The settings the lists ask for: counts × masks (counts from `defaultCounts` when --moe-n-expert is not
 * given; no count settings when that is undefined either), then the dynamic ones, then the per-layer
 * schedules, each checked for the ranges that need no model; and the overrides.
 */
export function expertGridFrom(o: ExpertGridValues, defaultCounts?: number[]): { settings: ExpertSetting[]; overrideKv: KvOverride[] } {
  const masks = parseMaskList("--moe-mask", o.moeMask);
  const counts = o.moeNExpert ? parseIntList("--moe-n-expert", o.moeNExpert, 1) : defaultCounts;
  const settings = [
    ...(counts ? countSettings(counts, masks) : []),
    ...dynamicSettings(o.moeCumP ? parseCumPList("--moe-cum-p", o.moeCumP) : [], o.moeSer ? parseSerList("--moe-ser", o.moeSer) : []),
    ...scheduleSettings(
      (o.moeNExpertLayers ?? []).map((spec) => ({ spec, layers: parseLayerSpec(spec) })),
      (o.moeCumPLayers ?? []).map((spec) => ({ spec, layers: parseCumPLayerSpec(spec) })),
      masks,
    ),
  ];
  for (const s of settings) if (s.moe) checkMoeValues(s.moe);
  return { settings, overrideKv: (o.overrideKv ?? []).map(parseKvOverride) };
}
