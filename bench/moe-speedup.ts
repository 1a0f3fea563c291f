/**
 * Decode speed against the routed-expert count: `npx tsx bench/moe-speedup.ts [--tokens 16] [--rounds 3] [--threads 1] [--type Q8_0]`.
 *
 * Generates (once, cached in the OS temp dir) an OLMoE-shaped and a Qwen3-MoE-shaped random model with
 * the real models' width ratios scaled down to n_embd 512 and 4 layers (OLMoE: 64 experts top-8,
 * n_ff_exp = n_embd/2, full multi-head attention; Qwen3-30B-A3B: 128 experts top-8,
 * n_ff_exp = 0.375 n_embd, 2x wider queries, 4x narrower K/V), then measures decode tokens/s (one token
 * per eval after an 8-token prompt) at N = k, k/2, k/4, k/8 with the soft and the hard mask, and prints
 * the speed-up at k/2 (target >= 1.6x), in wall-clock tokens/s and in process CPU time per token (the
 * latter is what to read when other processes share the cores), next to the work ratio (multiply-adds per
 * token at k over at N: the speed-up a perfect engine would get). Not a test: numbers depend on the machine.
 */
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeRandomModel, type RandomModelOptions } from "../src/gguf/random-model.ts";
import { loadModel } from "../src/model/load.ts";
import type { MoeOptions, Session } from "../src/model/api.ts";
import { GGMLType } from "../src/tensor/types.ts";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const DECODE_TOKENS = Number(arg("--tokens", "16"));
const ROUNDS = Number(arg("--rounds", "3"));
/** one thread by default: the measurement is then stable on a busy machine (pass --threads N to compare) */
const THREADS = Number(arg("--threads", "1"));
const TYPE_NAME = arg("--type", "Q8_0");
const WEIGHT_TYPE = (GGMLType as unknown as Record<string, GGMLType>)[TYPE_NAME];
if (WEIGHT_TYPE === undefined) throw new Error(`unknown weight type ${TYPE_NAME}`);

const SHAPES: { label: string; opts: RandomModelOptions }[] = [
  {
    label: "OLMoE-shaped (64 experts, top-8)",
    opts: { arch: "olmoe", nLayer: 4, nEmbd: 512, nHead: 8, nHeadKv: 8, headDim: 64, nExpert: 64, nExpertUsed: 8, nFfExp: 256, nVocab: 512, nCtx: 256 },
  },
  {
    label: "Qwen3-MoE-shaped (128 experts, top-8)",
    opts: { arch: "qwen3moe", nLayer: 4, nEmbd: 512, nHead: 16, nHeadKv: 2, headDim: 64, nExpert: 128, nExpertUsed: 8, nFfExp: 192, nFf: 512, nVocab: 512, nCtx: 256 },
  },
];

async function modelFile(opts: RandomModelOptions): Promise<string> {
  const path = join(tmpdir(), `tsmoe-bench-${opts.arch}-${opts.nExpert}x${opts.nFfExp}-${opts.nEmbd}-${opts.nLayer}-${TYPE_NAME}.gguf`);
  if (!existsSync(path)) await writeRandomModel(path, { ...opts, seed: 7, weightType: WEIGHT_TYPE });
  return path;
}

interface Speed {
  /** decode tokens per second of wall time */
  tps: number;
  /** process CPU milliseconds per decoded token (all threads; robust when other work shares the cores) */
  cpuMs: number;
  meanExperts: number;
}

/** Decode speed with the given routing options (one run, from an empty cache). */
async function decodeSpeed(s: Session, moe: MoeOptions | undefined): Promise<Speed> {
  s.setMoe(moe);
  s.truncate(0);
  await s.eval([1, 17, 33, 49, 65, 81, 97, 113]);
  s.resetStats();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < DECODE_TOKENS; i++) await s.eval([3 + ((i * 37) % 500)]);
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  const st = s.moeStats();
  const meanExperts = st.reduce((a, l) => a + l.meanExperts, 0) / Math.max(1, st.length);
  return { tps: DECODE_TOKENS / (wall / 1000), cpuMs: (cpu.user + cpu.system) / 1000 / DECODE_TOKENS, meanExperts };
}

/**
 * Best of ROUNDS runs per configuration, the configurations interleaved so that load changes hit all alike
 * (the model loads once; one session switches between the settings).
 */
async function measureAll(path: string, configs: (MoeOptions | undefined)[]): Promise<Speed[]> {
  const best: Speed[] = configs.map(() => ({ tps: 0, cpuMs: Infinity, meanExperts: 0 }));
  const model = await loadModel(path, { threads: THREADS });
  try {
    const session = model.createSession({ nCtx: 8 + DECODE_TOKENS + 8 });
    for (let round = 0; round < ROUNDS; round++) {
      for (let i = 0; i < configs.length; i++) {
        const r = await decodeSpeed(session, configs[i]);
        best[i] = { tps: Math.max(best[i]!.tps, r.tps), cpuMs: Math.min(best[i]!.cpuMs, r.cpuMs), meanExperts: r.meanExperts };
      }
    }
  } finally {
    await model.dispose();
  }
  return best;
}

/** Multiply-adds per decoded token with n routed experts (weights only: projections, router, experts, output). */
function macsPerToken(o: RandomModelOptions, n: number): number {
  const d = o.nEmbd!;
  const q = o.nHead! * o.headDim!;
  const kv = o.nHeadKv! * o.headDim!;
  const layer = d * q + 2 * d * kv + q * d + d * o.nExpert! + n * 3 * d * o.nFfExp!;
  return o.nLayer! * layer + d * o.nVocab!;
}

async function main(): Promise<void> {
  console.log(`moe-speedup: decode speed, ${DECODE_TOKENS} tokens after an 8-token prompt, ${TYPE_NAME} weights, ${THREADS} thread(s), best of ${ROUNDS} interleaved runs`);
  const summary: string[] = [];
  for (const { label, opts } of SHAPES) {
    const path = await modelFile(opts);
    const k = opts.nExpertUsed!;
    const configs: { mask: string; n: number; moe: MoeOptions | undefined }[] = [{ mask: "model", n: k, moe: undefined }];
    for (const mask of ["soft", "hard"] as const) for (const n of [k, k / 2, k / 4, k / 8]) configs.push({ mask, n, moe: { mask, nExpert: n } });
    console.log(`\n${label}: ${path}`);
    const speeds = await measureAll(path, configs.map((c) => c.moe));
    // the unmodified model, soft N = k and hard N = k do the same work: the best of the three is the baseline
    const atK = speeds.filter((_, i) => configs[i]!.n === k);
    const base = { tps: Math.max(...atK.map((r) => r.tps)), cpuMs: Math.min(...atK.map((r) => r.cpuMs)) };
    console.log(`baseline N = k: ${base.tps.toFixed(1)} tokens/s, ${base.cpuMs.toFixed(1)} CPU ms/token (best of the three N = k rows)`);
    console.log("mask   N  experts/token  tokens/s  speed-up  CPU ms/token  speed-up (CPU)  work ratio");
    configs.forEach((c, i) => {
      const r = speeds[i]!;
      const up = r.tps / base.tps;
      const upCpu = base.cpuMs / r.cpuMs;
      const ideal = macsPerToken(opts, k) / macsPerToken(opts, c.n);
      console.log(
        `${c.mask.padEnd(5)} ${String(c.n).padStart(2)}  ${r.meanExperts.toFixed(2).padStart(13)}  ${r.tps.toFixed(1).padStart(8)}  ${up.toFixed(2).padStart(7)}x  ${r.cpuMs.toFixed(1).padStart(12)}  ${upCpu.toFixed(2).padStart(13)}x  ${ideal.toFixed(2).padStart(9)}x`,
      );
      if (c.n === k / 2) summary.push(`${label}, ${c.mask} mask: ${up.toFixed(2)}x tokens/s, ${upCpu.toFixed(2)}x CPU time per token (work ratio ${ideal.toFixed(2)}x)`);
    });
  }
  console.log("\nspeed-up at N = k/2 over N = k (target >= 1.6x; 'work ratio' = multiply-adds per token at k over at N, the ideal):");
  for (const line of summary) console.log(`  ${line}`);
}

await main();
