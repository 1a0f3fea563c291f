/**
 * The npm package as a user gets it: `npm pack` (dist/ built first unless current), the tarball installed
 * into a temporary directory with `npm ci --offline` (its dependencies from npm's cache, where the clone's own
 * `npm ci` put them), then the README's library example run there, its types checked, and the installed
 * `tsmoe` command run. Only the package's declared dependencies are installed, so nothing may need tsx.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { ROOT, runCli } from "./helpers.ts";
// @ts-expect-error: plain JavaScript, no types
import { compiledIsCurrent } from "../bin/compiled.mjs";

const NPM = process.platform === "win32" ? "npm.cmd" : "npm";

function run(cmd: string, args: string[], cwd: string): SpawnSyncReturns<string> {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", timeout: 120_000, env: { ...process.env, npm_config_update_notifier: "false" } });
  if (r.error) throw r.error;
  return r;
}

function ok(r: SpawnSyncReturns<string>, what: string): string {
  expect(r.status, `${what}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

/** The README's library example: the first ```js block of its "## Library" section. */
function readmeExample(): string {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## Library"));
  const m = /```js\n([\s\S]*?)```/.exec(section);
  if (!m) throw new Error("README.md: no ```js example in the Library section");
  return m[1]!;
}

/**
 * package.json and package-lock.json of a project that depends on the tarball only: the lock lists the
 * tarball and, copied from the clone's lock, the packages it depends on at run time (non-dev), so npm
 * installs them offline from its cache at the versions the clone was tested with.
 */
function writeProject(dir: string, tarball: string): void {
  const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as { packages: Record<string, { dev?: boolean; link?: boolean }> };
  const own = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string; dependencies: object; bin: object; license: string };
  const dep = { tsmoe: `file:${tarball}` };
  const packages: Record<string, unknown> = {
    "": { name: "tsmoe-package-test", dependencies: dep },
    "node_modules/tsmoe": { version: own.version, resolved: `file:${tarball}`, license: own.license, dependencies: own.dependencies, bin: own.bin },
  };
  for (const [path, entry] of Object.entries(lock.packages)) if (path !== "" && !entry.dev && !entry.link) packages[path] = entry;
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "tsmoe-package-test", private: true, type: "module", dependencies: dep }));
  writeFileSync(join(dir, "package-lock.json"), JSON.stringify({ name: "tsmoe-package-test", lockfileVersion: 3, requires: true, packages }));
}

describe("the npm package", () => {
  let dir: string;
  let files: string[];
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "tsmoe-package-"));
    // prepare (the build) only when dist/ is not current: after `npm ci` it is, and a no-op build still costs ~5 s
    const current = (compiledIsCurrent as (root: URL) => boolean)(pathToFileURL(ROOT + "/"));
    const args = ["pack", "--json", "--pack-destination", dir, ...(current ? ["--ignore-scripts"] : [])];
    const packed = JSON.parse(ok(run(NPM, args, ROOT), "npm pack").replace(/^[^[]*/, "")) as { filename: string; files: { path: string }[] }[];
    files = packed[0]!.files.map((f) => f.path);
    writeProject(dir, packed[0]!.filename);
    ok(run(NPM, ["ci", "--offline", "--no-audit", "--no-fund"], dir), "npm ci --offline of the tarball");
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("holds the compiled code, its types, the CLI, the embedded model and the licences, and no tests, benches, sources or CI scripts", () => {
    for (const f of ["dist/index.js", "dist/index.d.ts", "dist/pool/worker.js", "bin/tsmoe", "models/tiny-moe-32x8-q8_0.gguf", "models/README.md", "LICENSE", "README.md", "package.json"])
      expect(files).toContain(f);
    expect(files.filter((f) => /^(test|bench|src|\.ci)\/|^(tsconfig|vitest)|\.tsbuildinfo$|^dist\/\.built$/.test(f))).toEqual([]);
    const license = readFileSync(join(dir, "node_modules", "tsmoe", "LICENSE"), "utf8");
    expect(license).toContain("MIT License");
    expect(license).toContain("CDLA-Sharing-1.0");
  });

  it("runs the README's library example with moe: { nExpert: 4 }, generating the CLI's text", () => {
    const example = readmeExample();
    expect(example).toContain("moe: { nExpert: 4 }");
    writeFileSync(join(dir, "example.mjs"), example);
    const out = ok(run(process.execPath, ["example.mjs"], dir), "node example.mjs").split("\n");
    expect(out[0]).toBe("qwen3moe: 8 of 32 experts per token");
    const cli = runCli(["-p", "Once upon a time", "-n", "32", "-c", "512", "--temp", "0", "--moe-n-expert", "4"]);
    expect(cli.status, cli.stderr).toBe(0);
    expect(out[1]!.length).toBeGreaterThan(20);
    expect("Once upon a time" + out[1]).toBe(cli.stdout.trimEnd());
    expect(out[2]).toMatch(/^most likely next token: ".+"$/);
  });

  it("type-checks the example against the package's .d.ts files", () => {
    writeFileSync(join(dir, "example.mts"), readmeExample());
    // @types/node from the clone, as a TypeScript user has it
    mkdirSync(join(dir, "node_modules", "@types"), { recursive: true });
    symlinkSync(join(ROOT, "node_modules", "@types", "node"), join(dir, "node_modules", "@types", "node"));
    const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
    const args = ["--noEmit", "--strict", "--skipLibCheck", "--lib", "es2022", "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext", "--types", "node", "example.mts"];
    ok(run(process.execPath, [tsc, ...args], dir), "tsc on the example");
  });

  it("installs the tsmoe command, which runs without tsx", () => {
    const bin = join(dir, "node_modules", ".bin", "tsmoe");
    const version = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version as string;
    expect(ok(run(bin, ["--version"], dir), "tsmoe --version")).toMatch(new RegExp(`^version: ${version.replace(/\./g, "\\.")} `));
    expect(ok(run(bin, ["--help"], dir), "tsmoe --help")).toContain("Usage: tsmoe");
    const gen = run(bin, ["-n", "4", "-t", "2", "--temp", "0", "--moe-n-expert", "4"], dir);
    expect(ok(gen, "tsmoe -n 4 -t 2").startsWith("Once upon a time")).toBe(true);
    expect(gen.stderr).toContain("mean experts per token: 4.00");
  });
});
