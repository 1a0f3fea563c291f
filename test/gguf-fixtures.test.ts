/**
 * The reader on every GGUF of the shared fixtures (models, tokenizer test vocabularies, kld files): each loads,
 * and the model files' tensor names, shapes and types match manifest.json exactly.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { loadGguf } from "../src/gguf/reader.ts";
import { typeName } from "../src/tensor/types.ts";
import { FIXTURES, HAVE_SHARED, SHARED, SHARED_SKIP_MESSAGE } from "./helpers.ts";

interface ManifestModel {
  file: string;
  fixture: string;
  arch: string;
  bytes: number;
  "general.file_type": number;
  tensor_type_counts: Record<string, number>;
  tensor_types: Record<string, string>;
}
interface Manifest {
  fixtures: Record<string, { arch: string; tensors: Record<string, number[]> }>;
  models: ManifestModel[];
}

function ggufFiles(root: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(root, { withFileTypes: true })) {
    const p = join(root, e.name);
    if (e.isDirectory()) out.push(...ggufFiles(p));
    else if (e.name.endsWith(".gguf")) out.push(p);
  }
  return out.sort();
}

if (!HAVE_SHARED) console.warn(`gguf-fixtures: ${SHARED_SKIP_MESSAGE}`);

describe.skipIf(!HAVE_SHARED)("reader on the shared fixtures", () => {
  const manifest = HAVE_SHARED ? (JSON.parse(readFileSync(join(FIXTURES, "manifest.json"), "utf8")) as Manifest) : undefined;

  it("every model file of manifest.json: tensor names, shapes, types and counts per type", async () => {
    expect(manifest!.models.length).toBeGreaterThan(20);
    for (const m of manifest!.models) {
      const f = await loadGguf(join(FIXTURES, m.file));
      expect(f.fileSize, m.file).toBe(m.bytes);
      expect(f.metadata.get("general.architecture")?.value).toBe(m.arch);
      expect(f.metadata.get("general.file_type")?.value).toBe(m["general.file_type"]);
      const counts: Record<string, number> = {};
      for (const t of f.tensors.values()) counts[typeName(t.type)] = (counts[typeName(t.type)] ?? 0) + 1;
      expect(counts, m.file).toEqual(m.tensor_type_counts);
      const types = Object.fromEntries([...f.tensors.values()].map((t) => [t.name, typeName(t.type)]));
      expect(types, m.file).toEqual(m.tensor_types);
      const shapes = Object.fromEntries([...f.tensors.values()].map((t) => [t.name, t.shape]));
      expect(shapes, m.file).toEqual(manifest!.fixtures[m.fixture]!.tensors);
      for (const t of f.tensors.values()) expect(t.data.length).toBe(t.nBytes);
    }
  });

  it("every other GGUF under fixtures/ and models/ loads (header and data)", async () => {
    const listed = new Set(manifest!.models.map((m) => join(FIXTURES, m.file)));
    const others = [...ggufFiles(FIXTURES), ...ggufFiles(join(SHARED, "models"))].filter((p) => !listed.has(p));
    expect(others.length).toBeGreaterThan(10);
    for (const p of others) {
      const f = await loadGguf(p);
      expect(f.fileSize, relative(SHARED, p)).toBe(statSync(p).size);
      expect(f.metadata.has("general.architecture") || f.metadata.has("tokenizer.ggml.model"), p).toBe(true);
    }
  });
});
