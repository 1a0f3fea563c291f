/**
 * Start-up times of the command line, as a user meets them (wall time of whole processes, so they include
 * Node's own start): `tsmoe --help`, `tsmoe --version`, and `npm start` (the embedded model) until the
 * first generated token reaches stdout (`-n 1`); and a bare `node -e` as the floor. Each is run `--runs` times (default 7), interleaved; prints
 * every run, then the median and the fastest. Also the CPU time (user + system) of all the Node processes
 * of a run (npm's included), from ./cpu-at-exit.mjs: on a busy machine wall times grow with the number of
 * runnable processes, CPU times much less (the load average is printed).
 * Run `npm run build` first (bin/tsmoe runs the sources through tsx when dist/ is missing or older).
 *
 *   npx tsx bench/startup.ts [--runs 7]
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const PROMPT = "Once upon a time";
const CPU_LOG = join(tmpdir(), `tsmoe-startup-cpu-${process.pid}.txt`);
const CHILD_ENV = { ...process.env, NODE_OPTIONS: `--import ${join(ROOT, "bench", "cpu-at-exit.mjs")}`, TSMOE_CPU_LOG: CPU_LOG };

interface Timing {
  /** ms from spawn to the awaited output */
  wall: number;
  /** CPU ms of every Node process of the run, to its exit */
  cpu: number;
}

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

/**
 * Milliseconds from spawning `cmd args` until its stdout holds more than `after` characters (the first
 * output, or the first generated text after the echoed prompt), checked for exit status 0; and CPU time.
 */
function timeToOutput(cmd: string, args: string[], after: number): Promise<Timing> {
  rmSync(CPU_LOG, { force: true });
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: CHILD_ENV });
    let out = "";
    let err = "";
    let at: number | undefined;
    child.stdout.setEncoding("utf8").on("data", (s: string) => {
      out += s;
      if (at === undefined && out.length > after) at = performance.now() - t0;
    });
    child.stderr.setEncoding("utf8").on("data", (s: string) => (err += s));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0 || at === undefined) reject(new Error(`${cmd} ${args.join(" ")}: exit ${code}, stdout ${JSON.stringify(out.slice(0, 80))}\n${err}`));
      else resolve({ wall: at, cpu: readFileSync(CPU_LOG, "utf8").trim().split("\n").map(Number).reduce((a, b) => a + b, 0) });
    });
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const runs = Number(arg("--runs", "7"));
if (!existsSync(join(ROOT, "dist", "cli", "main.js"))) process.stderr.write("warning: no dist/ (run `npm run build`): timing the tsx path\n");
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const cases: [string, () => Promise<Timing>][] = [
  // the floor: Node itself, for reading the others on a machine of unknown load
  ["node -e (baseline)", () => timeToOutput(process.execPath, ["-e", "console.log(1)"], 0)],
  ["tsmoe --help", () => timeToOutput(process.execPath, ["bin/tsmoe", "--help"], 0)],
  ["tsmoe --version", () => timeToOutput(process.execPath, ["bin/tsmoe", "--version"], 0)],
  ["npm start: first token", () => timeToOutput(npm, ["start", "--silent", "--", "-n", "1", "-p", PROMPT], PROMPT.length)],
];
console.log(`load average before: ${loadavg().map((x) => x.toFixed(2)).join(" ")}; ${runs} runs each, interleaved`);
const times = cases.map(() => [] as Timing[]);
for (let r = 0; r < runs; r++) {
  const row: string[] = [];
  for (const [i, [, run]] of cases.entries()) {
    const t = await run();
    times[i]!.push(t);
    row.push(`${t.wall.toFixed(0)} ms (CPU ${t.cpu.toFixed(0)} ms)`);
  }
  console.log(`run ${r + 1}: ${row.join(", ")}`);
}
console.log("\n| command | wall median | wall fastest | CPU median | CPU least |\n|---|---|---|---|---|");
for (const [i, [name]] of cases.entries()) {
  const wall = times[i]!.map((t) => t.wall);
  const cpu = times[i]!.map((t) => t.cpu);
  console.log(`| ${name} | ${median(wall).toFixed(0)} ms | ${Math.min(...wall).toFixed(0)} ms | ${median(cpu).toFixed(0)} ms | ${Math.min(...cpu).toFixed(0)} ms |`);
}
rmSync(CPU_LOG, { force: true });
console.log(`\nload average after: ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
