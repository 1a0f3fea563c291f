/**
 * GGUF writer -> reader round trips, split models, and one test per kind of corrupt or hostile header.
 */
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { GgufError } from "../src/errors.ts";
import { readGgufHeader } from "../src/gguf/header.ts";
import { loadGguf } from "../src/gguf/reader.ts";
import { Rng } from "../src/gguf/rng.ts";
import { shardPath } from "../src/gguf/split.ts";
import { GgufValueType as V, type MetaEntry } from "../src/gguf/types.ts";
import { ROOT } from "./helpers.ts";
import { writeGguf, type TensorToWrite } from "../src/gguf/writer.ts";
import { GGMLType, TYPE_TRAITS } from "../src/tensor/types.ts";
import { field, headerLayout, patched, randomTensor, sampleModel } from "./gguf-raw.ts";

const dir = mkdtempSync(join(tmpdir(), "tsmoe-gguf-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const tmp = (name = "f.gguf"): string => join(dir, `${n++}-${name}`);

const ROUND_TRIP_TYPES = [
  GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0,
  GGMLType.Q5_1, GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K, GGMLType.IQ4_NL,
  GGMLType.IQ4_XS, GGMLType.MXFP4,
];

function expectSameMetadata(got: Map<string, MetaEntry>, want: MetaEntry[]): void {
  expect([...got.keys()]).toEqual(want.map((e) => e.key));
  for (const e of want) {
    const g = got.get(e.key)!;
    expect(g.type).toBe(e.type);
    expect(g.arrayType).toBe(e.arrayType);
    if (e.type === V.FLOAT32) expect(g.value).toBe(Math.fround(e.value as number));
    else if (e.arrayType === V.FLOAT32) expect(g.value).toEqual((e.value as number[]).map(Math.fround));
    else expect(g.value).toEqual(e.value);
  }
}

describe("GGUF round trip", () => {
  for (const alignment of [32, 64]) {
    it(`writes and reads back every metadata type and every tensor type (alignment ${alignment})`, async () => {
      const rng = new Rng(alignment);
      const { metadata } = sampleModel();
      const meta = metadata.map((e) => (e.key === "general.alignment" ? { ...e, value: alignment } : e));
      const tensors: TensorToWrite[] = [];
      for (const type of ROUND_TRIP_TYPES) {
        const bs = TYPE_TRAITS[type]!.blockSize;
        tensors.push(randomTensor(rng, `${TYPE_TRAITS[type]!.name}.2d`, type, [bs * 2, 3]));
        tensors.push(randomTensor(rng, `${TYPE_TRAITS[type]!.name}.3d`, type, [bs, 2, 4]));
      }
      const path = tmp();
      writeGguf(path, meta, tensors);
      const f = await loadGguf(path);
      expect(f.version).toBe(3);
      expect(f.alignment).toBe(alignment);
      expect(f.fileSize).toBe(statSync(path).size);
      expectSameMetadata(f.metadata, meta);
      expect([...f.tensors.keys()]).toEqual(tensors.map((t) => t.name));
      for (const t of tensors) {
        const g = f.tensors.get(t.name)!;
        expect(g.type).toBe(t.type);
        expect(g.shape).toEqual(t.shape);
        expect(g.nElements).toBe(t.shape.reduce((a, b) => a * b, 1));
        expect(g.nBytes).toBe(t.data.length);
        expect(g.data.buffer).toBeInstanceOf(SharedArrayBuffer);
        expect(Buffer.from(g.data).equals(Buffer.from(t.data))).toBe(true);
      }
      const h = readGgufHeader(path);
      for (const t of h.tensors) expect((h.dataOffset + t.offset) % alignment).toBe(0);
    });
  }

  it("headerOnly gives the same header and empty data; onProgress reports all bytes", async () => {
    const { metadata, tensors } = sampleModel();
    const path = tmp();
    writeGguf(path, metadata, tensors);
    const head = await loadGguf(path, { headerOnly: true });
    for (const t of head.tensors.values()) expect(t.data.length).toBe(0);
    const calls: [number, number][] = [];
    const full = await loadGguf(path, { onProgress: (d, tot) => calls.push([d, tot]) });
    const total = tensors.reduce((a, t) => a + t.data.length, 0);
    expect(calls.at(-1)).toEqual([total, total]);
    expect([...head.tensors.values()].map((t) => t.nBytes)).toEqual([...full.tensors.values()].map((t) => t.nBytes));
  });

  it("writes headers larger than the writer's initial 64 KiB buffer (a real-size vocabulary)", async () => {
    const { metadata, tensors } = sampleModel();
    const pieces = Array.from({ length: 20_000 }, (_, i) => `piece-${i}-${"x".repeat(i % 13)}`);
    const scores = pieces.map((_, i) => -i / 7);
    const big: MetaEntry[] = [
      ...metadata,
      { key: "tokenizer.ggml.tokens", type: V.ARRAY, arrayType: V.STRING, value: pieces },
      { key: "tokenizer.ggml.scores", type: V.ARRAY, arrayType: V.FLOAT32, value: scores },
    ];
    const path = tmp();
    writeGguf(path, big, tensors);
    const back = await loadGguf(path);
    expectSameMetadata(back.metadata, big);
    for (const t of tensors) expect(Buffer.from(back.tensors.get(t.name)!.data).equals(Buffer.from(t.data))).toBe(true);
  });

  it("reads a GGUF v2 file", async () => {
    const { metadata, tensors } = sampleModel();
    const path = tmp();
    writeGguf(path, metadata, tensors);
    const buf = readFileSync(path);
    buf.writeUInt32LE(2, 4);
    writeFileSync(path, buf);
    expect((await loadGguf(path)).version).toBe(2);
  });

  it("reads tensors at data offsets beyond 2^32 (sparse file)", async () => {
    const rng = new Rng(5);
    const a = randomTensor(rng, "a", GGMLType.F32, [8]);
    const b = randomTensor(rng, "b", GGMLType.Q8_0, [32, 2]);
    const path = tmp();
    writeGguf(path, [], [a, b]);
    const far = 2 ** 32 + 96;
    const { dataOffset } = readGgufHeader(path);
    writeFileSync(path, patched(readFileSync(path), field(headerLayout(readFileSync(path)), "tensor[1].offset"), far));
    await expect(loadGguf(path)).rejects.toThrow(/'b' data .* extends past the end/);
    truncateSync(path, dataOffset + far + b.data.length);
    const fd = openSync(path, "r+");
    writeSync(fd, b.data, 0, b.data.length, dataOffset + far);
    closeSync(fd);
    const f = await loadGguf(path);
    expect(f.fileSize).toBe(dataOffset + far + b.data.length);
    expect(Buffer.from(f.tensors.get("b")!.data).equals(Buffer.from(b.data))).toBe(true);
    expect(Buffer.from(f.tensors.get("a")!.data).equals(Buffer.from(a.data))).toBe(true);
  });

  it("writer rejects tensors whose byte count does not match the shape", () => {
    const t = randomTensor(new Rng(1), "x", GGMLType.Q8_0, [32, 2]);
    expect(() => writeGguf(tmp(), [], [{ ...t, data: t.data.subarray(1) }])).toThrow(/needs 68 bytes/);
    expect(() => writeGguf(tmp(), [], [{ ...t, shape: [16, 4] }])).toThrow(/block size/);
  });
});

describe("split models", () => {
  function writeSplit(count: number): { first: string; tensors: TensorToWrite[] } {
    const rng = new Rng(7);
    const prefix = join(dir, `split${n++}`);
    const all: TensorToWrite[] = [];
    for (let i = 0; i < count; i++) {
      const ts = [randomTensor(rng, `s${i}.a`, GGMLType.F32, [4, 2]), randomTensor(rng, `s${i}.b`, GGMLType.Q4_0, [32, 3])];
      all.push(...ts);
      const meta: MetaEntry[] = [
        { key: "general.architecture", type: V.STRING, value: "llama" },
        { key: "split.no", type: V.UINT16, value: i },
        { key: "split.count", type: V.UINT16, value: count },
        { key: "split.tensors.count", type: V.INT32, value: count * 2 },
      ];
      writeGguf(shardPath(prefix, i + 1, count), i === 0 ? meta : meta.slice(1), ts);
    }
    return { first: shardPath(prefix, 1, count), tensors: all };
  }

  it("loads every shard given the first one", async () => {
    const { first, tensors } = writeSplit(3);
    const f = await loadGguf(first);
    expect([...f.tensors.keys()]).toEqual(tensors.map((t) => t.name));
    for (const t of tensors) expect(Buffer.from(f.tensors.get(t.name)!.data).equals(Buffer.from(t.data))).toBe(true);
    expect(f.metadata.get("general.architecture")?.value).toBe("llama");
  });

  it("names the problem when given a later shard or when a shard is missing", async () => {
    const { first } = writeSplit(3);
    await expect(loadGguf(first.replace("-00001-of-", "-00002-of-"))).rejects.toThrow(/shard 2 of a split model: pass the first shard/);
    rmSync(first.replace("-00001-of-", "-00003-of-"));
    await expect(loadGguf(first)).rejects.toThrow(/shard 3 of 3 is missing/);
  });
});

describe("corrupt and hostile files", () => {
  const base = (): Buffer => {
    const { metadata, tensors } = sampleModel();
    const path = tmp();
    writeGguf(path, metadata, tensors);
    return readFileSync(path);
  };
  const good = base();
  const layout = headerLayout(good);
  const at = (name: string): ReturnType<typeof field> => field(layout, name);
  const kvIndex = (key: string): number => {
    const f = layout.find((x) => x.name.endsWith("].key") && good.toString("utf8", x.offset, x.offset + x.size) === key)!;
    return Number(/kv\[(\d+)\]/.exec(f.name)![1]);
  };

  async function expectGgufError(buf: Buffer, message: RegExp): Promise<void> {
    const path = tmp();
    writeFileSync(path, buf);
    const t0 = performance.now();
    const err = await loadGguf(path).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(err).toBeInstanceOf(GgufError);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message.startsWith(path + ": ")).toBe(true);
    expect((err as Error).message).not.toContain("\n");
  }

  const cases: [string, () => Buffer, RegExp][] = [
    ["empty file", () => Buffer.alloc(0), /not a GGUF file/],
    ["bad magic", () => Buffer.concat([Buffer.from("GGUX"), good.subarray(4)]), /bad magic/],
    ["version 1", () => patched(good, at("version"), 1), /version 1 is not supported/],
    ["version 4", () => patched(good, at("version"), 4), /unsupported GGUF version 4/],
    ["big-endian", () => patched(good, at("version"), 0x03000000), /big-endian/],
    ["absurd tensor count", () => patched(good, at("n_tensors"), 2n ** 62n), /tensor count .* too large/],
    ["absurd metadata count", () => patched(good, at("n_kv"), 2n ** 40n), /metadata count .* too large/],
    ["tensor count larger than the header", () => patched(good, at("n_tensors"), 1000), /truncated|unknown|too large|dimension/],
    ["absurd string length", () => patched(good, at("kv[0].keylen"), 2n ** 40n), /length .* too large/],
    ["string length past the end", () => patched(good, at(`kv[${kvIndex("t.str")}].strlen`), good.length), /too large|truncated/],
    ["absurd array length", () => patched(good, at(`kv[${kvIndex("t.i32s")}].arraylen`), 2n ** 50n), /length of array .* too large/],
    ["unknown value type", () => patched(good, at(`kv[${kvIndex("t.u32")}].type`), 99), /unknown value type 99/],
    ["unknown array element type", () => patched(good, at(`kv[${kvIndex("t.i32s")}].arraytype`), 13), /unknown array element type 13/],
    ["nested array", () => patched(good, at(`kv[${kvIndex("t.i32s")}].arraytype`), V.ARRAY), /nested array/],
    ["alignment not a power of two", () => patched(good, at(`kv[${kvIndex("general.alignment")}].value`), 24), /not a power of two/],
    ["alignment of another type", () => patched(good, at(`kv[${kvIndex("general.alignment")}].type`), V.INT32), /general.alignment must be a uint32/],
    ["alignment zero", () => patched(good, at(`kv[${kvIndex("general.alignment")}].value`), 0), /not a power of two/],
    ["unknown tensor type id", () => patched(good, at("tensor[0].type"), 77), /unknown type id 77/],
    ["removed tensor type id", () => patched(good, at("tensor[0].type"), 4), /unknown type id 4/],
    ["row length not a multiple of the block size", () => patched(good, at("tensor[1].dim[0]"), 48), /not a multiple of Q8_0's block size 32/],
    ["too many dimensions", () => patched(good, at("tensor[0].ndims"), 5), /5 dimensions/],
    ["negative dimension", () => patched(good, at("tensor[0].dim[1]"), -3), /negative dimension/],
    ["element count overflow", () => patched(patched(good, at("tensor[2].dim[1]"), 2n ** 40n), at("tensor[2].dim[2]"), 2n ** 40n), /overflows/],
    ["tensor bigger than the file", () => patched(good, at("tensor[0].dim[1]"), 1n << 30n), /needs \d+ bytes but the whole file has/],
    ["misaligned tensor offset", () => patched(good, at("tensor[1].offset"), Number(good.readBigUInt64LE(at("tensor[1].offset").offset)) + 4), /not a multiple of the alignment/],
    ["overlapping tensors", () => patched(good, at("tensor[2].offset"), good.readBigUInt64LE(at("tensor[1].offset").offset)), /overlap/],
    [
      "tensor data past the end of the file",
      () => {
        const path = tmp();
        writeFileSync(path, good);
        const h = readGgufHeader(path);
        const last = h.tensors.at(-1)!;
        expect(h.dataOffset + last.offset + last.nBytes).toBeLessThan(good.length); // the file ends with padding
        return good.subarray(0, h.dataOffset + last.offset + last.nBytes - 1);
      },
      /past the end of the file/,
    ],
    ["offset beyond 2^53", () => patched(good, at("tensor[3].offset"), 2n ** 60n), /past the end of the file/],
    ["truncated header", () => good.subarray(0, at("tensor[1].name").offset + 3), /truncated/],
    [
      "duplicate tensor names",
      () => {
        const b = Buffer.from(good);
        b.write("a", at("tensor[1].name").offset); // "b.weight" -> "a.weight"
        return b;
      },
      /duplicate tensor name 'a.weight'/,
    ],
    [
      "duplicate metadata keys",
      () => {
        const b = Buffer.from(good);
        b.write("t.u16", at(`kv[${kvIndex("t.i16")}].key`).offset);
        return b;
      },
      /duplicate metadata key 't.u16'/,
    ],
  ];
  for (const [name, make, message] of cases) it(name, () => expectGgufError(make(), message));

  it("a path that is not a file, or does not exist", async () => {
    await expect(loadGguf(dir)).rejects.toThrow(/not a regular file/);
    await expect(loadGguf(join(dir, "nope.gguf"))).rejects.toThrow(/no such file/);
  });

  it("a file that shrinks between header and data is reported, not crashed on", async () => {
    const path = tmp();
    writeFileSync(path, good);
    const header = readGgufHeader(path);
    truncateSync(path, header.dataOffset + 8);
    await expect(loadGguf(path)).rejects.toThrow(GgufError);
  });
});

describe("tensor data read by several threads", () => {
  it("gives the same bytes as one thread", async () => {
    const { openGguf } = await import("../src/gguf/reader.ts");
    const path = join(ROOT, "models", "tiny-moe-32x8-q8_0.gguf");
    const one = (await openGguf(path)).readTensors(undefined, undefined, undefined, 0);
    const progress: number[] = [];
    const many = (await openGguf(path)).readTensors((d) => progress.push(d), undefined, undefined, 3);
    expect(many.tensors.size).toBe(one.tensors.size);
    for (const [name, t] of one.tensors) expect(Buffer.from(many.tensors.get(name)!.data).equals(Buffer.from(t.data))).toBe(true);
    expect(progress.at(-1)).toBe([...one.tensors.values()].reduce((a, t) => a + t.nBytes, 0));
  });
});
