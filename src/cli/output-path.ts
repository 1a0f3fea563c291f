/**
 * Output files are checked before a command computes anything, so a typo in a path fails at once with one
 * line instead of after the whole run with Node's raw ENOENT text.
 */
import { accessSync, constants, statSync, type Stats } from "node:fs";
import { dirname, resolve } from "node:path";
import { UsageError } from "../errors.ts";

/** stat, or undefined when the path does not exist (or a component of it is not a directory) */
function statOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
}

/** Throws a one-line UsageError naming `flag` unless `path` can be created or overwritten ("-" is stdout). */
export function checkWritable(flag: string, path: string): void {
  if (path === "-") return;
  const full = resolve(path);
  const stat = statOrUndefined(full);
  if (stat?.isDirectory()) throw new UsageError(`${flag}: cannot write '${path}': it is a directory`);
  const dir = dirname(full);
  const dirStat = statOrUndefined(dir);
  if (!dirStat) throw new UsageError(`${flag}: cannot write '${path}': directory '${dirname(path)}' does not exist`);
  if (!dirStat.isDirectory()) throw new UsageError(`${flag}: cannot write '${path}': '${dirname(path)}' is not a directory`);
  try {
    accessSync(stat ? full : dir, constants.W_OK);
  } catch {
    throw new UsageError(`${flag}: cannot write '${path}': permission denied`);
  }
}
