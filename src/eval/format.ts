/** printf-style number formatting shared by the reports (`%W.Pf`). */

/** `value` with `prec` decimals, right-aligned in `width` characters (like printf's %W.Pf). */
export function fmt(value: number, width: number, prec: number): string {
  const s = Number.isFinite(value) ? value.toFixed(prec) : Number.isNaN(value) ? "nan" : value > 0 ? "inf" : "-inf";
  return s.padStart(width);
}
