/**
 * Larger than RAM: decode speed of a model file in a memory cgroup capped below its size, tsmoe (routed
 * experts streamed through its expert cache, chosen by default from the cap) against llama.cpp through
 * node-llama-cpp (the file mapped, the kernel paging), same cap, same file, same threads, page cache
 * dropped before each run. Decode tg N greedy after a short prompt, at N = k, k/2, k/4 experts (llama.cpp:
 * soft mask via the expert_used_count metadata override; tsmoe: --moe-n-expert N, soft). Bytes read per
 * token from /proc/diskstats over the decode (bytes read from the disks, page faults included; the
 * machine's count, since this VM's blkio cgroup counters stay at 0).
 *
 *   npx tsx bench/larger-than-ram.ts FILE [--cap 4G] [-n 32] [-t 1] [--engines tsmoe,llama] [--experts 8,4,2] [--moe-prefetch on|off]
 *
 * --moe-prefetch: tsmoe's read-ahead of the next layer's likely experts (LoadOptions.moePrefetch, default on).
 *
 * Needs root (cgroup v1 memory controller at /sys/fs/cgroup/memory, /proc/sys/vm/drop_caches). Each run
 * is a child process moved into a fresh cgroup before it loads anything; the cgroup is removed after.
 * Prints a markdown table for bench/RESULTS.md.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const CGROUP_ROOT = "/sys/fs/cgroup/memory";
const PROMPT = [1, 450, 2000, 300, 12, 77, 1024, 5];

interface RunResult {
  engine: string;
  nExpert: number;
  tgTps: number;
  readPerToken: number;
  loadS: number;
  note: string;
}

/**
 * Bytes read from the disks so far, from /proc/diskstats (sectors read x 512, whole disks only). This VM's
 * blkio cgroup counters stay at 0, so the figure is the machine's, not the cgroup's: run it on an
 * otherwise quiet machine.
 */
function readBytes(): number {
  let n = 0;
  for (const line of readFileSync("/proc/diskstats", "utf8").split("\n")) {
    const f = line.trim().split(/\s+/);
    // whole disks (vda, sda, nvme0n1), not partitions or loop/zram devices
    if (f.length > 6 && /^(vd[a-z]|sd[a-z]|nvme\d+n\d+|xvd[a-z])$/.test(f[2]!)) n += Number(f[5]) * 512;
  }
  return n;
}

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

/** Child: one engine, one expert count; prints one JSON line. */
async function child(file: string, engine: string, nExpert: number, n: number, threads: number, prefetch: boolean): Promise<void> {
  const t0 = performance.now();
  if (engine === "tsmoe") {
    const { loadModel } = await import("../src/model/load.ts");
    // N = k is the model as it is (the soft mask at k routes exactly as without the override)
    const model = await loadModel(file, { threads, nCtx: 128, moePrefetch: prefetch });
    const loadS = (performance.now() - t0) / 1000;
    const s = model.createSession({ nCtx: 128, moe: { nExpert, mask: "soft" } });
    let tok = argmax(await s.eval(PROMPT));
    model.streaming?.resetStats();
    const r0 = readBytes();
    const t1 = performance.now();
    for (let i = 0; i < n; i++) tok = argmax(await s.eval([tok]));
    const dt = (performance.now() - t1) / 1000;
    const st = model.streaming?.stats();
    const ahead = st && prefetch ? `, read ahead ${st.readAhead} (${((100 * st.readAheadUsed) / Math.max(1, st.readAhead)).toFixed(1)}% used, ${st.readAheadSkipped} guesses not read)` : ", no read-ahead";
    const note = st ? `cache ${model.streaming!.describe()}, hit rate ${((100 * st.hits) / Math.max(1, st.hits + st.misses)).toFixed(1)}%${ahead}` : "resident";
    console.log(JSON.stringify({ engine, nExpert, tgTps: n / dt, readPerToken: (readBytes() - r0) / n, loadS, note } satisfies RunResult));
    await model.dispose();
    return;
  }
  const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
  const arch = await readArch(file);
  const lm = await llama.loadModel({ modelPath: file, useMmap: true, metadataOverrides: { [arch]: { expert_used_count: nExpert } } as never });
  const ctx = await lm.createContext({ contextSize: 128, threads, sequences: 1 });
  const loadS = (performance.now() - t0) / 1000;
  const seq = ctx.getSequence();
  const first = (await seq.controlledEvaluate([...PROMPT.slice(0, -1), [PROMPT.at(-1)!, { generateNext: { token: true, options: { temperature: 0 } } }]] as never)).at(-1)!.next.token!;
  const r0 = readBytes();
  const t1 = performance.now();
  let count = 0;
  for await (const _ of seq.evaluate([first] as never, { temperature: 0 })) if (++count >= n) break;
  const dt = (performance.now() - t1) / 1000;
  console.log(JSON.stringify({ engine, nExpert, tgTps: n / dt, readPerToken: (readBytes() - r0) / n, loadS, note: "mmap" } satisfies RunResult));
  await ctx.dispose();
  await lm.dispose();
}

async function readArch(file: string): Promise<string> {
  const { readGgufHeader } = await import("../src/gguf/header.ts");
  return String(readGgufHeader(file).metadata.get("general.architecture")!.value);
}

function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMG]?)$/i.exec(s);
  if (!m) throw new Error(`bad size ${s}`);
  return Math.floor(Number(m[1]) * { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30 }[m[2]!.toUpperCase() as "" | "K" | "M" | "G"]);
}

function main(): void {
  const args = process.argv.slice(2);
  const opt = (name: string, def: string): string => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1]! : def;
  };
  const file = args.find((a, i) => !a.startsWith("-") && (i === 0 || !args[i - 1]!.startsWith("-")));
  if (!file) throw new Error("usage: larger-than-ram.ts FILE [--cap 4G] [-n 32] [-t 1] [--engines tsmoe,llama] [--experts 8,4,2]");
  const cap = parseSize(opt("--cap", "4G"));
  const n = Number(opt("-n", "32"));
  const threads = Number(opt("-t", "1"));
  const engines = opt("--engines", "tsmoe,llama").split(",");
  const experts = opt("--experts", "8,4,2").split(",").map(Number);
  const prefetch = opt("--moe-prefetch", "on");
  if (prefetch !== "on" && prefetch !== "off") throw new Error(`--moe-prefetch: expected on or off, got ${prefetch}`);
  const self = fileURLToPath(import.meta.url);
  const results: RunResult[] = [];
  for (const nExpert of experts)
    for (const engine of engines) {
      const cg = `${CGROUP_ROOT}/tsmoe-ltr-${process.pid}`;
      mkdirSync(cg);
      try {
        writeFileSync(`${cg}/memory.limit_in_bytes`, String(cap));
        spawnSync("sync");
        writeFileSync("/proc/sys/vm/drop_caches", "3");
        // the shell joins the cgroup, then becomes the child: everything it loads counts against the cap
        const r = spawnSync("sh", ["-c", `echo $$ > ${cg}/tasks && exec npx tsx "$0" --child "$@"`, self, file, engine, String(nExpert), String(n), String(threads), prefetch], {
          encoding: "utf8",
          maxBuffer: 1 << 26,
        });
        const line = r.stdout.split("\n").find((l) => l.startsWith("{"));
        const oom = readFileSync(`${cg}/memory.failcnt`, "utf8").trim();
        if (!line) {
          process.stderr.write(`${engine} N=${nExpert}: no result (exit ${r.status}, signal ${r.signal}, cgroup failcnt ${oom}): ${r.stderr.trim().split("\n").slice(-3).join(" | ")}\n`);
          results.push({ engine, nExpert, tgTps: 0, readPerToken: 0, loadS: 0, note: `failed (exit ${r.status ?? r.signal})` });
        } else {
          const res = JSON.parse(line) as RunResult;
          results.push(res);
          process.stderr.write(`${engine} N=${nExpert}: ${res.tgTps.toFixed(2)} t/s, ${(res.readPerToken / 2 ** 20).toFixed(1)} MiB read/token (${res.note})\n`);
        }
      } finally {
        rmdirSync(cg);
      }
    }
  const size = statSync(file).size;
  console.log(`\nfile ${file} (${(size / 2 ** 30).toFixed(2)} GiB), memory cap ${(cap / 2 ** 30).toFixed(2)} GiB, ${threads} thread(s), tg${n}, page cache dropped before each run\n`);
  console.log("| N | tsmoe t/s | llama.cpp t/s | tsmoe / llama.cpp | tsmoe MiB read/token | llama.cpp MiB read/token | tsmoe |");
  console.log("|---|---|---|---|---|---|---|");
  for (const nExpert of experts) {
    const t = results.find((r) => r.engine === "tsmoe" && r.nExpert === nExpert);
    const l = results.find((r) => r.engine === "llama" && r.nExpert === nExpert);
    const f = (x?: number) => (x === undefined ? "-" : x.toFixed(2));
    const mib = (x?: number) => (x === undefined ? "-" : (x / 2 ** 20).toFixed(1));
    const ratio = t && l && l.tgTps > 0 ? (t.tgTps / l.tgTps).toFixed(2) : "-";
    console.log(`| ${nExpert} | ${f(t?.tgTps)} | ${f(l?.tgTps)} | ${ratio} | ${mib(t?.readPerToken)} | ${mib(l?.readPerToken)} | ${t?.note ?? "-"} |`);
  }
}

if (process.argv[2] === "--child") {
  const [file, engine, nExpert, n, threads, prefetch] = process.argv.slice(3);
  await child(file!, engine!, Number(nExpert), Number(n), Number(threads), prefetch !== "off");
} else main();
