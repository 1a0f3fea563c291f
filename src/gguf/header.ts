/**
 * Bounded parser for the header of one GGUF file (v2/v3): magic, version, metadata key/values and tensor infos.
 *
 * Why not @huggingface/gguf: its local-file reader re-opens the file for every 2 MB chunk, re-parses a whole
 * value from its start each time the value crosses a chunk, accepts GGUF v1, throws plain Errors without the
 * file's name, and does not validate tensor types, block sizes, offsets or duplicates. Robustness against
 * hostile input matters more here, so this parser reads the file itself through a small window and checks
 * every count and length against the bytes actually left in the file (and against fixed caps) BEFORE
 * allocating anything: a corrupt header can never cause an allocation larger than the file or a long loop.
 * @huggingface/gguf serves as an independent oracle in test/gguf-oracle.test.ts (a devDependency only).
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { GgufError } from "../errors.ts";
import { typeName, typeTraits, type GGMLType } from "../tensor/types.ts";
import { GgufValueType, type MetaEntry, type MetaScalar, type MetaValue } from "./types.ts";
import { q } from "./quote.ts";

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as little-endian u32
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml limits (GGML_MAX_DIMS, GGML_MAX_NAME) that llama.cpp's loader enforces too */
export const MAX_DIMS = 4;
export const MAX_TENSOR_NAME = 63;
/** caps far above any real model, so hostile counts fail fast instead of allocating */
const MAX_STRING_BYTES = 64 * 1024 * 1024;
const MAX_ARRAY_LENGTH = 1 << 24;
const WINDOW_BYTES = 1 << 20;

/** A tensor as described by the header; `offset` is relative to the start of the data section. */
export interface TensorInfo {
  name: string;
  type: GGMLType;
  shape: number[];
  nElements: number;
  nBytes: number;
  offset: number;
}

export interface GgufHeader {
  version: number;
  alignment: number;
  metadata: Map<string, MetaEntry>;
  tensors: TensorInfo[];
  /** absolute file offset where tensor data starts */
  dataOffset: number;
  fileSize: number;
}

/** Sequential little-endian reader over a file descriptor through a refillable window. */
class Cursor {
  private buf = Buffer.alloc(0);
  private bufStart = 0;
  pos = 0;

  constructor(
    private readonly fd: number,
    readonly fileSize: number,
    private readonly file: string,
  ) {}

  fail(problem: string): never {
    throw new GgufError(this.file, problem);
  }

  get remaining(): number {
    return this.fileSize - this.pos;
  }

  /** Makes `n` bytes at the current position available; returns their index in `this.buf`. */
  private take(n: number, what: string): number {
    if (n > this.remaining) this.fail(`truncated file: ${what} at offset ${this.pos} needs ${n} bytes, ${this.remaining} left`);
    let at = this.pos - this.bufStart;
    if (at < 0 || at + n > this.buf.length) {
      const len = Math.min(Math.max(n, WINDOW_BYTES), this.remaining);
      const b = Buffer.allocUnsafe(len);
      let got = 0;
      while (got < len) {
        const r = readSync(this.fd, b, got, len - got, this.pos + got);
        if (r <= 0) this.fail(`read failed at offset ${this.pos + got} (file shrank?)`);
        got += r;
      }
      this.buf = b;
      this.bufStart = this.pos;
      at = 0;
    }
    this.pos += n;
    return at;
  }

  u8(what: string): number {
    const at = this.take(1, what);
    return this.buf[at]!;
  }
  i8(what: string): number {
    const at = this.take(1, what);
    return this.buf.readInt8(at);
  }
  u16(what: string): number {
    const at = this.take(2, what);
    return this.buf.readUInt16LE(at);
  }
  i16(what: string): number {
    const at = this.take(2, what);
    return this.buf.readInt16LE(at);
  }
  u32(what: string): number {
    const at = this.take(4, what);
    return this.buf.readUInt32LE(at);
  }
  i32(what: string): number {
    const at = this.take(4, what);
    return this.buf.readInt32LE(at);
  }
  f32(what: string): number {
    const at = this.take(4, what);
    return this.buf.readFloatLE(at);
  }
  f64(what: string): number {
    const at = this.take(8, what);
    return this.buf.readDoubleLE(at);
  }
  u64(what: string): bigint {
    const at = this.take(8, what);
    return this.buf.readBigUInt64LE(at);
  }
  i64(what: string): bigint {
    const at = this.take(8, what);
    return this.buf.readBigInt64LE(at);
  }

  /** A u64 count or size that must fit in a safe integer and be at most `max`. */
  count(what: string, max: number): number {
    const at = this.take(8, what);
    const hi = this.buf.readUInt32LE(at + 4);
    const v = hi * 4294967296 + this.buf.readUInt32LE(at);
    if (hi >= 1 << 21 || v > max) {
      const exact = this.buf.readBigUInt64LE(at);
      this.fail(`${what} ${exact} at offset ${this.pos - 8} is too large (at most ${max} possible here: corrupt or truncated file)`);
    }
    return v;
  }

  str(what: string): string {
    const len = this.count(`${what} length`, Math.min(MAX_STRING_BYTES, this.remaining - 8));
    const at = this.take(len, what);
    return this.buf.toString("utf8", at, at + len);
  }
}

/** 64-bit integers become numbers when exact, bigint otherwise (MetaScalar convention). */
function int64(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** Smallest encoded size of one value of a type (used to bound counts by the bytes left). */
function minValueBytes(t: GgufValueType): number {
  switch (t) {
    case GgufValueType.UINT8:
    case GgufValueType.INT8:
    case GgufValueType.BOOL:
      return 1;
    case GgufValueType.UINT16:
    case GgufValueType.INT16:
      return 2;
    case GgufValueType.UINT32:
    case GgufValueType.INT32:
    case GgufValueType.FLOAT32:
      return 4;
    default:
      return 8; // strings (length prefix), 64-bit values
  }
}

function readScalar(c: Cursor, t: GgufValueType, what: string): MetaScalar {
  switch (t) {
    case GgufValueType.UINT8:
      return c.u8(what);
    case GgufValueType.INT8:
      return c.i8(what);
    case GgufValueType.UINT16:
      return c.u16(what);
    case GgufValueType.INT16:
      return c.i16(what);
    case GgufValueType.UINT32:
      return c.u32(what);
    case GgufValueType.INT32:
      return c.i32(what);
    case GgufValueType.FLOAT32:
      return c.f32(what);
    case GgufValueType.BOOL:
      return c.u8(what) !== 0;
    case GgufValueType.STRING:
      return c.str(what);
    case GgufValueType.UINT64:
      return int64(c.u64(what));
    case GgufValueType.INT64:
      return int64(c.i64(what));
    case GgufValueType.FLOAT64:
      return c.f64(what);
    default:
      return c.fail(`${what} has unknown value type ${t as number}`);
  }
}

function isValueType(t: number): t is GgufValueType {
  return Number.isInteger(t) && t >= 0 && t <= GgufValueType.FLOAT64;
}

function readKv(c: Cursor, index: number): MetaEntry {
  const key = c.str(`metadata key #${index}`);
  const type = c.u32(`type of metadata ${q(key)}`);
  if (!isValueType(type)) c.fail(`metadata ${q(key)} has unknown value type ${type}`);
  if (type !== GgufValueType.ARRAY) return { key, type, value: readScalar(c, type, `metadata ${q(key)}`) };
  const arrayType = c.u32(`element type of metadata ${q(key)}`);
  if (!isValueType(arrayType)) c.fail(`metadata ${q(key)} has unknown array element type ${arrayType}`);
  if (arrayType === GgufValueType.ARRAY) c.fail(`metadata ${q(key)} is a nested array (not supported by GGUF readers)`);
  const n = c.count(
    `length of array ${q(key)}`,
    Math.min(MAX_ARRAY_LENGTH, Math.floor((c.remaining - 8) / minValueBytes(arrayType))),
  );
  const value: MetaValue = new Array<MetaScalar>(n);
  const what = `an element of array ${q(key)}`;
  for (let i = 0; i < n; i++) value[i] = readScalar(c, arrayType, what);
  return { key, type, arrayType, value };
}

function readTensorInfo(c: Cursor, index: number): Omit<TensorInfo, "offset"> & { offset: bigint } {
  const name = c.str(`name of tensor #${index}`);
  if (Buffer.byteLength(name) > MAX_TENSOR_NAME) c.fail(`tensor #${index} name is longer than ${MAX_TENSOR_NAME} bytes`);
  const nDims = c.u32(`dimension count of tensor ${q(name)}`);
  if (nDims > MAX_DIMS) c.fail(`tensor ${q(name)} has ${nDims} dimensions (at most ${MAX_DIMS})`);
  const shape: number[] = [];
  let nElements = 1;
  for (let d = 0; d < nDims; d++) {
    const ne = c.i64(`dimension ${d} of tensor ${q(name)}`);
    if (ne < 0n) c.fail(`tensor ${q(name)} has negative dimension ${d} (${ne})`);
    if (ne > BigInt(Number.MAX_SAFE_INTEGER)) c.fail(`tensor ${q(name)} dimension ${d} (${ne}) is too large`);
    shape.push(Number(ne));
    nElements *= Number(ne);
    if (nElements > Number.MAX_SAFE_INTEGER) c.fail(`tensor ${q(name)} element count overflows (shape ${shape.join("x")}...)`);
  }
  const type = c.u32(`type of tensor ${q(name)}`);
  const traits = typeTraits(type);
  if (!traits) c.fail(`tensor ${q(name)} has unknown type id ${type}`);
  const ne0 = nDims > 0 ? shape[0]! : 1;
  if (ne0 % traits.blockSize !== 0)
    c.fail(`tensor ${q(name)} row length ${ne0} is not a multiple of ${typeName(type)}'s block size ${traits.blockSize}`);
  const nBytes = (nElements / traits.blockSize) * traits.typeSize;
  if (nBytes > c.fileSize) c.fail(`tensor ${q(name)} (${shape.join("x")} ${traits.name}) needs ${nBytes} bytes but the whole file has ${c.fileSize} (truncated or corrupt)`);
  const offset = c.u64(`data offset of tensor ${q(name)}`);
  return { name, type: type as GGMLType, shape, nElements, nBytes, offset };
}

/** Reads and validates the header of one GGUF file. Every problem is a one-line GgufError naming the file. */
export function readGgufHeader(file: string): GgufHeader {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "";
    const why: Record<string, string> = { ENOENT: "no such file", EACCES: "permission denied", EISDIR: "is a directory" };
    throw new GgufError(file, `cannot open: ${why[code] ?? (code || (e as Error).message)}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new GgufError(file, "not a regular file");
    return parseHeader(new Cursor(fd, st.size, file));
  } finally {
    closeSync(fd);
  }
}

function parseHeader(c: Cursor): GgufHeader {
  if (c.fileSize < 24) c.fail(`not a GGUF file (only ${c.fileSize} bytes)`);
  const magic = c.u32("magic");
  if (magic !== GGUF_MAGIC) c.fail("not a GGUF file (bad magic)");
  const version = c.u32("version");
  if (version === 1) c.fail("GGUF version 1 is not supported (re-convert the model)");
  if (version !== 2 && version !== 3) {
    if ((version & 0xffff) === 0) c.fail("GGUF file is big-endian (not supported)");
    c.fail(`unsupported GGUF version ${version}`);
  }
  // each tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes, each KV 8 + 4 + 1
  const nTensors = c.count("tensor count", Math.floor(c.remaining / 24));
  const nKv = c.count("metadata count", Math.floor((c.remaining - 8) / 13));

  const metadata = new Map<string, MetaEntry>();
  for (let i = 0; i < nKv; i++) {
    const kv = readKv(c, i);
    if (metadata.has(kv.key)) c.fail(`duplicate metadata key ${q(kv.key)}`);
    metadata.set(kv.key, kv);
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const al = metadata.get("general.alignment");
  if (al) {
    if (al.type !== GgufValueType.UINT32) c.fail("general.alignment must be a uint32");
    const a = al.value as number;
    if (a === 0 || (a & (a - 1)) !== 0) c.fail(`general.alignment ${a} is not a power of two`);
    alignment = a;
  }

  const raw = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const t = readTensorInfo(c, i);
    if (names.has(t.name)) c.fail(`duplicate tensor name ${q(t.name)}`);
    names.add(t.name);
    raw.push(t);
  }
  const dataOffset = Math.ceil(c.pos / alignment) * alignment;

  const tensors: TensorInfo[] = raw.map((t) => {
    if (t.offset % BigInt(alignment) !== 0n) c.fail(`tensor ${q(t.name)} data offset ${t.offset} is not a multiple of the alignment ${alignment}`);
    if (t.offset > BigInt(c.fileSize) || dataOffset + Number(t.offset) + t.nBytes > c.fileSize)
      c.fail(`tensor ${q(t.name)} data (offset ${t.offset}, ${t.nBytes} bytes) extends past the end of the file (truncated?)`);
    return { ...t, offset: Number(t.offset) };
  });
  const byOffset = tensors.filter((t) => t.nBytes > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byOffset.length; i++) {
    const prev = byOffset[i - 1]!;
    const cur = byOffset[i]!;
    if (prev.offset + prev.nBytes > cur.offset) c.fail(`tensors ${q(prev.name)} and ${q(cur.name)} overlap`);
  }
  return { version, alignment, metadata, tensors, dataOffset, fileSize: c.fileSize };
}
