/** Shared test helpers: where ../shared is, running the CLI the way users do. */
import { existsSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { expect } from "vitest";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const SHARED = resolve(ROOT, "..", "shared");
export const FIXTURES = join(SHARED, "fixtures");
export const HAVE_SHARED = existsSync(join(FIXTURES, "manifest.json"));
export const SHARED_SKIP_MESSAGE = `../shared/fixtures not found at ${FIXTURES}: skipping tests that need the shared fixtures`;
if (!HAVE_SHARED) console.warn(SHARED_SKIP_MESSAGE);

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs bin/tsmoe with the given arguments (as a user would) and returns its exit status and output. */
export function runCli(args: string[], opts: { timeoutMs?: number; input?: string; env?: Record<string, string> } = {}): CliResult {
  const r = spawnSync(process.execPath, [join(ROOT, "bin", "tsmoe"), ...args], {
    cwd: ROOT,
    env: opts.env ? { ...process.env, ...opts.env } : undefined,
    encoding: "utf8",
    timeout: opts.timeoutMs ?? 120_000,
    input: opts.input,
    maxBuffer: 256 * 1024 * 1024,
  });
  return { status: r.status ?? -1, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

/** Runs bin/tsmoe as a user would and checks the one-line `error: ...` and exit status 1. */
export function expectOneLineError(args: string[], re: RegExp): void {
  const r = runCli(args);
  expect(r.status, `${args.join(" ")}: ${r.stderr}`).toBe(1);
  expect(r.stderr.trim().split("\n").length, r.stderr).toBe(1);
  expect(r.stderr).toMatch(/^error: /);
  expect(r.stderr).toMatch(re);
}
