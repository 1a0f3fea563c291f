/**
 * Writes a random-weight GGUF model of a real MoE architecture's shape, fast (random quantized blocks
 * streamed to disk, see src/gguf/block-model.ts):
 *   npx tsx bench/make-model.ts --arch olmoe|qwen3moe|gpt-oss|mixtral [--layers L] [--vocab V]
 *                               [--type Q8_0|Q4_K_M|MXFP4_MOE|<ggml type>] [--seed S] -o FILE
 * By default the real model's layer count, vocabulary and usual file type (gpt-oss: MXFP4_MOE, the
 * others Q4_K_M). The tokenizer is a synthetic SentencePiece vocabulary of the full size. Loads in tsmoe
 * and llama.cpp; the weights are random, so the text is nonsense: for speed and memory benchmarks only.
 */
import { statSync } from "node:fs";
import { TsmoeError } from "../src/errors.ts";
import { blockModelTensors, typeCensus, writeBlockModel, type BlockModelOptions } from "../src/gguf/block-model.ts";
import { REAL_SHAPES } from "./real-shapes.ts";

/** The generator's options for `arch` with the given overrides (undefined = the real model's). */
export function makeModelOptions(arch: string, o: { layers?: number; vocab?: number; type?: string; seed?: number }): BlockModelOptions {
  const shape = REAL_SHAPES[arch];
  if (!shape) throw new TsmoeError(`make-model: unknown --arch '${arch}' (known: ${Object.keys(REAL_SHAPES).join(", ")})`);
  const type = o.type ?? shape.defaultType;
  return {
    ...shape.opts,
    nLayer: o.layers ?? shape.opts.nLayer,
    nVocab: o.vocab ?? shape.opts.nVocab,
    seed: o.seed ?? 0,
    mix: type,
    name: `tsmoe-random-${shape.label}-${type}`,
  };
}

/** the synthetic vocabulary is built in memory: a bound well above real vocabularies (GLM-4.5: 151k, gpt-oss: 201k) */
const MAX_VOCAB = 1 << 20;

function parseArgs(argv: string[]): { arch: string; out: string; layers?: number; vocab?: number; type?: string; seed?: number } {
  const v: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    if (!["--arch", "--layers", "--vocab", "--type", "--seed", "-o", "--output"].includes(k)) throw new TsmoeError(`make-model: unknown option '${k}'`);
    if (argv[i + 1] === undefined) throw new TsmoeError(`make-model: ${k} needs a value`);
    v[k === "--output" ? "-o" : k] = argv[++i]!;
  }
  const int = (k: string): number | undefined => {
    if (v[k] === undefined) return undefined;
    const n = Number(v[k]);
    if (!Number.isInteger(n) || n < (k === "--seed" ? 0 : 1)) throw new TsmoeError(`make-model: ${k} must be a positive integer, got '${v[k]}'`);
    return n;
  };
  if (v["--vocab"] !== undefined && !(Number(v["--vocab"]) <= MAX_VOCAB)) throw new TsmoeError(`make-model: --vocab must be at most ${MAX_VOCAB}, got '${v["--vocab"]}'`);
  if (!v["--arch"] || !v["-o"]) throw new TsmoeError("make-model: usage: --arch A [--layers L] [--vocab V] [--type T] [--seed S] -o FILE");
  return { arch: v["--arch"], out: v["-o"], layers: int("--layers"), vocab: int("--vocab"), type: v["--type"], seed: int("--seed") };
}

function main(): void {
  const a = parseArgs(process.argv.slice(2));
  const opts = makeModelOptions(a.arch, a);
  const { s, tensors } = blockModelTensors(opts);
  console.error(`make-model: ${opts.name}, ${s.nLayer} layers, vocab ${s.nVocab}: ${typeCensus(tensors)}`);
  const t0 = performance.now();
  writeBlockModel(a.out, opts);
  const sec = (performance.now() - t0) / 1000;
  const bytes = statSync(a.out).size;
  console.error(`make-model: wrote ${a.out}: ${(bytes / 1e9).toFixed(2)} GB in ${sec.toFixed(1)} s (${(bytes / 1e6 / sec).toFixed(0)} MB/s)`);
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/^.*\//, "/"))) {
  try {
    main();
  } catch (e) {
    // RangeError: a vocabulary too small for the synthetic tokenizer
    if (!(e instanceof TsmoeError) && !(e instanceof RangeError)) throw e;
    console.error(`error: ${e.message}`);
    process.exit(1);
  }
}
