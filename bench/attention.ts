/**
 * The attention kernels (src/kernels/attention.ts) on a prompt's batch: nTokens queries at once over a
 * float32 cache in the WASM memory, one query per kernel call (--queries 1) against several, alternating,
 * single thread, CPU time; median of --rounds rounds. Shapes: Qwen3-30B-A3B (32 query heads on 4 KV heads
 * of 128) and OLMoE (16 heads of 128, no grouping).
 *   npx tsx bench/attention.ts [--tokens 512] [--pos0 0] [--rounds 5] [--queries 4]
 */
import { attendHeads, type AttentionTask } from "../src/kernels/attention.ts";
import { FLASH_NONE } from "../src/kernels/attention-task.ts";
import { allocTensorBytes } from "../src/kernels/wasm/memory.ts";
import { randn } from "../src/tensor/random.ts";
import { softmaxInPlace } from "../src/kernels/softmax.ts";
import { attentionKernels, attentionScratch } from "../src/kernels/wasm/attention-kernels.ts";
import { arg, cpuSeconds } from "./kernel-bench-args.ts";

const nTokens = Number(arg("tokens", "512"));
const pos0 = Number(arg("pos0", "0"));
const rounds = Number(arg("rounds", "5"));
const queries = Number(arg("queries", "4"));

function f32(n: number): Float32Array {
  const b = allocTensorBytes(4 * n);
  const a = new Float32Array(b.buffer, b.byteOffset, n);
  a.set(randn(n, n % 97));
  return a;
}

function task(nHead: number, nHeadKv: number, d: number): AttentionTask {
  const nKeys = pos0 + nTokens;
  return {
    q: f32(nTokens * nHead * d), qRow: nHead * d, k: f32(nKeys * nHeadKv * d), v: f32(nKeys * nHeadKv * d), kRow: nHeadKv * d, vRow: nHeadKv * d,
    out: new Float32Array(nTokens * nHead * d), oRow: nHead * d, nTokens, pos0, nHead, nHeadKv, dk: d, dv: d, scale: 1 / Math.sqrt(d), window: 0, sinks: new Float32Array(0), roundF16: 0, flash: FLASH_NONE,
  };
}

const median = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1]!;
console.log(`attention, ${nTokens} tokens after ${pos0}, single thread, ms of CPU per call (median of ${rounds})`);
for (const [label, t] of [["Qwen3-30B-A3B 32/4 x 128", task(32, 4, 128)], ["OLMoE 16/16 x 128", task(16, 16, 128)]] as const) {
  const times: Record<number, number[]> = { 1: [], [queries]: [] };
  const outs: Record<number, Float32Array> = {};
  for (let r = 0; r <= rounds; r++)
    for (const m of [1, queries]) {
      const o = { ...t, out: new Float32Array(t.out.length) };
      const c0 = cpuSeconds();
      attendHeads(o, 0, t.nHead, m);
      if (r > 0) times[m]!.push((cpuSeconds() - c0) * 1000);
      outs[m] = o.out;
    }
  const same = outs[1]!.every((v, i) => Object.is(v, outs[queries]![i]));
  console.log(`${label}: 1 query ${median(times[1]!).toFixed(1)} ms, ${queries} queries ${median(times[queries]!).toFixed(1)} ms: ${(median(times[1]!) / median(times[queries]!)).toFixed(2)}x, identical ${same}`);
}

// the softmax alone: the TypeScript loop (Math.exp) against the WASM kernel, on causal rows of 1..nTokens scores
{
  const wasm = attentionKernels()!;
  const base = attentionScratch(4 * nTokens)!;
  const row = new Float32Array(wasm.memory.buffer, base, nTokens);
  const scores = randn(nTokens, 5, 3);
  const times: Record<string, number[]> = { ts: [], wasm: [] };
  for (let r = 0; r <= rounds; r++)
    for (const kind of ["ts", "wasm"]) {
      const c0 = cpuSeconds();
      for (let rep = 0; rep < 16; rep++)
        for (let n = 1; n <= nTokens; n++) {
          row.set(scores.subarray(0, n));
          if (kind === "ts") softmaxInPlace(row, n);
          else wasm.softmax(base, n, 0, 0);
        }
      if (r > 0) times[kind]!.push((cpuSeconds() - c0) * 1000);
    }
  console.log(`softmax of 16 x ${nTokens} causal rows: TypeScript ${median(times.ts!).toFixed(1)} ms, WASM ${median(times.wasm!).toFixed(1)} ms: ${(median(times.ts!) / median(times.wasm!)).toFixed(2)}x`);
}
