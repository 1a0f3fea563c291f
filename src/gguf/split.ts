/**
 * Split GGUF models (llama.cpp's gguf-split): `<prefix>-00001-of-00003.gguf` ... with metadata
 * `split.no` (0-based), `split.count` and `split.tensors.count`. Given the first shard, lists all shard paths.
 */
import { existsSync } from "node:fs";
import { GgufError } from "../errors.ts";
import type { GgufHeader } from "./header.ts";

const SHARD_NAME = /^(.*)-(\d{5})-of-(\d{5})\.gguf$/;

/** `<prefix>-NNNNN-of-MMMMM.gguf` for shard `no` (1-based) of `count`. */
export function shardPath(prefix: string, no: number, count: number): string {
  return `${prefix}-${String(no).padStart(5, "0")}-of-${String(count).padStart(5, "0")}.gguf`;
}

/** Paths of every shard of the model whose first file is `path` (just `[path]` when it is not split). */
export function splitShardPaths(path: string, header: GgufHeader): string[] {
  const entry = header.metadata.get("split.count");
  const count = entry === undefined ? 1 : entry.value;
  if (typeof count !== "number" || !Number.isInteger(count) || count < 1 || count > 99999)
    throw new GgufError(path, `invalid split.count ${String(count)}`);
  const m = SHARD_NAME.exec(path);
  if (count === 1) return [path];
  if (!m) throw new GgufError(path, `split.count is ${count} but the file name is not of the form <name>-00001-of-${String(count).padStart(5, "0")}.gguf`);
  const no = Number(m[2]);
  if (no !== 1) throw new GgufError(path, `this is shard ${no} of a split model: pass the first shard (${shardPath(m[1]!, 1, Number(m[3]))})`);
  if (Number(m[3]) !== count) throw new GgufError(path, `file name says ${Number(m[3])} shards but split.count is ${count}`);
  const paths = [];
  for (let i = 1; i <= count; i++) {
    const p = shardPath(m[1]!, i, count);
    if (!existsSync(p)) throw new GgufError(path, `shard ${i} of ${count} is missing (${p})`);
    paths.push(p);
  }
  return paths;
}
