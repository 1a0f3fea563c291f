/** Chat templates: rendering tokenizer.chat_template with messages, generation prompt, system prompt and BOS/EOS. */
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { TsmoeError } from "../src/errors.ts";
import { SIMPLE_CHAT_TEMPLATE, vocabMetadata } from "../src/gguf/synthetic-vocab.ts";
import { GgufValueType, type MetaEntry } from "../src/gguf/types.ts";
import { applyChatTemplate } from "../src/tokenizer/chat.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { FIXTURES, HAVE_SHARED, SHARED_SKIP_MESSAGE } from "./helpers.ts";
import { loadTokenizer } from "./tokenizer-helpers.ts";

function tokenizer(template?: string, extra: MetaEntry[] = []): Tokenizer {
  const m = new Map(vocabMetadata(700, template).map((e) => [e.key, e]));
  for (const e of extra) m.set(e.key, e);
  return Tokenizer.fromMetadata(m);
}

describe("chat templates", () => {
  const hi = [{ role: "user", content: "hi" }];

  it("renders messages and the generation prompt", () => {
    const tok = tokenizer(SIMPLE_CHAT_TEMPLATE);
    expect(applyChatTemplate(tok, hi)).toBe("<|user|>\nhi</s>\n<|assistant|>\n");
    expect(applyChatTemplate(tok, hi, { addGenerationPrompt: false })).toBe("<|user|>\nhi</s>\n");
    expect(applyChatTemplate(tok, hi, { systemPrompt: "be brief" })).toBe("<|system|>\nbe brief</s>\n<|user|>\nhi</s>\n<|assistant|>\n");
  });

  it("passes bos_token/eos_token and drops a leading BOS text when tokenization adds BOS", () => {
    const t = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}";
    expect(applyChatTemplate(tokenizer(t), hi)).toBe("hi</s>");
    const noBos = tokenizer(t, [{ key: "tokenizer.ggml.add_bos_token", type: GgufValueType.BOOL, value: false }]);
    expect(applyChatTemplate(noBos, hi)).toBe("<s>hi</s>");
    // the rendered prompt tokenizes with the special tokens recognised
    const ids = noBos.tokenize(applyChatTemplate(noBos, hi), { parseSpecial: true });
    expect([ids[0], ids.at(-1)]).toEqual([1, 2]);
  });

  it("explains a missing or broken template", () => {
    expect(() => applyChatTemplate(tokenizer(), hi)).toThrow(/no chat template/);
    expect(() => applyChatTemplate(tokenizer("{% for %}"), hi)).toThrow(TsmoeError);
    expect(() => applyChatTemplate(tokenizer("{{ raise_exception('only user turns') }}"), hi)).toThrow(/only user turns/);
    expect(applyChatTemplate(tokenizer(), hi, { template: "{{ messages[0].content }}!" })).toBe("hi!");
  });
});

if (!HAVE_SHARED) console.warn(SHARED_SKIP_MESSAGE);

describe.skipIf(!HAVE_SHARED)("chat template of a real vocabulary (phi-3)", () => {
  it("renders the phi-3 template", async () => {
    const tok = await loadTokenizer(join(FIXTURES, "vocab", "ggml-vocab-phi-3.gguf"));
    const text = applyChatTemplate(tok, [
      { role: "user", content: "Hello" },
      { role: "assistant", content: "Hi!" },
      { role: "user", content: "Bye" },
    ]);
    expect(text).toBe("<|user|>\nHello<|end|>\n<|assistant|>\nHi!<|end|>\n<|user|>\nBye<|end|>\n<|assistant|>\n");
    const ids = tok.tokenize(text, { parseSpecial: true });
    expect(ids.filter((i) => tok.tokenText(i) === "<|end|>")).toHaveLength(3);
    expect(tok.isEog(tok.vocab.tokenToId.get("<|end|>") as number)).toBe(true);
  });
});
