/**
 * Typed access to GGUF metadata values, with one-line GgufErrors when a key has the wrong kind of value.
 */
import { GgufError } from "../errors.ts";
import { GgufValueType, type GgufFile, type MetaEntry } from "./types.ts";
import { q } from "./quote.ts";

const INTEGER_TYPES = new Set([
  GgufValueType.UINT8,
  GgufValueType.INT8,
  GgufValueType.UINT16,
  GgufValueType.INT16,
  GgufValueType.UINT32,
  GgufValueType.INT32,
  GgufValueType.UINT64,
  GgufValueType.INT64,
]);
const FLOAT_TYPES = new Set([GgufValueType.FLOAT32, GgufValueType.FLOAT64]);

function entry(file: GgufFile, key: string, required: boolean): MetaEntry | undefined {
  const e = file.metadata.get(key);
  if (!e && required) throw new GgufError(file.path, `missing metadata key ${q(key)}`);
  return e;
}

/** An integer value (any integer type, exact in a JS number); `fallback` when absent, error when absent without one. */
export function metaInt(file: GgufFile, key: string, fallback?: number): number {
  const e = entry(file, key, fallback === undefined);
  if (!e) return fallback!;
  if (!INTEGER_TYPES.has(e.type) || typeof e.value !== "number")
    throw new GgufError(file.path, `metadata ${q(key)} must be an integer (got ${describe(e)})`);
  return e.value;
}

/** A numeric value (integer or float). */
export function metaFloat(file: GgufFile, key: string, fallback?: number): number {
  const e = entry(file, key, fallback === undefined);
  if (!e) return fallback!;
  if ((!INTEGER_TYPES.has(e.type) && !FLOAT_TYPES.has(e.type)) || typeof e.value !== "number")
    throw new GgufError(file.path, `metadata ${q(key)} must be a number (got ${describe(e)})`);
  return e.value;
}

export function metaString(file: GgufFile, key: string, fallback?: string): string {
  const e = entry(file, key, fallback === undefined);
  if (!e) return fallback!;
  if (e.type !== GgufValueType.STRING) throw new GgufError(file.path, `metadata ${q(key)} must be a string (got ${describe(e)})`);
  return e.value as string;
}

export function metaBool(file: GgufFile, key: string, fallback?: boolean): boolean {
  const e = entry(file, key, fallback === undefined);
  if (!e) return fallback!;
  if (e.type !== GgufValueType.BOOL) throw new GgufError(file.path, `metadata ${q(key)} must be a bool (got ${describe(e)})`);
  return e.value as boolean;
}

/** An array value; `undefined` when absent. */
export function metaArray(file: GgufFile, key: string): MetaEntry["value"][] | undefined {
  const e = entry(file, key, false);
  if (!e) return undefined;
  if (e.type !== GgufValueType.ARRAY) throw new GgufError(file.path, `metadata ${q(key)} must be an array (got ${describe(e)})`);
  return e.value as MetaEntry["value"][];
}

/** `general.architecture` (required by every model file). */
export function metaArch(file: GgufFile): string {
  return metaString(file, "general.architecture");
}

function describe(e: MetaEntry): string {
  if (e.type === GgufValueType.ARRAY) return `array of ${GgufValueType[e.arrayType ?? 0]}`;
  return GgufValueType[e.type] ?? `type ${e.type}`;
}
