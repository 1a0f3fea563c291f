/**
 * `tsmoe tokenize -m FILE -p TEXT`: prints the tokens of a text like llama.cpp's llama-tokenize: one
 * `%6d -> 'piece'` line per token, or `--ids` for the list `[1, 2, 3]`. BOS/EOS are added when the model
 * asks for them (unless --no-bos); special-token text is recognised (unless --no-parse-special); escapes
 * (\n \t \\ \xNN ...) in the text are processed (unless --no-escape).
 */
import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { TsmoeError, UsageError } from "../errors.ts";
import { loadGguf } from "../gguf/reader.ts";
import { modelOption } from "./progress.ts";
import { Tokenizer } from "../tokenizer/tokenizer.ts";

interface TokenizeCliOptions {
  model: string;
  prompt?: string;
  file?: string;
  stdin?: boolean;
  ids?: boolean;
  bos: boolean;
  parseSpecial: boolean;
  escape: boolean;
  showCount?: boolean;
}

/** llama.cpp's string_process_escapes, on the UTF-8 bytes of the text. */
export function processEscapes(text: string): string {
  const src = Buffer.from(text, "utf8");
  const out: number[] = [];
  const simple: Record<string, number> = { n: 0x0a, r: 0x0d, t: 0x09, "'": 0x27, '"': 0x22, "\\": 0x5c };
  for (let i = 0; i < src.length; i++) {
    if (src[i] !== 0x5c || i + 1 >= src.length) {
      out.push(src[i]);
      continue;
    }
    const c = String.fromCharCode(src[++i]);
    if (c in simple) {
      out.push(simple[c]);
      continue;
    }
    if (c === "x" && i + 2 < src.length) {
      const hex = String.fromCharCode(src[i + 1], src[i + 2]);
      if (/^[0-9a-fA-F]{2}$/.test(hex)) {
        out.push(parseInt(hex, 16));
        i += 2;
        continue;
      }
    }
    out.push(0x5c, src[i]);
  }
  return Buffer.from(out).toString("utf8");
}

function readText(opts: TokenizeCliOptions): string {
  let text: string;
  if (opts.stdin) text = readFileSync(0, "utf8");
  else if (opts.file !== undefined) {
    try {
      text = readFileSync(opts.file, "utf8");
    } catch {
      throw new TsmoeError(`could not open file '${opts.file}' for reading`);
    }
  } else if (opts.prompt !== undefined) text = opts.prompt;
  else throw new UsageError("must specify one of: --stdin, --file or --prompt");
  return opts.escape ? processEscapes(text) : text;
}

export function register(program: Command): void {
  program
    .command("tokenize")
    .description("print the tokens of a text (like llama-tokenize)")
    .addOption(modelOption())
    .option("-p, --prompt <text>", "text to tokenize")
    .option("-f, --file <file>", "read the text from a file (verbatim)")
    .option("--stdin", "read the text from standard input")
    .option("--ids", "print only the token ids, as [1, 2, 3]")
    .option("--no-bos", "do not add BOS (nor EOS) even if the model asks for it")
    .option("--no-parse-special", "treat special-token text as plain text")
    .option("--no-escape", "do not process escapes (\\n, \\t, \\\\, \\xNN, ...)")
    .option("--show-count", "print the number of tokens")
    .action(async (opts: TokenizeCliOptions) => {
      const text = readText(opts);
      const file = await loadGguf(opts.model, { headerOnly: true });
      const tok = Tokenizer.fromMetadata(file.metadata);
      const ids = tok.tokenize(text, { addSpecial: opts.bos && tok.addBos, parseSpecial: opts.parseSpecial });
      const chunks: Buffer[] = [];
      if (opts.ids) chunks.push(Buffer.from(`[${ids.join(", ")}]\n`));
      else
        for (const id of ids) {
          chunks.push(Buffer.from(`${String(id).padStart(6)} -> '`), Buffer.from(tok.tokenBytes(id, { special: true })), Buffer.from("'\n"));
        }
      if (opts.showCount) chunks.push(Buffer.from(`Total number of tokens: ${ids.length}\n`));
      process.stdout.write(Buffer.concat(chunks));
    });
}
