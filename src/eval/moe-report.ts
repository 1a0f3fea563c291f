/**
 * Reports of a run's routing: the mean experts per token, the --moe-stats table per layer and the streamed
 * experts' cache line (printed by the commands in src/cli).
 */
import { formatBytes } from "../gguf/summary.ts";
import type { ExpertCacheStats, HParams, MoeLayerStats } from "../model/api.ts";

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
 * expert (id and share of the routed slots), routing entropy (nats); "-" where the session collected no
 * full statistics (SessionOptions.moeStats).
 */
export function formatMoeStats(stats: MoeLayerStats[], cache?: ExpertCacheStats): string {
  const header = ["layer", "tokens", "experts", "mass kept", "busiest", "idlest", "entropy"];
  const rows = stats.map((s) => {
    const load = s.load ?? [];
    const total = load.reduce((a, b) => a + b, 0);
    let hi = 0;
    let lo = 0;
    load.forEach((v, e) => {
      if (v > load[hi]) hi = e;
      if (v < load[lo]) lo = e;
    });
    const share = (e: number) => (total ? `#${e} ${((100 * load[e]) / total).toFixed(1)}%` : "-");
    const mass = s.massKept === undefined ? "-" : `${(100 * s.massKept).toFixed(1)}%`;
    return [String(s.layer), String(s.tokens), s.meanExperts.toFixed(2), mass, share(hi), share(lo), s.entropy?.toFixed(3) ?? "-"];
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
  const ahead = c.readAhead ? `; read ahead ${c.readAhead} experts: ${c.readAheadUsed} used by the next layer, ${c.readAheadWasted} not` : "";
  const skipped = c.readAheadSkipped ? `; ${c.readAheadSkipped} guessed experts not read ahead (recent guesses mostly wrong)` : "";
  return `expert cache: hit rate ${rate} (${c.hits} hits, ${c.misses} misses), ${perToken} read per token, read throughput ${speed}${ahead}${skipped}`;
}
