/**
 * Command-line values for `bench` and `tradeoff`: strict number parsing and comma-separated lists that
 * make a grid of runs (`-t 1,2 --moe-n-expert 8,4,2,1 --moe-mask soft,hard`, `--moe-ser 2,0.2/4,0.4`).
 */
import { UsageError } from "../errors.ts";
import type { MoeOptions } from "../model/api.ts";

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

export function parseMaskList(flag: string, s: string): ("soft" | "hard")[] {
  return splitList(flag, s).map((p) => {
    if (p !== "soft" && p !== "hard") throw new UsageError(`${flag}: expected soft or hard, got '${p}'`);
    return p;
  });
}

export function parseCumPList(flag: string, s: string): number[] {
  return splitList(flag, s).map((p) => {
    const v = parseNumberArg(flag, p);
    if (!(v > 0 && v <= 1)) throw new UsageError(`${flag}: P must be in (0, 1], got ${p}`);
    return v;
  });
}

/** `2,0.2/4,0.4` → [{kmin: 2, t: 0.2}, {kmin: 4, t: 0.4}] */
export function parseSerList(flag: string, s: string): { kmin: number; t: number }[] {
  return splitList(flag, s, "/").map((item) => {
    const parts = item.split(",");
    if (parts.length !== 2) throw new UsageError(`${flag}: expected KMIN,T (e.g. 2,0.2), got '${item}'`);
    const kmin = parseIntArg(flag, parts[0], 1);
    const t = parseNumberArg(flag, parts[1]);
    if (!(t >= 0 && t <= 1)) throw new UsageError(`${flag}: T must be in [0, 1], got ${parts[1]}`);
    return { kmin, t };
  });
}

/** One expert setting of a grid: a label for tables and the options for loading. */
export interface ExpertSetting {
  /** "model", "N=4 soft", "cum-p 0.7", "ser 2,0.2" */
  label: string;
  /** soft / hard for fixed counts, "dynamic" for cum-p / ser, "model" for the model's own routing */
  mode: "model" | "soft" | "hard" | "cum-p" | "ser";
  nExpert?: number;
  moe?: MoeOptions;
}

export function modelSetting(): ExpertSetting {
  return { label: "model", mode: "model" };
}

export function countSettings(counts: number[], masks: ("soft" | "hard")[]): ExpertSetting[] {
  const out: ExpertSetting[] = [];
  for (const mask of masks)
    for (const n of counts) out.push({ label: `N=${n} ${mask}`, mode: mask, nExpert: n, moe: { nExpert: n, mask } });
  return out;
}

export function dynamicSettings(cumPs: number[], sers: { kmin: number; t: number }[]): ExpertSetting[] {
  return [
    ...cumPs.map((p): ExpertSetting => ({ label: `cum-p ${p}`, mode: "cum-p", moe: { mask: "soft", cumP: p } })),
    ...sers.map(
      (s): ExpertSetting => ({ label: `ser ${s.kmin},${s.t}`, mode: "ser", moe: { mask: "soft", ser: { ...s } } }),
    ),
  ];
}
