/**
 * Dequantization goldens: every fixtures/<f>/<f>.<TYPE>.dequant.<GGMLTYPE>.json holds the raw bytes of the
 * first rows of one tensor and the floats llama.cpp's reference code makes of them.
 */
import { describe, expect, it } from "vitest";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { FIXTURES, HAVE_SHARED, SHARED_SKIP_MESSAGE } from "./helpers.ts";
import { typeByName } from "../src/tensor/types.ts";
import { dequantizeRow } from "../src/tensor/dequantize.ts";

interface Golden {
  file: string;
  tensor: string;
  type: string;
  shape: number[];
  row_bytes: number;
  raw_b64: string[];
  rows: number[][];
}

function goldenFiles(): string[] {
  if (!HAVE_SHARED) return [];
  const out: string[] = [];
  for (const dir of readdirSync(FIXTURES, { withFileTypes: true })) {
    if (!dir.isDirectory()) continue;
    for (const f of readdirSync(join(FIXTURES, dir.name))) if (/\.dequant\.[A-Z0-9_]+\.json$/.test(f)) out.push(join(dir.name, f));
  }
  return out.sort();
}

if (!HAVE_SHARED) console.warn(SHARED_SKIP_MESSAGE);

describe.skipIf(!HAVE_SHARED)("dequantization goldens (llama.cpp reference)", () => {
  const files = goldenFiles();
  it("finds golden files for every quantized type of the fixture set", () => {
    const types = new Set(files.map((f) => f.match(/\.dequant\.([A-Z0-9_]+)\.json$/)![1]));
    for (const t of ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS", "MXFP4"]) {
      expect(types.has(t), t).toBe(true);
    }
  });
  for (const f of files) {
    it(f, () => {
      const g = JSON.parse(readFileSync(join(FIXTURES, f), "utf8")) as Golden;
      const type = typeByName(g.type);
      expect(type, g.type).toBeDefined();
      const n = g.shape[0]!;
      // the float32 operations are reproduced in ggml's order, so every value is expected bit-exact
      // (the contract is 1e-6 relative for block types; exact for F32/F16/BF16)
      let mismatches = 0;
      for (let r = 0; r < g.rows.length; r++) {
        const raw = new Uint8Array(Buffer.from(g.raw_b64[r]!, "base64"));
        expect(raw.length).toBe(g.row_bytes);
        const got = new Float32Array(n);
        dequantizeRow(type!, raw, 0, got, 0, n);
        const want = g.rows[r]!;
        expect(want.length).toBe(n);
        for (let i = 0; i < n; i++) {
          const w = Math.fround(want[i]!);
          if (got[i] !== w && mismatches++ < 5) expect(`row ${r} [${i}] = ${got[i]}`).toBe(`row ${r} [${i}] = ${w}`);
        }
      }
      expect(mismatches).toBe(0);
    });
  }
});
