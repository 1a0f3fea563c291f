/**
 * Chat prompts from the model's own template (`tokenizer.chat_template`, Jinja), rendered with
 * @huggingface/jinja the way llama.cpp's common chat code calls its template: variables `messages`,
 * `add_generation_prompt`, `bos_token`, `eos_token` (the texts of the BOS/EOS tokens), and a leading BOS /
 * trailing EOS text removed when tokenization adds those tokens anyway. @huggingface/jinja provides
 * `raise_exception` and `strftime_now`.
 */
import { createRequire } from "node:module";
import type { Template } from "@huggingface/jinja";
import { TsmoeError } from "../errors.ts";
import type { Tokenizer } from "./tokenizer.ts";

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatOptions {
  /** end with the assistant's turn header so the model answers (default true) */
  addGenerationPrompt?: boolean;
  /** a system message put in front of the messages */
  systemPrompt?: string;
  /** a template to use instead of the model's */
  template?: string;
  /** more template variables (e.g. enable_thinking) */
  extra?: Record<string, unknown>;
}

/** @huggingface/jinja, loaded at the first template rendered (not at every start); its CommonJS build, since rendering is synchronous */
let jinja: typeof import("@huggingface/jinja") | undefined;
const loadJinja = () => (jinja ??= createRequire(import.meta.url)("@huggingface/jinja") as typeof import("@huggingface/jinja"));

/** Renders a chat template (no BOS/EOS stripping). Template errors become TsmoeError. */
export function renderChatTemplate(
  template: string,
  messages: ChatMessage[],
  vars: { addGenerationPrompt: boolean; bosToken: string; eosToken: string; extra?: Record<string, unknown> },
): string {
  let compiled: Template;
  try {
    compiled = new (loadJinja().Template)(template);
  } catch (e) {
    throw new TsmoeError(`cannot parse the chat template: ${(e as Error).message}`);
  }
  try {
    return compiled.render({
      ...vars.extra,
      messages,
      add_generation_prompt: vars.addGenerationPrompt,
      bos_token: vars.bosToken,
      eos_token: vars.eosToken,
    });
  } catch (e) {
    throw new TsmoeError(`chat template error: ${(e as Error).message}`);
  }
}

/**
 * The prompt text for a conversation, from the model's chat template. Tokenize the result with
 * `{ addSpecial: true, parseSpecial: true }`.
 */
export function applyChatTemplate(tokenizer: Tokenizer, messages: ChatMessage[], opts: ChatOptions = {}): string {
  const template = opts.template ?? tokenizer.chatTemplate;
  if (template === undefined || template === "") {
    throw new TsmoeError("this model has no chat template (tokenizer.chat_template is missing): give the prompt as plain text, or supply a template");
  }
  const all = opts.systemPrompt !== undefined ? [{ role: "system", content: opts.systemPrompt }, ...messages] : messages;
  const tokenText = (id: number | null) => (id === null ? "" : tokenizer.tokenToPiece(id, { special: true }));
  const bosToken = tokenText(tokenizer.bos);
  const eosToken = tokenText(tokenizer.eos);
  let text = renderChatTemplate(template, all, { addGenerationPrompt: opts.addGenerationPrompt ?? true, bosToken, eosToken, extra: opts.extra });
  // tokenization adds BOS/EOS itself: do not have them twice
  if (tokenizer.addBos && bosToken !== "" && text.startsWith(bosToken)) text = text.slice(bosToken.length);
  if (tokenizer.addEos && eosToken !== "" && text.endsWith(eosToken)) text = text.slice(0, text.length - eosToken.length);
  return text;
}
