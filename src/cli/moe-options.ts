/**
 * The MoE command-line options shared by run / eval / perplexity / bench / tradeoff:
 *
 *   --moe-n-expert N            routed experts per token (soft: 1..n_expert, hard: 1..k)
 *   --moe-mask soft|hard        soft re-routes with top-N, hard keeps the first N of the model's top-k
 *   --moe-n-expert-layers SPEC  per-layer counts, e.g. `0-3:8,4-47:4` (layers not named keep the default)
 *   --moe-cum-p P               top-p routing among the candidates, P in (0, 1]
 *   --moe-cum-p-layers SPEC     per-layer P, e.g. `0-1:0.9,2-5:0.6` (layers not named keep --moe-cum-p)
 *   --moe-ser KMIN,T            smart expert reduction: keep KMIN, then experts above T x the top one
 *   --moe-stats                 print per-layer routing statistics after the run
 *   --moe-cache SIZE            stream the routed experts through a cache of SIZE
 *   --moe-prefetch on|off       when streaming, read the next layer's likely experts ahead (default on)
 *   --override-kv KEY=TYPE:VALUE  GGUF metadata override like llama.cpp (int, float, bool, str; repeatable)
 *
 * `addMoeOptions(cmd)` declares them; `moeOptionsFrom(cmd.opts())` turns the parsed values into
 * MoeOptions + KvOverride[] (syntax errors are UsageErrors). This file only parses: what the values mean and
 * their ranges are src/model/moe-check.ts's (the ranges that need no model are checked right after parsing,
 * the rest against the model's header before its tensors load); the reports are src/eval/moe-report.ts's.
 * Routing semantics: src/model/moe.ts.
 */
import { parseCacheSize } from "../model/expert-cache.ts";
import { Option, type Command } from "commander";
import { UsageError } from "../errors.ts";
import type { KvOverride, MoeOptions } from "../model/api.ts";
import { moeValueProblem } from "../model/moe-check.ts";

/** The values commander collects for the MoE options (as strings, parsed by moeOptionsFrom). */
export interface MoeCliValues {
  moeNExpert?: string;
  moeMask?: string;
  moeNExpertLayers?: string;
  moeCumP?: string;
  moeCumPLayers?: string;
  moeSer?: string;
  moeStats?: boolean;
  moeCache?: string;
  moePrefetch?: string;
  overrideKv?: string[];
}

/** What the options amount to: routing options (undefined = none given), metadata overrides, --moe-stats. */
export interface ParsedMoeOptions {
  moe: MoeOptions | undefined;
  overrideKv: KvOverride[];
  stats: boolean;
  /** --moe-cache SIZE in bytes: stream the routed experts through a cache of this size */
  moeCache?: number;
  /** --moe-prefetch on|off (undefined: the default, on) */
  moePrefetch?: boolean;
}

/** commander argument parser of a repeatable option: gathers its values in order */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Declares the MoE options on a command. */
export function addMoeOptions(cmd: Command): Command {
  return cmd
    .option("--moe-n-expert <N>", "routed experts per token (default: the model's expert_used_count)")
    .option("--moe-mask <mode>", "soft: route with top-N; hard: keep the first N of the model's top-k", "soft")
    .option("--moe-n-expert-layers <spec>", "per-layer expert counts, e.g. 0-3:8,4-47:4")
    .option("--moe-cum-p <P>", "dynamic routing: fewest top experts reaching P of the candidates' total probability, P in (0,1]")
    .option("--moe-cum-p-layers <spec>", "per-layer --moe-cum-p thresholds, e.g. 0-1:0.9,2-5:0.6")
    .option("--moe-ser <KMIN,T>", "dynamic routing: keep KMIN experts, then those above T x the top one")
    .option("--moe-stats", "print per-layer routing statistics after the run")
    .addOption(moeCacheOption())
    .addOption(new Option("--moe-prefetch <on|off>", "when streaming experts, read the next layer's likely experts while the current one computes").choices(["on", "off"]))
    .option("--override-kv <KEY=TYPE:VALUE>", "override GGUF metadata (int, float, bool, str); repeatable", collect);
}

/** `--moe-cache SIZE` (declared by addMoeOptions, and by bench, whose MoE options are grid lists). */
export function moeCacheOption(): Option {
  return new Option("--moe-cache <SIZE>", "stream the routed experts from the file through a cache of SIZE (e.g. 12G; default: only when the model does not fit in memory)");
}

/** A whole decimal integer, else a UsageError naming the option. */
function parseIntStrict(text: string, what: string): number {
  const t = text.trim();
  if (!/^[+-]?\d+$/.test(t)) throw new UsageError(`${what}: expected an integer, got '${text}'`);
  return Number(t);
}

function parseNumberStrict(text: string, what: string): number {
  const t = text.trim();
  const v = Number(t);
  if (t === "" || !Number.isFinite(v)) throw new UsageError(`${what}: expected a number, got '${text}'`);
  return v;
}

/**
 * The largest layer index the per-layer specs accept before the model is known (real models have a few
 * hundred layers at most); ranges are checked against it before they are expanded, so `0-20000000:4` fails
 * at once instead of building a map of twenty million layers. The model's own layer count is checked by
 * checkMoeOptions (src/model/moe-check.ts) once its header is read.
 */
export const MAX_LAYER_INDEX = 4095;

/**
 * `A-B:V` / `A:V` items separated by commas → layer -> V, for the option `flag`; `value` parses one V (the
 * item's layer text for messages). Checks syntax, that no layer is named twice and indices up to
 * MAX_LAYER_INDEX; the values' ranges and the model's layer count are moe-check.ts's.
 */
function parseLayerMap(spec: string, flag: string, example: string, value: (text: string, layers: string) => number): Map<number, number> {
  const layers = new Map<number, number>();
  const items = spec.split(",").map((s) => s.trim());
  for (const item of items) {
    const m = /^(\d+)(?:\s*-\s*(\d+))?\s*:\s*([^:]+)$/.exec(item);
    if (!m) throw new UsageError(`${flag}: malformed item '${item}' in '${spec}' (expected FIRST-LAST:V or LAYER:V, e.g. ${example})`);
    const first = Number(m[1]);
    const last = m[2] === undefined ? first : Number(m[2]);
    if (last < first) throw new UsageError(`${flag}: range ${first}-${last} is backwards`);
    if (last > MAX_LAYER_INDEX) throw new UsageError(`${flag}: layer ${last} out of range (layer indices go up to ${MAX_LAYER_INDEX} at most)`);
    const v = value(m[3].trim(), item.split(":")[0].trim());
    for (let l = first; l <= last; l++) {
      if (layers.has(l)) throw new UsageError(`${flag}: layer ${l} is named twice in '${spec}'`);
      layers.set(l, v);
    }
  }
  return layers;
}

/** `A-B:N` / `A:N` items separated by commas → layer -> N. Checks the syntax only. */
export function parseLayerSpec(spec: string): Map<number, number> {
  const flag = "--moe-n-expert-layers";
  return parseLayerMap(spec, flag, "0-3:8,4-47:4", (text, layers) => {
    if (!/^\d+$/.test(text)) throw new UsageError(`${flag}: malformed count '${text}' for layers ${layers} in '${spec}' (expected FIRST-LAST:N or LAYER:N, e.g. 0-3:8,4-47:4)`);
    return Number(text);
  });
}

/** `A-B:P` / `A:P` items separated by commas → layer -> P. Checks the syntax only. */
export function parseCumPLayerSpec(spec: string): Map<number, number> {
  const flag = "--moe-cum-p-layers";
  return parseLayerMap(spec, flag, "0-1:0.9,2-5:0.6", (text, layers) => parseNumberStrict(text, `${flag} (layers ${layers})`));
}

/** `KMIN,T` */
export function parseSer(text: string): { kmin: number; t: number } {
  const parts = text.split(",");
  if (parts.length !== 2) throw new UsageError(`--moe-ser: expected KMIN,T (e.g. 2,0.3), got '${text}'`);
  return { kmin: parseIntStrict(parts[0], "--moe-ser KMIN"), t: parseNumberStrict(parts[1], "--moe-ser T") };
}

/** llama.cpp's `--override-kv KEY=TYPE:VALUE` (TYPE int, float, bool or str), strictly checked. */
export function parseKvOverride(text: string): KvOverride {
  const eq = text.indexOf("=");
  if (eq <= 0) throw new UsageError(`--override-kv: malformed '${text}' (expected KEY=TYPE:VALUE, e.g. qwen3moe.expert_used_count=int:4)`);
  const key = text.slice(0, eq);
  if (key.length >= 128) throw new UsageError(`--override-kv: key longer than 127 characters in '${text}'`);
  const rest = text.slice(eq + 1);
  const colon = rest.indexOf(":");
  const type = colon < 0 ? rest : rest.slice(0, colon);
  const raw = colon < 0 ? undefined : rest.slice(colon + 1);
  if (raw === undefined || !["int", "float", "bool", "str"].includes(type)) {
    throw new UsageError(`--override-kv: invalid type in '${text}' (expected int:, float:, bool: or str: before the value)`);
  }
  const what = `--override-kv ${key}`;
  switch (type) {
    case "int": {
      const v = parseIntStrict(raw, what);
      if (!Number.isSafeInteger(v)) throw new UsageError(`${what}: integer out of range: ${raw}`);
      return { key, type, value: v };
    }
    case "float":
      return { key, type, value: parseNumberStrict(raw, what) };
    case "bool":
      if (raw !== "true" && raw !== "false") throw new UsageError(`${what}: invalid boolean '${raw}' (expected true or false)`);
      return { key, type, value: raw === "true" };
    default:
      if (raw.length > 127) throw new UsageError(`${what}: string value longer than 127 characters`);
      return { key, type: "str", value: raw };
  }
}

/** A UsageError when the values' ranges that need no model are wrong (moe-check.ts's messages). */
export function checkMoeValues(moe: MoeOptions): MoeOptions {
  const problem = moeValueProblem(moe);
  if (problem) throw new UsageError(problem);
  return moe;
}

/** Parses the collected option values (then checks the ranges that need no model). */
export function moeOptionsFrom(values: MoeCliValues): ParsedMoeOptions {
  const mask = values.moeMask ?? "soft";
  if (mask !== "soft" && mask !== "hard") throw new UsageError(`--moe-mask: expected soft or hard, got '${mask}'`);
  const moe: MoeOptions = { mask };
  let any = false;
  if (values.moeNExpert !== undefined) {
    moe.nExpert = parseIntStrict(values.moeNExpert, "--moe-n-expert");
    any = true;
  }
  if (values.moeNExpertLayers !== undefined) {
    moe.layers = parseLayerSpec(values.moeNExpertLayers);
    any = true;
  }
  if (values.moeCumP !== undefined) {
    moe.cumP = parseNumberStrict(values.moeCumP, "--moe-cum-p");
    any = true;
  }
  if (values.moeCumPLayers !== undefined) {
    moe.layerCumP = parseCumPLayerSpec(values.moeCumPLayers);
    any = true;
  }
  if (values.moeSer !== undefined) {
    moe.ser = parseSer(values.moeSer);
    any = true;
  }
  if (values.moeMask !== undefined && values.moeMask !== "soft") any = true;
  return {
    moe: any ? checkMoeValues(moe) : undefined,
    overrideKv: (values.overrideKv ?? []).map(parseKvOverride),
    stats: values.moeStats === true,
    moeCache: values.moeCache === undefined ? undefined : parseCacheSize(values.moeCache),
    moePrefetch: values.moePrefetch === undefined ? undefined : values.moePrefetch === "on",
  };
}
