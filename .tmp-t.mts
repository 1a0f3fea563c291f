import { readFileSync } from "node:fs";
import { loadGguf } from "./src/gguf/reader.ts";
import { Tokenizer } from "./src/tokenizer/tokenizer.ts";
const text = readFileSync("/work/shared/models/eval.txt", "utf8");
const tok = Tokenizer.fromMetadata((await loadGguf("/work/shared/models/tiny-moe-32x8-q8_0.gguf", { headerOnly: true })).metadata);
for (let k = 0; k < 2; k++) { const t0 = performance.now(); const ids = tok.tokenize(text); console.log(ids.length, (performance.now() - t0).toFixed(0), "ms"); }
