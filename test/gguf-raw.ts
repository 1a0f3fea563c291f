/**
 * Test helpers for GGUF robustness tests: a small valid file with mixed metadata and tensor types, and an
 * independent walk of a (valid) header that records where each field sits, so tests can corrupt one field.
 */
import { GGMLType, TYPE_TRAITS } from "../src/tensor/types.ts";
import { Rng } from "../src/gguf/rng.ts";
import { GgufValueType as V, type MetaEntry } from "../src/gguf/types.ts";
import type { TensorToWrite } from "../src/gguf/writer.ts";

export function randomTensor(rng: Rng, name: string, type: GGMLType, shape: number[]): TensorToWrite {
  const t = TYPE_TRAITS[type]!;
  const n = shape.reduce((a, b) => a * b, 1);
  return { name, type, shape, data: rng.bytes((n / t.blockSize) * t.typeSize) };
}

/** A small file exercising every metadata value type, arrays, and several tensor types and ranks. */
export function sampleModel(seed = 1): { metadata: MetaEntry[]; tensors: TensorToWrite[] } {
  const rng = new Rng(seed);
  const metadata: MetaEntry[] = [
    { key: "general.architecture", type: V.STRING, value: "llama" },
    { key: "general.alignment", type: V.UINT32, value: 32 },
    { key: "t.u8", type: V.UINT8, value: 200 },
    { key: "t.i8", type: V.INT8, value: -100 },
    { key: "t.u16", type: V.UINT16, value: 60000 },
    { key: "t.i16", type: V.INT16, value: -30000 },
    { key: "t.u32", type: V.UINT32, value: 4000000000 },
    { key: "t.i32", type: V.INT32, value: -2000000000 },
    { key: "t.f32", type: V.FLOAT32, value: 0.5 },
    { key: "t.bool", type: V.BOOL, value: true },
    { key: "t.u64", type: V.UINT64, value: 2n ** 60n + 1n },
    { key: "t.i64", type: V.INT64, value: -5 },
    { key: "t.f64", type: V.FLOAT64, value: Math.PI },
    { key: "t.str", type: V.STRING, value: "héllo ▁wörld" },
    { key: "t.strs", type: V.ARRAY, arrayType: V.STRING, value: ["<unk>", "<s>", "", "abc"] },
    { key: "t.i32s", type: V.ARRAY, arrayType: V.INT32, value: [1, -2, 3] },
    { key: "t.f32s", type: V.ARRAY, arrayType: V.FLOAT32, value: [0.25, -1.5] },
    { key: "t.empty", type: V.ARRAY, arrayType: V.UINT8, value: [] },
  ];
  const tensors = [
    randomTensor(rng, "a.weight", GGMLType.F32, [8, 3]),
    randomTensor(rng, "b.weight", GGMLType.Q8_0, [64, 2]),
    randomTensor(rng, "c.weight", GGMLType.Q4_K, [256, 2, 2]),
    randomTensor(rng, "d.weight", GGMLType.F16, [5]),
    randomTensor(rng, "e.weight", GGMLType.IQ4_NL, [32, 1, 1, 2]),
  ];
  return { metadata, tensors };
}

export interface Field {
  /** e.g. "n_tensors", "kv[3].type", "tensor[1].dim[0]" */
  name: string;
  offset: number;
  /** bytes: 4 or 8 for numbers; the string's byte length for `.name` / `.key` / `.str` fields */
  size: number;
}

/** Walks the header of a valid GGUF v3 buffer and lists its fields (in file order). */
export function headerLayout(buf: Buffer): Field[] {
  const fields: Field[] = [];
  let o = 0;
  const f = (name: string, size: number): number => {
    fields.push({ name, offset: o, size });
    const at = o;
    o += size;
    return at;
  };
  const str = (name: string): void => {
    const len = Number(buf.readBigUInt64LE(f(`${name}len`, 8)));
    f(name, len);
  };
  f("magic", 4);
  f("version", 4);
  const nT = Number(buf.readBigUInt64LE(f("n_tensors", 8)));
  const nKv = Number(buf.readBigUInt64LE(f("n_kv", 8)));
  const scalarSize = (t: number): number => [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8][t]!;
  for (let i = 0; i < nKv; i++) {
    str(`kv[${i}].key`);
    const type = buf.readUInt32LE(f(`kv[${i}].type`, 4));
    if (type === V.STRING) str(`kv[${i}].str`);
    else if (type === V.ARRAY) {
      const at = buf.readUInt32LE(f(`kv[${i}].arraytype`, 4));
      const n = Number(buf.readBigUInt64LE(f(`kv[${i}].arraylen`, 8)));
      for (let j = 0; j < n; j++) {
        if (at === V.STRING) str(`kv[${i}].elem[${j}]`);
        else f(`kv[${i}].elem[${j}]`, scalarSize(at));
      }
    } else f(`kv[${i}].value`, scalarSize(type));
  }
  for (let i = 0; i < nT; i++) {
    str(`tensor[${i}].name`);
    const nd = buf.readUInt32LE(f(`tensor[${i}].ndims`, 4));
    for (let d = 0; d < nd; d++) f(`tensor[${i}].dim[${d}]`, 8);
    f(`tensor[${i}].type`, 4);
    f(`tensor[${i}].offset`, 8);
  }
  return fields;
}

export function field(layout: Field[], name: string): Field {
  const x = layout.find((f) => f.name === name);
  if (!x) throw new Error(`no field ${name}`);
  return x;
}

/** Returns a copy of `buf` with a 4- or 8-byte numeric field set to `value`. */
export function patched(buf: Buffer, fld: Field, value: number | bigint): Buffer {
  const out = Buffer.from(buf);
  if (fld.size === 4) out.writeUInt32LE(Number(BigInt.asUintN(32, BigInt(value))), fld.offset);
  else if (fld.size === 8) out.writeBigUInt64LE(BigInt.asUintN(64, BigInt(value)), fld.offset);
  else throw new Error(`field ${fld.name} is not numeric`);
  return out;
}
