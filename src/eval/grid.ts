/**
 * The expert settings of a grid of runs (`bench`, `tradeoff`): counts × masks, then dynamic routing
 * settings, then per-layer schedules, each with a label for tables. The command-line lists that make them:
 * src/cli/grid-options.ts.
 */
import type { MoeOptions } from "../model/api.ts";

/** One expert setting of a grid: a label for tables and the options for loading. */
export interface ExpertSetting {
  /** "model", "N=4 soft", "cum-p 0.7", "ser 2,0.2", "layers 0:6,1-5:4 soft", "cum-p layers 0:0.9,1-5:0.6" */
  label: string;
  /**
   * soft / hard for fixed counts, "cum-p" / "ser" for dynamic routing, "layers" / "cum-p layers" for
   * per-layer schedules (--moe-n-expert-layers / --moe-cum-p-layers), "model" for the model's own routing
   */
  mode: "model" | "soft" | "hard" | "cum-p" | "ser" | "layers" | "cum-p layers";
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

/** A per-layer schedule as the text of its option (labels) and the layer -> value map it stands for. */
export interface LayerSchedule {
  spec: string;
  layers: Map<number, number>;
}

/** Per-layer schedules: each per-layer count schedule with each mask, then each per-layer top-p schedule. */
export function scheduleSettings(counts: LayerSchedule[], cumPs: LayerSchedule[], masks: ("soft" | "hard")[]): ExpertSetting[] {
  const out: ExpertSetting[] = [];
  for (const mask of masks)
    for (const s of counts) out.push({ label: `layers ${s.spec} ${mask}`, mode: "layers", moe: { mask, layers: s.layers } });
  for (const s of cumPs) out.push({ label: `cum-p layers ${s.spec}`, mode: "cum-p layers", moe: { mask: "soft", layerCumP: s.layers } });
  return out;
}
