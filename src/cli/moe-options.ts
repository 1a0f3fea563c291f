/**
 * The MoE command-line options shared by run / eval / perplexity / bench / tradeoff:
 *
 *   --moe-n-expert N            routed experts per token (soft: 1..n_expert, hard: 1..k)
 *   --moe-mask soft|hard        soft re-routes with top-N, hard keeps the first N of the model's top-k
 *   --moe-n-expert-layers SPEC  per-layer counts, e.g. `0-3:8,4-47:4` (layers not named keep the default)
 *   --moe-cum-p P               top-p routing among the top-k, P in (0, 1]
 *   --moe-cum-p-layers SPEC     per-layer P, e.g. `0-1:0.9,2-5:0.6` (layers not named keep --moe-cum-p)
 *   --moe-ser KMIN,T            smart expert reduction: keep KMIN, then experts above T x the top one
 *   --moe-stats                 print per-layer routing statistics after the run
 *   --override-kv KEY=TYPE:VALUE  GGUF metadata override like llama.cpp (int, float, bool, str; repeatable)
 *
 * `addMoeOptions(cmd)` declares them; `moeOptionsFrom(cmd.opts())` turns the parsed values into
 * MoeOptions + KvOverride[] (syntax errors are UsageErrors); `validateMoeOptions(moe, hparams)` checks the
 * values against the model once its header is read. `formatMoeStats` / `formatMeanExperts` print the
 * statistics. Routing semantics: src/model/moe.ts.
 */
import { parseCacheSize } from "../model/expert-cache.ts";
import { formatBytes } from "../gguf/summary.ts";
import type { ExpertCacheStats } from "../model/api.ts";
import { Option, type Command } from "commander";
import { UsageError } from "../errors.ts";
import type { HParams, KvOverride, MoeLayerStats, MoeOptions } from "../model/api.ts";
import { moeOptionsProblem } from "../model/moe-check.ts";

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
  overrideKv?: string[];
}

/** What the options amount to: routing options (undefined = none given), metadata overrides, --moe-stats. */
export interface ParsedMoeOptions {
  moe: MoeOptions | undefined;
  overrideKv: KvOverride[];
  stats: boolean;
  /** --moe-cache SIZE in bytes: stream the routed experts through a cache of this size */
  moeCache?: number;
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
    .option("--moe-cum-p <P>", "dynamic routing: fewest top experts reaching P of the top-k mass, P in (0,1]")
    .option("--moe-cum-p-layers <spec>", "per-layer --moe-cum-p thresholds, e.g. 0-1:0.9,2-5:0.6")
    .option("--moe-ser <KMIN,T>", "dynamic routing: keep KMIN experts, then those above T x the top one")
    .option("--moe-stats", "print per-layer routing statistics after the run")
    .addOption(moeCacheOption())
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
 * validateMoeOptions once its header is read.
 */
export const MAX_LAYER_INDEX = 4095;

/**
 * `A-B:V` / `A:V` items separated by commas → layer -> V, for the option `flag`; `value` parses and checks
 * one V (the item's layer text for messages). Checks syntax, that no layer is named twice and indices up
 * to MAX_LAYER_INDEX, not the model's layer count.
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

/** `A-B:N` / `A:N` items separated by commas → layer -> N. Checks syntax and N >= 1, not the layer range. */
export function parseLayerSpec(spec: string): Map<number, number> {
  const flag = "--moe-n-expert-layers";
  return parseLayerMap(spec, flag, "0-3:8,4-47:4", (text, layers) => {
    if (!/^\d+$/.test(text)) throw new UsageError(`${flag}: malformed count '${text}' for layers ${layers} in '${spec}' (expected FIRST-LAST:N or LAYER:N, e.g. 0-3:8,4-47:4)`);
    const n = Number(text);
    if (n < 1) throw new UsageError(`${flag}: expert count must be at least 1 (got ${n} for layers ${layers})`);
    return n;
  });
}

/** `A-B:P` / `A:P` items separated by commas → layer -> P in (0, 1]. */
export function parseCumPLayerSpec(spec: string): Map<number, number> {
  const flag = "--moe-cum-p-layers";
  return parseLayerMap(spec, flag, "0-1:0.9,2-5:0.6", (text, layers) => {
    const p = parseNumberStrict(text, `${flag} (layers ${layers})`);
    if (!(p > 0 && p <= 1)) throw new UsageError(`${flag}: P must be in (0, 1], got ${text} for layers ${layers}`);
    return p;
  });
}

/** `KMIN,T` */
export function parseSer(text: string): { kmin: number; t: number } {
  const parts = text.split(",");
  if (parts.length !== 2) throw new UsageError(`--moe-ser: expected KMIN,T (e.g. 2,0.3), got '${text}'`);
  const kmin = parseIntStrict(parts[0], "--moe-ser KMIN");
  const t = parseNumberStrict(parts[1], "--moe-ser T");
  if (kmin < 1) throw new UsageError(`--moe-ser: KMIN must be at least 1, got ${kmin}`);
  if (t < 0 || t > 1) throw new UsageError(`--moe-ser: T must be in [0, 1], got ${t}`);
  return { kmin, t };
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

/** Parses the collected option values (syntax and value ranges that need no model). */
export function moeOptionsFrom(values: MoeCliValues): ParsedMoeOptions {
  const mask = values.moeMask ?? "soft";
  if (mask !== "soft" && mask !== "hard") throw new UsageError(`--moe-mask: expected soft or hard, got '${mask}'`);
  const moe: MoeOptions = { mask };
  let any = false;
  if (values.moeNExpert !== undefined) {
    moe.nExpert = parseIntStrict(values.moeNExpert, "--moe-n-expert");
    if (moe.nExpert < 1) throw new UsageError(`--moe-n-expert: must be at least 1, got ${moe.nExpert}`);
    any = true;
  }
  if (values.moeNExpertLayers !== undefined) {
    moe.layers = parseLayerSpec(values.moeNExpertLayers);
    any = true;
  }
  if (values.moeCumP !== undefined) {
    const p = parseNumberStrict(values.moeCumP, "--moe-cum-p");
    if (!(p > 0 && p <= 1)) throw new UsageError(`--moe-cum-p: P must be in (0, 1], got ${p}`);
    moe.cumP = p;
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
    moe: any ? moe : undefined,
    overrideKv: (values.overrideKv ?? []).map(parseKvOverride),
    stats: values.moeStats === true,
    moeCache: values.moeCache === undefined ? undefined : parseCacheSize(values.moeCache),
  };
}

/**
 * Checks the options against the model's hyperparameters (after --override-kv; the messages are
 * src/model/moe-check.ts's, as UsageErrors). Returns the options to create sessions with: undefined when none
 * were given, or (with a warning) when the model is dense. `stats` is whether --moe-stats was given (also
 * warned about on a dense model).
 */
export function validateMoeOptions(
  moe: MoeOptions | undefined,
  hp: Pick<HParams, "nExpert" | "nExpertUsed" | "nLayer" | "arch">,
  opts: { stats?: boolean; warn?: (message: string) => void } = {},
): MoeOptions | undefined {
  const warn = opts.warn ?? ((m: string) => process.stderr.write(`warning: ${m}\n`));
  if (hp.nExpert === 0) {
    if (moe !== undefined || opts.stats) warn(`the model (${hp.arch}) is dense (no experts): the MoE options are ignored`);
    return undefined;
  }
  if (moe === undefined) return undefined;
  const problem = moeOptionsProblem(moe, hp);
  if (problem) throw new UsageError(problem);
  return moe;
}

/** Mean routed experts per token over all MoE layers, weighted by tokens (NaN when nothing was routed). */
export function meanExperts(stats: MoeLayerStats[]): number {
  let tokens = 0;
  let experts = 0;
  for (const s of stats) {
    tokens += s.tokens;
    experts += s.meanExperts * s.tokens;
  }
  return tokens ? experts / tokens : NaN;
}

/** "mean experts per token: 3.42 (of k = 8, 64 experts)" */
export function formatMeanExperts(stats: MoeLayerStats[], hp?: Pick<HParams, "nExpert" | "nExpertUsed">): string {
  const m = meanExperts(stats);
  const text = Number.isNaN(m) ? "n/a" : m.toFixed(2);
  return `mean experts per token: ${text}` + (hp ? ` (model: ${hp.nExpertUsed} of ${hp.nExpert})` : "");
}

/**
 * Per-layer table for --moe-stats: layer, tokens, mean experts, router mass kept, busiest and idlest
 * expert (id and share of the routed slots), routing entropy (nats).
 */
export function formatMoeStats(stats: MoeLayerStats[], cache?: ExpertCacheStats): string {
  const header = ["layer", "tokens", "experts", "mass kept", "busiest", "idlest", "entropy"];
  const rows = stats.map((s) => {
    const total = s.load.reduce((a, b) => a + b, 0);
    let hi = 0;
    let lo = 0;
    s.load.forEach((v, e) => {
      if (v > s.load[hi]) hi = e;
      if (v < s.load[lo]) lo = e;
    });
    const share = (e: number) => (total ? `#${e} ${((100 * s.load[e]) / total).toFixed(1)}%` : "-");
    return [String(s.layer), String(s.tokens), s.meanExperts.toFixed(2), `${(100 * s.massKept).toFixed(1)}%`, share(hi), share(lo), s.entropy.toFixed(3)];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  const table = [line(header), ...rows.map(line)].join("\n");
  return cache ? `${table}\n${formatCacheStats(cache, stats[0]?.tokens ?? 0)}` : table;
}

/** `expert cache: hit rate 62.5% (...), 12.3 MiB read per token, read throughput 1.2 GiB/s` */
export function formatCacheStats(c: ExpertCacheStats, tokens: number): string {
  const lookups = c.hits + c.misses;
  const rate = lookups ? `${((100 * c.hits) / lookups).toFixed(1)}%` : "-";
  const perToken = tokens ? formatBytes(c.bytesRead / tokens) : "-";
  const speed = c.readMs > 0 ? `${formatBytes((c.bytesRead / c.readMs) * 1000)}/s` : "-";
  return `expert cache: hit rate ${rate} (${c.hits} hits, ${c.misses} misses), ${perToken} read per token, read throughput ${speed}`;
}
