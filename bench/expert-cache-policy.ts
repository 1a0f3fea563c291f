/**
 * Which expert should leave the expert cache (src/model/expert-cache.ts) when it is full? Hit rates of the
 * least-recently-used and least-often-used policies over cache sizes, on a model with trained routing: the
 * embedded model (6 MoE layers of 32 experts, top-8), decoding models/eval.txt one token at a time (the
 * larger-than-RAM use). Hit rates are deterministic (the same tokens route the same way), so one run is
 * the measurement. Random-weight models (bench/make-model.ts) route without the structure of a trained one
 * and are not used here.
 *
 *   npx tsx bench/expert-cache-policy.ts [-n TOKENS]
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { slotBytesFor } from "../src/model/expert-cache.ts";
import { loadModel } from "../src/model/load.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";

const ROOT = join(fileURLToPath(import.meta.url), "..", "..");
const MODEL = join(ROOT, "models", "tiny-moe-32x8-q8_0.gguf");
const nArg = process.argv.indexOf("-n");
const N = nArg > 0 ? Number(process.argv[nArg + 1]) : 400;

const probe = await loadModel(MODEL, { threads: 1 });
const tokens = Tokenizer.fromMetadata(probe.metadata).tokenize(readFileSync(join(ROOT, "models", "eval.txt"), "utf8").slice(0, 20000)).slice(0, N);
const { nExpert, nLayer } = probe.hparams;
await probe.dispose();
// the embedded model's experts: 3 Q8_0 matrices of 64 x 128 per expert
const slot = slotBytesFor([8704, 8704, 8704]);

console.log(`embedded model, ${nLayer} layers x ${nExpert} experts, top-8; ${tokens.length} tokens of models/eval.txt decoded one at a time\n`);
console.log("| cache (experts) | cache / all experts | LRU hit rate | LFU hit rate |");
console.log("|---:|---:|---:|---:|");
for (const layers of [1, 1.5, 2, 3, 4, 5]) {
  const slots = Math.round(layers * nExpert);
  const rates: string[] = [];
  for (const policy of ["lru", "lfu"] as const) {
    const model = await loadModel(MODEL, { threads: 1, moeCache: slots * slot, moeCachePolicy: policy });
    const s = model.createSession({ nCtx: tokens.length + 1 });
    for (const t of tokens) await s.eval([t]);
    const { hits, misses } = model.streaming!.stats();
    rates.push(`${((100 * hits) / (hits + misses)).toFixed(1)}%`);
    await model.dispose();
  }
  console.log(`| ${slots} | ${((100 * slots) / (nLayer * nExpert)).toFixed(0)}% | ${rates[0]} | ${rates[1]} |`);
}
