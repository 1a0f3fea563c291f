/**
 * Result tables for `bench` and `tradeoff`: one list of columns, rendered as a markdown table
 * (llama-bench style: text left-aligned, numbers right-aligned), CSV (RFC 4180 quoting) or JSON.
 */

export interface Column<Row> {
  /** header in markdown */
  title: string;
  /** key in CSV / JSON */
  key: string;
  /** cell text in markdown */
  text: (row: Row) => string;
  /** machine value in CSV / JSON */
  value: (row: Row) => string | number | boolean | null;
  align?: "left" | "right";
}

export function markdownTable<Row>(columns: Column<Row>[], rows: Row[]): string {
  const cells = rows.map((r) => columns.map((c) => c.text(r)));
  const widths = columns.map((c, i) => Math.max(c.title.length, 3, ...cells.map((r) => r[i].length)));
  const pad = (s: string, i: number) => (columns[i].align === "right" ? s.padStart(widths[i]) : s.padEnd(widths[i]));
  const line = (xs: string[]) => `| ${xs.map(pad).join(" | ")} |`;
  const rule = `| ${columns.map((c, i) => (c.align === "right" ? "-".repeat(widths[i] - 1) + ":" : "-".repeat(widths[i]))).join(" | ")} |`;
  return [line(columns.map((c) => c.title)), rule, ...cells.map(line)].join("\n") + "\n";
}

function csvCell(v: string | number | boolean | null): string {
  if (v === null) return "";
  const s = String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function csvTable<Row>(columns: Column<Row>[], rows: Row[]): string {
  const lines = [columns.map((c) => csvCell(c.key)).join(",")];
  for (const r of rows) lines.push(columns.map((c) => csvCell(c.value(r))).join(","));
  return lines.join("\n") + "\n";
}

export function jsonRows<Row>(columns: Column<Row>[], rows: Row[]): Record<string, unknown>[] {
  return rows.map((r) => Object.fromEntries(columns.map((c) => [c.key, c.value(r)])));
}

export type OutputFormat = "md" | "csv" | "json";
