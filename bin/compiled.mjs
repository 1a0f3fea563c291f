// Whether the compiled dist/ may run (bin/tsmoe; the package test): always in an installed package (no
// src/); in a clone only when the last build finished (dist/.built, written after tsc) after the newest
// change under src/, so a build never ran, edits since, or a build under way mean the sources instead.
import { existsSync, readdirSync, statSync } from "node:fs";

/** Newest modification time under a directory (ms). */
function newestMtime(dir) {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = new URL(e.name + (e.isDirectory() ? "/" : ""), dir);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }
  return newest;
}

/** `root`: the package root as a file: URL ending in "/". */
export function compiledIsCurrent(root) {
  const src = new URL("src/", root);
  const built = new URL("dist/.built", root);
  if (!existsSync(new URL("dist/cli/main.js", root))) return false;
  if (!existsSync(src)) return true;
  return existsSync(built) && newestMtime(src) <= statSync(built).mtimeMs;
}
