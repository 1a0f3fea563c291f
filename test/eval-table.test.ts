/** Report outputs: markdown / CSV / JSON tables, the SVG chart, grid lists, perplexity chunking. */
import { describe, expect, it } from "vitest";
import { countSettings, dynamicSettings } from "../src/eval/grid.ts";
import { expertGridFrom, parseSerList } from "../src/cli/grid-options.ts";
import { PerplexityAccumulator, chunkTokens, finalEstimateLine, planChunks } from "../src/eval/perplexity.ts";
import { lineChartSvg, niceTicks } from "../src/eval/svg-chart.ts";
import { spreadOf } from "../src/eval/tradeoff.ts";
import { csvTable, jsonRows, markdownTable, type Column } from "../src/eval/table.ts";

type Row = { name: string; v: number };
const cols: Column<Row>[] = [
  { title: "name", key: "name", text: (r) => r.name, value: (r) => r.name },
  { title: "value", key: "v", text: (r) => r.v.toFixed(2), value: (r) => r.v, align: "right" },
];
const rows: Row[] = [
  { name: "a", v: 1 },
  { name: 'b, "quoted"', v: 22.5 },
];

describe("tables", () => {
  it("markdown aligns text left and numbers right", () => {
    expect(markdownTable(cols, rows)).toBe(
      ["| name        | value |", "| ----------- | ----: |", "| a           |  1.00 |", '| b, "quoted" | 22.50 |', ""].join("\n"),
    );
  });
  it("CSV quotes as RFC 4180 and JSON keeps machine values", () => {
    expect(csvTable(cols, rows)).toBe('name,v\na,1\n"b, ""quoted""",22.5\n');
    expect(jsonRows(cols, rows)).toEqual([
      { name: "a", v: 1 },
      { name: 'b, "quoted"', v: 22.5 },
    ]);
  });
});

describe("SVG chart", () => {
  it("has round ticks covering the data", () => {
    expect(niceTicks(0, 0.93)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(1, 1)[0]).toBeLessThan(1);
  });
  it("draws one polyline per series and escapes text", () => {
    const svg = lineChartSvg({
      title: "a < b & c",
      xLabel: "x",
      yLabel: "y",
      series: [
        { name: "soft", points: [{ x: 0, y: 1 }, { x: 0.5, y: 2, label: "N=2" }] },
        { name: "hard", points: [{ x: 0, y: 1 }, { x: 0.3, y: 1.5 }] },
      ],
    });
    expect(svg.match(/<polyline /g)?.length).toBe(2);
    expect(svg).toContain("a &lt; b &amp; c");
    expect(svg).not.toMatch(/NaN|undefined/);
    // every opened element is closed
    const open = (svg.match(/<(?!\/)[a-z]+[^>]*[^/]>/g) ?? []).length;
    const close = (svg.match(/<\/[a-z]+>/g) ?? []).length;
    expect(open).toBe(close);
  });
  it("draws error bars and keeps labels at one spot from overlapping", () => {
    const svg = lineChartSvg({
      title: "t",
      xLabel: "x",
      yLabel: "y",
      series: [
        { name: "soft", points: [{ x: 0, y: 1, label: "N=8", lo: 0.9, hi: 1.2 }, { x: 0.5, y: 2 }] },
        { name: "hard", points: [{ x: 0, y: 1, label: "N=8" }, { x: 0.3, y: 1.5 }] },
        { name: "model", color: "#000", points: [{ x: 0, y: 1, label: "model" }] },
      ],
    });
    expect(svg.match(/<path d="M[\d.]+ [\d.]+V[\d.]+/g)?.length).toBe(1);
    const labelYs = [...svg.matchAll(/<text x="([\d.]+)" y="([\d.]+)"[^>]*font-size="10"[^>]*>([^<]+)</g)].map((m) => m[2]);
    expect(labelYs.length).toBe(3);
    expect(new Set(labelYs).size).toBe(3);
    expect(svg).toContain('fill="#000"');
  });
  it("spreadOf gives the median and the range", () => {
    expect(spreadOf([3, 1, 2])).toEqual({ median: 2, lo: 1, hi: 3 });
    expect(spreadOf([4, 1, 2, 3])).toEqual({ median: 2.5, lo: 1, hi: 4 });
  });
});

describe("grids and chunking", () => {
  it("builds expert settings from lists", () => {
    expect(countSettings([4, 2], ["soft", "hard"]).map((s) => s.label)).toEqual(["N=4 soft", "N=2 soft", "N=4 hard", "N=2 hard"]);
    expect(parseSerList("--moe-ser", "2,0.2/4,0.4")).toEqual([{ kmin: 2, t: 0.2 }, { kmin: 4, t: 0.4 }]);
    expect(dynamicSettings([0.5], [{ kmin: 2, t: 0.2 }]).map((s) => s.moe)).toEqual([
      { mask: "soft", cumP: 0.5 },
      { mask: "soft", ser: { kmin: 2, t: 0.2 } },
    ]);
    // the ranges are src/model/moe-check.ts's, checked as the lists are read
    expect(() => expertGridFrom({ moeMask: "soft", moeSer: "2,1.5" })).toThrow(/T must be in/);
    expect(() => expertGridFrom({ moeMask: "soft", moeCumP: "0.5,0" })).toThrow(/--moe-cum-p: P must be in \(0, 1\], got 0/);
  });
  it("chunks as llama.cpp: n_ctx tokens, BOS first, second half scored", () => {
    const plan = planChunks(1000, 128);
    expect(plan).toEqual({ nCtx: 128, nChunk: 7, first: 64, nScored: 63 });
    expect(planChunks(1000, 128, 3).nChunk).toBe(3);
    expect(() => planChunks(200, 128)).toThrow(/at least 256 tokens/);
    const tokens = Array.from({ length: 300 }, (_, i) => i + 10);
    expect(chunkTokens(tokens, plan, 1, 1).slice(0, 3)).toEqual([1, 139, 140]);
    expect(chunkTokens(tokens, plan, 1, null)[0]).toBe(138);
  });
  it("perplexity and its uncertainty follow llama.cpp's formula", () => {
    const acc = new PerplexityAccumulator();
    for (const v of [1, 2, 3, 4]) acc.add(v);
    const f = acc.final();
    expect(f.ppl).toBeCloseTo(Math.exp(2.5), 10);
    expect(f.err).toBeCloseTo(Math.exp(2.5) * Math.sqrt(1.25 / 3), 10);
    expect(finalEstimateLine({ ppl: 12.34567, err: 0.123456 })).toBe("Final estimate: PPL = 12.3457 +/- 0.12346");
  });
});
