import { readFileSync } from "node:fs";
import { loadGguf } from "./src/gguf/reader.ts";
import { Tokenizer } from "./src/tokenizer/tokenizer.ts";
const text = readFileSync("/work/shared/models/eval.txt", "utf8");
const tok = Tokenizer.fromMetadata((await loadGguf("/work/shared/models/tiny-moe-32x8-q8_0.gguf", { headerOnly: true })).metadata);
for (let k = 0; k < 3; k++) { const c0 = process.cpuUsage(); const ids = tok.tokenize(text); const c = process.cpuUsage(c0); console.log(ids.length, ((c.user + c.system) / 1000).toFixed(0), "ms cpu"); }
