/**
 * Differential test of tsmoe's GGUF header parser (src/gguf/header.ts) against an independent one,
 * @huggingface/gguf: on every GGUF of the shared fixtures and on files written here (every metadata value
 * type, a v2 file, several alignments, a random model of each architecture) both must read the same version,
 * metadata keys, value types and values, tensor names, shapes, types and offsets, and data offset.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gguf } from "@huggingface/gguf";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { readGgufHeader } from "../src/gguf/header.ts";
import { ARCHS, writeRandomModel } from "../src/gguf/random-model.ts";
import { GgufValueType, type MetaEntry } from "../src/gguf/types.ts";
import { writeGguf } from "../src/gguf/writer.ts";
import { GGMLType } from "../src/tensor/types.ts";
import { sampleModel } from "./gguf-raw.ts";
import { FIXTURES, HAVE_SHARED, SHARED_SKIP_MESSAGE } from "./helpers.ts";

const PSEUDO_KEYS = ["version", "tensor_count", "kv_count"];
const INT64 = [GgufValueType.UINT64, GgufValueType.INT64];

/**
 * A metadata value in one comparable form: 64-bit integers as bigint, arrays element by element. With
 * `dropBom`, a string's leading U+FEFF is dropped: the oracle decodes strings with a default TextDecoder,
 * which strips it (a llama vocabulary has a token that is just U+FEFF; tsmoe keeps the bytes, as llama.cpp).
 */
function normal(value: unknown, type: GgufValueType | undefined, dropBom = false): unknown {
  if (Array.isArray(value)) return value.map((v) => normal(v, type, dropBom));
  if (type !== undefined && INT64.includes(type)) return BigInt(value as number | bigint);
  if (dropBom && typeof value === "string" && value.startsWith("\uFEFF")) return value.slice(1);
  return value;
}

/** What tsmoe reads, in the oracle's terms. */
function ours(path: string) {
  const h = readGgufHeader(path);
  const metadata: Record<string, { type: number; subType?: number; value: unknown }> = {};
  for (const [key, e] of h.metadata) metadata[key] = { type: e.type, subType: e.arrayType, value: normal(e.value, e.arrayType ?? e.type, true) };
  const tensors = h.tensors.map((t) => ({ name: t.name, shape: t.shape, type: t.type, offset: t.offset }));
  return { version: h.version, metadata, tensors, dataOffset: h.dataOffset };
}

/** What @huggingface/gguf reads. */
async function oracle(path: string) {
  const r = await gguf(path, { allowLocalFile: true, typedMetadata: true });
  const metadata: Record<string, { type: number; subType?: number; value: unknown }> = {};
  const entries = Object.entries(r.typedMetadata) as [string, { type: number; subType?: number; value: unknown }][];
  for (const [key, e] of entries) {
    if (PSEUDO_KEYS.includes(key)) continue;
    metadata[key] = { type: e.type, subType: e.subType, value: normal(e.value, e.subType ?? e.type) };
  }
  for (const t of r.tensorInfos) expect(t.n_dims, t.name).toBe(t.shape.length);
  const tensors = r.tensorInfos.map((t) => ({ name: t.name, shape: t.shape.map(Number), type: t.dtype as number, offset: Number(t.offset) }));
  expect(Number(r.typedMetadata.tensor_count.value)).toBe(tensors.length);
  expect(Number(r.typedMetadata.kv_count.value)).toBe(Object.keys(metadata).length);
  return { version: r.typedMetadata.version.value, metadata, tensors, dataOffset: Number(r.tensorDataOffset) };
}

async function expectAgreement(path: string): Promise<void> {
  const a = ours(path);
  const b = await oracle(path);
  expect(a.version, path).toBe(b.version);
  expect(Object.keys(a.metadata).sort(), path).toEqual(Object.keys(b.metadata).sort());
  for (const key of Object.keys(a.metadata)) expect(a.metadata[key], `${path}: ${key}`).toEqual(b.metadata[key]);
  expect(a.tensors, path).toEqual(b.tensors);
  expect(a.dataOffset, path).toBe(b.dataOffset);
}

function ggufFiles(root: string): string[] {
  return readdirSync(root, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(".gguf"))
    .map((e) => join(e.parentPath, e.name))
    .sort();
}

describe("GGUF header parser vs @huggingface/gguf", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "tsmoe-gguf-oracle-"));
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("agree on a file with every metadata value type, as v3 and v2, at several alignments", async () => {
    const { metadata, tensors } = sampleModel(3);
    for (const alignment of [32, 1, 64, 256]) {
      const meta: MetaEntry[] = metadata.map((e) => (e.key === "general.alignment" ? { ...e, value: alignment } : e));
      const v3 = join(dir, `sample-a${alignment}.gguf`);
      writeGguf(v3, meta, tensors);
      await expectAgreement(v3);
      // v2 has v3's layout (64-bit counts and lengths); only the version field differs
      const bytes = readFileSync(v3);
      bytes.writeUInt32LE(2, 4);
      const v2 = join(dir, `sample-a${alignment}-v2.gguf`);
      writeFileSync(v2, bytes);
      await expectAgreement(v2);
    }
  });

  it("agree on a random model of every architecture", async () => {
    const types = [GGMLType.F16, GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.BF16];
    for (const [i, arch] of Object.keys(ARCHS).entries()) {
      const path = await writeRandomModel(join(dir, `${arch}.gguf`), { arch, seed: i, weightType: types[i % types.length], chatTemplate: i % 2 === 0 });
      await expectAgreement(path);
    }
  });

  it.skipIf(!HAVE_SHARED)("agree on every GGUF of the shared fixtures", async () => {
    const files = ggufFiles(FIXTURES);
    expect(files.length).toBeGreaterThan(20);
    for (const f of files) await expectAgreement(f);
    console.log(`@huggingface/gguf agrees on ${files.length} fixture files (${files.map((f) => relative(FIXTURES, f)).slice(0, 3).join(", ")}, ...)`);
  });
  if (!HAVE_SHARED) it("skips the shared fixtures", () => console.warn(SHARED_SKIP_MESSAGE));
});
