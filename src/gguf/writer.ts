/**
 * Writes GGUF v3 files: metadata entries with explicit value types (arrays included) and tensors given as raw
 * bytes, each tensor's data padded to the file's alignment (`general.alignment`, default 32).
 * The header is built in memory; tensor data is written straight from the caller's buffers.
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { TsmoeError } from "../errors.ts";
import { typeName, typeTraits, type GGMLType } from "../tensor/types.ts";
import { GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC } from "./header.ts";
import { GgufValueType, type MetaEntry, type MetaScalar } from "./types.ts";

export interface TensorToWrite {
  name: string;
  type: GGMLType;
  /** ggml order: shape[0] (ne0) is the row length */
  shape: number[];
  /** exactly the tensor's bytes (row count x row size of `type`) */
  data: Uint8Array;
}

/**
 * Growable little-endian byte sink for the header. Every write reserves its room first: `room` may swap in
 * a larger buffer, so `this.buf` must be read after it.
 */
class ByteSink {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  private room(n: number): number {
    if (this.length + n > this.buf.length) {
      const b = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
      this.buf.copy(b, 0, 0, this.length);
      this.buf = b;
    }
    const at = this.length;
    this.length += n;
    return at;
  }
  u8(v: number): void {
    const at = this.room(1);
    this.buf.writeUInt8(v, at);
  }
  i8(v: number): void {
    const at = this.room(1);
    this.buf.writeInt8(v, at);
  }
  u16(v: number): void {
    const at = this.room(2);
    this.buf.writeUInt16LE(v, at);
  }
  i16(v: number): void {
    const at = this.room(2);
    this.buf.writeInt16LE(v, at);
  }
  u32(v: number): void {
    const at = this.room(4);
    this.buf.writeUInt32LE(v, at);
  }
  i32(v: number): void {
    const at = this.room(4);
    this.buf.writeInt32LE(v, at);
  }
  f32(v: number): void {
    const at = this.room(4);
    this.buf.writeFloatLE(v, at);
  }
  f64(v: number): void {
    const at = this.room(8);
    this.buf.writeDoubleLE(v, at);
  }
  u64(v: number | bigint): void {
    const at = this.room(8);
    this.buf.writeBigUInt64LE(BigInt(v), at);
  }
  i64(v: number | bigint): void {
    const at = this.room(8);
    this.buf.writeBigInt64LE(BigInt(v), at);
  }
  str(s: string): void {
    const bytes = Buffer.from(s, "utf8");
    this.u64(bytes.length);
    const at = this.room(bytes.length);
    bytes.copy(this.buf, at);
  }
  zeros(n: number): void {
    const at = this.room(n);
    this.buf.fill(0, at, this.length);
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function writeScalar(out: ByteSink, t: GgufValueType, v: MetaScalar, key: string): void {
  const num = (): number => {
    if (typeof v !== "number") throw new TsmoeError(`gguf writer: '${key}' needs a number, got ${typeof v}`);
    return v;
  };
  switch (t) {
    case GgufValueType.UINT8:
      return out.u8(num());
    case GgufValueType.INT8:
      return out.i8(num());
    case GgufValueType.UINT16:
      return out.u16(num());
    case GgufValueType.INT16:
      return out.i16(num());
    case GgufValueType.UINT32:
      return out.u32(num());
    case GgufValueType.INT32:
      return out.i32(num());
    case GgufValueType.FLOAT32:
      return out.f32(num());
    case GgufValueType.FLOAT64:
      return out.f64(num());
    case GgufValueType.BOOL:
      if (typeof v !== "boolean") throw new TsmoeError(`gguf writer: '${key}' needs a boolean`);
      return out.u8(v ? 1 : 0);
    case GgufValueType.STRING:
      if (typeof v !== "string") throw new TsmoeError(`gguf writer: '${key}' needs a string`);
      return out.str(v);
    case GgufValueType.UINT64:
    case GgufValueType.INT64:
      if (typeof v !== "number" && typeof v !== "bigint") throw new TsmoeError(`gguf writer: '${key}' needs an integer`);
      return t === GgufValueType.UINT64 ? out.u64(v) : out.i64(v);
    default:
      throw new TsmoeError(`gguf writer: '${key}' has value type ${t as number}, which cannot be written as a scalar`);
  }
}

function writeEntry(out: ByteSink, e: MetaEntry): void {
  out.str(e.key);
  out.u32(e.type);
  if (e.type !== GgufValueType.ARRAY) return writeScalar(out, e.type, e.value as MetaScalar, e.key);
  if (e.arrayType === undefined || e.arrayType === GgufValueType.ARRAY || !Array.isArray(e.value))
    throw new TsmoeError(`gguf writer: array '${e.key}' needs a scalar arrayType and an array value`);
  out.u32(e.arrayType);
  out.u64(e.value.length);
  for (const v of e.value) writeScalar(out, e.arrayType, v as MetaScalar, e.key);
}

const pad = (n: number, align: number): number => Math.ceil(n / align) * align;

/** A tensor's name, type and shape (ggml order: shape[0] (ne0) is the row length). */
export type TensorInfo = Omit<TensorToWrite, "data">;

/** A tensor whose bytes come as a sequence of chunks (each written before the next is asked for). */
export interface StreamedTensor extends TensorInfo {
  chunks: () => Iterable<Uint8Array>;
}

/** Checks a tensor's shape against its type; returns its size in bytes. */
export function tensorByteSize(t: TensorInfo): number {
  const traits = typeTraits(t.type);
  if (!traits) throw new TsmoeError(`gguf writer: tensor '${t.name}' has unknown type ${t.type}`);
  const n = t.shape.reduce((a, b) => a * b, 1);
  if ((t.shape[0] ?? 1) % traits.blockSize !== 0)
    throw new TsmoeError(`gguf writer: tensor '${t.name}' row length ${t.shape[0]} is not a multiple of ${typeName(t.type)}'s block size`);
  return (n / traits.blockSize) * traits.typeSize;
}

/** The file's header (metadata and tensor infos, padded to the alignment), its alignment and each tensor's size. */
function ggufHeader(metadata: MetaEntry[], tensors: TensorInfo[]): { header: Buffer; alignment: number; sizes: number[] } {
  const alignEntry = metadata.find((e) => e.key === "general.alignment");
  const alignment = alignEntry ? Number(alignEntry.value) : GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0)
    throw new TsmoeError(`gguf writer: general.alignment ${alignment} is not a power of two`);
  if (new Set(metadata.map((e) => e.key)).size !== metadata.length) throw new TsmoeError("gguf writer: duplicate metadata keys");
  if (new Set(tensors.map((t) => t.name)).size !== tensors.length) throw new TsmoeError("gguf writer: duplicate tensor names");

  const out = new ByteSink();
  out.u32(GGUF_MAGIC);
  out.u32(3);
  out.u64(tensors.length);
  out.u64(metadata.length);
  for (const e of metadata) writeEntry(out, e);
  let offset = 0;
  const sizes = tensors.map((t) => {
    const nBytes = tensorByteSize(t);
    out.str(t.name);
    out.u32(t.shape.length);
    for (const d of t.shape) out.u64(d);
    out.u32(t.type);
    out.u64(offset);
    offset += pad(nBytes, alignment);
    return nBytes;
  });
  out.zeros(pad(out.length, alignment) - out.length);
  return { header: out.bytes(), alignment, sizes };
}

/** Writes a GGUF v3 file. `metadata` is written in the given order; `general.alignment` (uint32) sets the padding. */
export function writeGguf(path: string, metadata: MetaEntry[], tensors: TensorToWrite[]): void {
  for (const t of tensors) {
    const nBytes = tensorByteSize(t);
    if (t.data.byteLength !== nBytes)
      throw new TsmoeError(`gguf writer: tensor '${t.name}' (${t.shape.join("x")} ${typeName(t.type)}) needs ${nBytes} bytes, got ${t.data.byteLength}`);
  }
  writeGgufStreamed(
    path,
    metadata,
    tensors.map((t) => ({ name: t.name, type: t.type, shape: t.shape, chunks: () => [t.data] })),
  );
}

/**
 * Writes a GGUF v3 file whose tensor data is produced chunk by chunk (memory stays bounded by the largest
 * chunk): each tensor's chunks must add up to exactly its size.
 */
export function writeGgufStreamed(path: string, metadata: MetaEntry[], tensors: StreamedTensor[]): void {
  const { header, alignment, sizes } = ggufHeader(metadata, tensors);
  const fd = openSync(path, "w");
  try {
    writeAll(fd, header);
    const zeros = new Uint8Array(alignment);
    tensors.forEach((t, i) => {
      let written = 0;
      for (const chunk of t.chunks()) {
        writeAll(fd, chunk);
        written += chunk.byteLength;
      }
      if (written !== sizes[i]) throw new TsmoeError(`gguf writer: tensor '${t.name}' needs ${sizes[i]} bytes, got ${written}`);
      writeAll(fd, zeros.subarray(0, pad(sizes[i]!, alignment) - sizes[i]!));
    });
  } finally {
    closeSync(fd);
  }
}

function writeAll(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.byteLength) done += writeSync(fd, data, done, Math.min(data.byteLength - done, 1 << 30));
}
