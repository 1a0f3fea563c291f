/**
 * Load on `tsmoe serve`: `npx tsx bench/server-load.ts [--requests 200] [--clients 8] [--parallel 2]
 * [--max-tokens 16] [--threads 1] [-m FILE]`.
 *
 * Starts `bin/tsmoe serve` on a free loopback port (embedded model by default), then N clients send
 * completion requests back to back until all requests are sent (each request picks moe_n_expert k, k/2 or
 * k/4 in turn, a fixed seed, and a fixed token budget with ignore_eos, so every request does the same work).
 * Checks that every request is answered 200 with the asked number of tokens, and reads the server's RSS
 * (/proc/PID/status) after the warm-up (the first quarter of the requests) and at the end: it must stay
 * flat (within 10% + 16 MiB). Prints requests/s and p50/p95 latency as a markdown row for
 * bench/RESULTS.md. Not a test: the numbers depend on the machine and on what else runs on it.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const REQUESTS = Number(arg("--requests", "200"));
const CLIENTS = Number(arg("--clients", "8"));
const PARALLEL = Number(arg("--parallel", "2"));
const MAX_TOKENS = Number(arg("--max-tokens", "16"));
const THREADS = arg("--threads", "1");
const MODEL = arg("-m", "");

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

async function main(): Promise<void> {
  const args = ["serve", "--port", "0", "-t", THREADS, "--parallel", String(PARALLEL), "--no-log-requests", ...(MODEL ? ["-m", MODEL] : [])];
  const child = spawn(process.execPath, [join(ROOT, "bin", "tsmoe"), ...args], { stdio: ["ignore", "inherit", "pipe"] });
  let stderr = "";
  const base = await new Promise<string>((resolvePort, reject) => {
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(stderr);
      if (m) resolvePort(m[1]);
    });
    child.on("exit", (code) => reject(new Error(`the server exited (${code}): ${stderr}`)));
  });
  try {
    const models = (await (await fetch(`${base}/v1/models`)).json()) as { data: { id: string; meta: { n_expert_used: number } }[] };
    const k = models.data[0].meta.n_expert_used;
    const settings = [k, Math.max(1, k >> 1), Math.max(1, k >> 2)];
    const latencies: number[] = [];
    const failures: string[] = [];
    let next = 0;
    let rssWarm = NaN;
    const warmup = Math.floor(REQUESTS / 4);
    const t0 = performance.now();
    const client = async () => {
      for (let i = next++; i < REQUESTS; i = next++) {
        const body = { prompt: "Once upon a time", max_tokens: MAX_TOKENS, ignore_eos: true, seed: i, moe_n_expert: settings[i % settings.length] };
        const start = performance.now();
        try {
          const r = await fetch(`${base}/v1/completions`, { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
          const json = (await r.json()) as { usage?: { completion_tokens: number } };
          if (r.status !== 200 || json.usage?.completion_tokens !== MAX_TOKENS) failures.push(`#${i}: ${r.status} ${JSON.stringify(json).slice(0, 200)}`);
        } catch (e) {
          failures.push(`#${i}: ${(e as Error).message}`);
        }
        latencies.push(performance.now() - start);
        if (latencies.length === warmup) rssWarm = rssMiB(child.pid!);
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, client));
    const seconds = (performance.now() - t0) / 1000;
    const rssEnd = rssMiB(child.pid!);
    latencies.sort((a, b) => a - b);
    const flat = rssEnd <= rssWarm * 1.1 + 16;
    console.log(`${REQUESTS} requests, ${CLIENTS} clients, --parallel ${PARALLEL}, ${MAX_TOKENS} tokens each, -t ${THREADS}, moe_n_expert ${settings.join("/")} in turn`);
    console.log(`answered: ${REQUESTS - failures.length}/${REQUESTS}, errors: ${failures.length}${failures.length ? "\n  " + failures.slice(0, 5).join("\n  ") : ""}`);
    console.log(`server RSS: ${rssWarm.toFixed(1)} MiB after ${warmup} requests, ${rssEnd.toFixed(1)} MiB at the end (${flat ? "flat" : "GROWING"})`);
    console.log("");
    console.log("| requests | clients | parallel | tokens/request | requests/s | p50 latency | p95 latency | RSS after warm-up → end |");
    console.log("|---:|---:|---:|---:|---:|---:|---:|---|");
    console.log(
      `| ${REQUESTS} | ${CLIENTS} | ${PARALLEL} | ${MAX_TOKENS} | ${(REQUESTS / seconds).toFixed(2)} | ${percentile(latencies, 50).toFixed(0)} ms | ${percentile(latencies, 95).toFixed(0)} ms | ${rssWarm.toFixed(0)} → ${rssEnd.toFixed(0)} MiB |`,
    );
    if (failures.length || !flat) process.exitCode = 1;
  } finally {
    child.kill("SIGTERM");
  }
}

await main();
