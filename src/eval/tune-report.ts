/**
 * `tsmoe tune`'s report: the settings compared (model, tuned schedule, uniform N, matched --moe-cum-p) on
 * the calibration and held-out text, and the per-layer sensitivities the schedule was allocated from.
 */
import type { MoeRun } from "./moe-eval.ts";
import { markdownTable, type Column } from "./table.ts";
import type { LayerSensitivity, TuneRow } from "./tune.ts";

const pct = (v: number) => `${(100 * v).toFixed(1)}%`;

function runColumns(prefix: string, get: (r: TuneRow) => MoeRun | undefined): Column<TuneRow>[] {
  const cell = (f: (m: MoeRun) => string) => (r: TuneRow) => {
    const m = get(r);
    return m ? f(m) : "-";
  };
  const value = (f: (m: MoeRun) => number) => (r: TuneRow) => {
    const m = get(r);
    return m ? Math.round(f(m) * 1e4) / 1e4 : null;
  };
  const key = prefix ? `${prefix.replace("-", "_")}_` : "";
  const title = (t: string) => (prefix ? `${prefix} ${t}` : t);
  return [
    { title: title("experts"), key: `${key}mean_experts`, text: cell((m) => m.meanExperts.toFixed(2)), value: value((m) => m.meanExperts), align: "right" },
    { title: title("KLD"), key: `${key}kld`, text: cell((m) => (m.kld === 0 ? "0" : `${m.kld.toFixed(4)} ± ${m.kldErr.toFixed(4)}`)), value: value((m) => m.kld), align: "right" },
    { title: title("PPL"), key: `${key}ppl`, text: cell((m) => `${m.ppl.toFixed(3)} (${m.ppl >= m.pplBase ? "+" : ""}${pct(m.ppl / m.pplBase - 1)})`), value: value((m) => m.ppl), align: "right" },
    { title: title("same top"), key: `${key}same_top`, text: cell((m) => pct(m.sameTop)), value: value((m) => m.sameTop), align: "right" },
  ];
}

/** Columns of the comparison: the setting and its flags, then the calibration and held-out figures. */
export function tuneColumns(heldOut: boolean): Column<TuneRow>[] {
  return [
    { title: "setting", key: "setting", text: (r) => r.schedule.label, value: (r) => r.schedule.label },
    { title: "flags", key: "flags", text: (r) => (r.schedule.flags ? `\`${r.schedule.flags}\`` : "-"), value: (r) => r.schedule.flags },
    ...runColumns("", (r) => r.calib),
    ...(heldOut ? runColumns("held-out", (r) => r.heldOut) : []),
  ];
}

/** The per-layer table: the loss (mean KLD) and cost (experts per token) of every option when only that layer takes it. */
export function sensitivityTable(sens: LayerSensitivity[], dynamic: boolean): string {
  const values = sens[0]?.options.map((o) => o.value) ?? [];
  const columns: Column<LayerSensitivity>[] = [
    { title: "layer", key: "layer", text: (s) => String(s.layer), value: (s) => s.layer },
    ...values.map(
      (v, i): Column<LayerSensitivity> => ({
        title: dynamic ? `P=${v}` : `N=${v}`,
        key: String(v),
        text: (s) => (dynamic ? `${s.options[i].loss.toFixed(4)} (${s.options[i].cost.toFixed(2)})` : s.options[i].loss.toFixed(4)),
        value: (s) => s.options[i].loss,
        align: "right",
      }),
    ),
  ];
  return markdownTable(columns, sens);
}
