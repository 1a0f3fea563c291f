/**
 * In-memory view of a loaded GGUF model file (all shards of a split model merged).
 */
import type { GGMLType } from "../tensor/types.ts";

/** GGUF metadata value types (gguf_type). */
export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** 64-bit integers are numbers when they fit in 2^53, bigint otherwise. */
export type MetaScalar = number | bigint | string | boolean;
export type MetaValue = MetaScalar | MetaScalar[] | MetaValue[];

export interface MetaEntry {
  key: string;
  type: GgufValueType;
  /** element type when type is ARRAY */
  arrayType?: GgufValueType;
  value: MetaValue;
}

export interface TensorEntry {
  name: string;
  type: GGMLType;
  /** ggml order: shape[0] (ne0) is the row length, contiguous in memory */
  shape: number[];
  nElements: number;
  nBytes: number;
  /** the tensor's bytes: a view on a SharedArrayBuffer (shareable with worker threads without copying) */
  data: Uint8Array;
}

export interface GgufFile {
  /** path of the first (or only) shard */
  path: string;
  version: number;
  alignment: number;
  /** total size in bytes of all shards */
  fileSize: number;
  /** metadata of the first shard, in file order */
  metadata: Map<string, MetaEntry>;
  /** tensors of all shards, in file order */
  tensors: Map<string, TensorEntry>;
}
