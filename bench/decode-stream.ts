/**
 * One-token products with weights streamed from memory, as a MoE decode reads its experts: --mats
 * matrices of --rows x --cols (default 2880 x 2880, gpt-oss's expert shape; 16 of them, more than the L3
 * cache), each times one token in turn, single thread, CPU time. Alternates the WASM row kernels
 * (./src/kernels/wasm/kernels.ts) and the decode kernels (decode-kernels.ts, mxfp4-kernels.ts) round by
 * round, prints GB/s of weights for each (best and median of --rounds) and checks that both give the
 * TypeScript kernel's bits.
 *   npx tsx bench/decode-stream.ts [--types MXFP4,Q4_K] [--rows 2880] [--cols 2880] [--mats 16] [--rounds 7]
 */
import { typeByName, typeName } from "../src/tensor/types.ts";
import { arg, cpuSeconds } from "./kernel-bench-args.ts";
import { randn, randomBlocks } from "../src/tensor/random.ts";
import { matmulTsRange, quantizeActivations, type Weight } from "../src/kernels/matmul.ts";
import { allocTensorBytes } from "../src/kernels/wasm/memory.ts";
import { type KernelChoice, decodeKernelName, kernelName, wasmMatmulRange } from "../src/kernels/wasm/runtime.ts";

const rows = Number(arg("rows", "2880")), cols = Number(arg("cols", "2880")), mats = Number(arg("mats", "16")), rounds = Number(arg("rounds", "7"));
for (const name of arg("types", "MXFP4").split(",")) {
  const type = typeByName(name);
  if (type === undefined) throw new Error(`unknown type ${name}`);
  const ws: Weight[] = [];
  for (let m = 0; m < mats; m++) {
    const q = randomBlocks(type, rows, cols, m + 1);
    const data = allocTensorBytes(q.length);
    data.set(q);
    ws.push({ type, ne0: cols, ne1: rows, data });
  }
  const bytes = ws.reduce((s, w) => s + w.data.length, 0);
  const act = quantizeActivations(type, randn(cols, 2), 1, cols);
  const choices: KernelChoice[] = [];
  if (kernelName(type, 1)) choices.push("rows");
  if (decodeKernelName(type, 1)) choices.push("decode");
  const outs = choices.map(() => new Float32Array(rows));
  const times = choices.map(() => [] as number[]);
  let same = true;
  for (let r = 0; r <= rounds; r++) {
    choices.forEach((choice, i) => {
      const t0 = cpuSeconds();
      for (const w of ws) if (!wasmMatmulRange(w, act, outs[i]!, rows, 0, rows, choice)) throw new Error(`${choice}: WASM path did not apply`);
      if (r > 0) times[i]!.push(cpuSeconds() - t0);
    });
  }
  const ref = new Float32Array(rows);
  matmulTsRange(ws[mats - 1]!, act, ref, rows, 0, rows);
  for (const o of outs) same &&= o.every((v, i) => Object.is(v, ref[i]));
  const gbs = (t: number) => (bytes / t / 1e9).toFixed(2);
  const cells = choices.map((ch, i) => {
    const s = [...times[i]!].sort((a, b) => a - b);
    return `${ch} best ${gbs(s[0]!)} median ${gbs(s[s.length >> 1]!)} GB/s`;
  });
  console.log(`${typeName(type)} ${mats} x ${rows} x ${cols} (${(bytes / 1e6).toFixed(0)} MB): ${cells.join("; ")}; identical to TS: ${same ? "yes" : "NO"}`);
}
