/**
 * A self-contained SVG line chart (no scripts, no external resources) for `tradeoff`:
 * one polyline per series, axes with ticks, a legend. Browsers display it as is.
 */

export interface ChartPoint {
  x: number;
  y: number;
  /** an error bar from lo to hi (y units) */
  lo?: number;
  hi?: number;
  label?: string;
}

export interface ChartSeries {
  name: string;
  points: ChartPoint[];
  /** default: the next of the palette */
  color?: string;
}

export interface ChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: ChartSeries[];
  width?: number;
  height?: number;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** about five round tick values covering [lo, hi] */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) {
    const d = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    lo -= d;
    hi += d;
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < hi) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

function tickText(v: number): string {
  return Math.abs(v) >= 1000 || (Math.abs(v) < 0.001 && v !== 0) ? v.toExponential(1) : String(Number(v.toPrecision(4)));
}

/**
 * Keeps point labels from piling up: a label goes just above its point unless it would overlap one placed
 * before, then below, then further above and below in steps of a line.
 */
class LabelPlacer {
  private readonly boxes: { x0: number; x1: number; y0: number; y1: number }[] = [];
  /** the text baseline for a label of `width` px centred over the point (cx, cy) */
  place(cx: number, cy: number, width: number): number {
    const h = 11;
    for (let step = 0; step < 12; step++) {
      const k = step >> 1;
      const y = step % 2 === 0 ? cy - 8 - k * h : cy + 16 + k * h;
      const box = { x0: cx - width / 2, x1: cx + width / 2, y0: y - h + 2, y1: y + 2 };
      if (!this.boxes.some((b) => b.x0 < box.x1 && box.x0 < b.x1 && b.y0 < box.y1 && box.y0 < b.y1)) {
        this.boxes.push(box);
        return y;
      }
    }
    return cy - 8;
  }
}

export function lineChartSvg(spec: ChartSpec): string {
  const W = spec.width ?? 720;
  const H = spec.height ?? 460;
  const m = { left: 70, right: 170, top: 40, bottom: 55 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const all = spec.series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  const xs = niceTicks(Math.min(0, ...all.map((p) => p.x)), Math.max(...all.map((p) => p.x), 0));
  const yLo = all.map((p) => (Number.isFinite(p.lo) ? Math.min(p.y, p.lo!) : p.y));
  const yHi = all.map((p) => (Number.isFinite(p.hi) ? Math.max(p.y, p.hi!) : p.y));
  const ys = niceTicks(Math.min(...yLo, 1), Math.max(...yHi, 1));
  const x0 = xs[0];
  const x1 = xs[xs.length - 1];
  const y0 = ys[0];
  const y1 = ys[ys.length - 1];
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.top + ph - ((y - y0) / (y1 - y0)) * ph;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(spec.title)}</text>`);
  for (const t of xs) {
    const x = sx(t).toFixed(1);
    out.push(`<line x1="${x}" y1="${m.top}" x2="${x}" y2="${m.top + ph}" stroke="#eee"/>`);
    out.push(`<text x="${x}" y="${m.top + ph + 16}" text-anchor="middle">${tickText(t)}</text>`);
  }
  for (const t of ys) {
    const y = sy(t).toFixed(1);
    out.push(`<line x1="${m.left}" y1="${y}" x2="${m.left + pw}" y2="${y}" stroke="#eee"/>`);
    out.push(`<text x="${m.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${tickText(t)}</text>`);
  }
  out.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${m.left + pw / 2}" y="${H - 12}" text-anchor="middle">${escapeXml(spec.xLabel)}</text>`);
  out.push(
    `<text transform="translate(18 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${escapeXml(spec.yLabel)}</text>`,
  );
  const labels = new LabelPlacer();
  spec.series.forEach((s, i) => {
    const color = s.color ?? COLORS[i % COLORS.length];
    const pts = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y)).sort((a, b) => a.x - b.x);
    if (pts.length > 1)
      out.push(
        `<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ")}"/>`,
      );
    for (const p of pts) {
      const cx = sx(p.x).toFixed(1);
      const cy = sy(p.y).toFixed(1);
      if (Number.isFinite(p.lo) && Number.isFinite(p.hi) && p.hi! > p.lo!) {
        const [y0, y1] = [sy(p.lo!).toFixed(1), sy(p.hi!).toFixed(1)];
        out.push(`<path d="M${cx} ${y0}V${y1}M${Number(cx) - 3} ${y0}h6M${Number(cx) - 3} ${y1}h6" stroke="${color}" stroke-width="1" fill="none"/>`);
      }
      out.push(`<circle cx="${cx}" cy="${cy}" r="4" fill="${color}"><title>${escapeXml(`${s.name} ${p.label ?? ""}`.trim())}</title></circle>`);
      if (p.label) {
        const y = labels.place(Number(cx), Number(cy), p.label.length * 5.5);
        out.push(`<text x="${cx}" y="${y.toFixed(1)}" text-anchor="middle" font-size="10" fill="${color}">${escapeXml(p.label)}</text>`);
      }
    }
    const ly = m.top + 10 + i * 20;
    out.push(`<line x1="${m.left + pw + 15}" y1="${ly}" x2="${m.left + pw + 40}" y2="${ly}" stroke="${color}" stroke-width="2"/>`);
    out.push(`<text x="${m.left + pw + 46}" y="${ly}" dominant-baseline="middle">${escapeXml(s.name)}</text>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
