/**
 * The prompt tokens of a request: `prompt` of /v1/completions (a string, a one-string list, or token ids)
 * tokenized as `tsmoe run -p` does, or `messages` of /v1/chat/completions rendered with the model's chat
 * template (chatml when the model has none, as llama-server does) and tokenized as `tsmoe run -cnv` does.
 */
import { TsmoeError } from "../errors.ts";
import { applyChatTemplate, type ChatMessage } from "../tokenizer/chat.ts";
import { BUILTIN_CHAT_TEMPLATES } from "../tokenizer/chat-builtin.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { badRequest, type Body } from "./request.ts";


/** The chat template the server uses: the model's, else chatml. */
export function serverChatTemplate(tokenizer: Tokenizer): { template: string; builtin: boolean } {
  const own = tokenizer.chatTemplate;
  return own ? { template: own, builtin: false } : { template: BUILTIN_CHAT_TEMPLATES.chatml!, builtin: true };
}

/** `prompt`: text (tokenized with BOS and special-token text, as `tsmoe run -p`) or token ids. */
export function completionPrompt(body: Body, tokenizer: Tokenizer): number[] {
  let p = body.prompt;
  if (Array.isArray(p) && p.length === 1 && typeof p[0] === "string") p = p[0];
  if (typeof p === "string") return tokenizer.tokenize(p, { addSpecial: true, parseSpecial: true });
  if (Array.isArray(p) && p.length > 0 && p.every((t) => Number.isInteger(t))) {
    const bad = (p as number[]).find((t) => t < 0 || t >= tokenizer.nVocab);
    if (bad !== undefined) throw badRequest(`prompt: token id ${bad} is outside the vocabulary (0..${tokenizer.nVocab - 1})`);
    return p as number[];
  }
  if (p === undefined || p === null) throw badRequest("prompt: missing (a string or a list of token ids)");
  throw badRequest("prompt: expected a string, a list with one string, or a non-empty list of token ids");
}

/** A message's text: a string, or the text parts of a content list. */
function messageText(content: unknown, i: number): string {
  if (typeof content === "string") return content;
  if (content === null || content === undefined) return "";
  if (Array.isArray(content)) {
    return content
      .map((part) => {
        const p = part as { type?: unknown; text?: unknown };
        if (typeof p !== "object" || p === null || p.type !== "text" || typeof p.text !== "string")
          throw badRequest(`messages[${i}].content: only text parts ({"type": "text", "text": ...}) are supported`);
        return p.text;
      })
      .join("");
  }
  throw badRequest(`messages[${i}].content: expected a string or a list of text parts`);
}

/** `messages` rendered with the chat template and tokenized. */
export function chatPrompt(body: Body, tokenizer: Tokenizer, template: string): number[] {
  const raw = body.messages;
  if (!Array.isArray(raw) || raw.length === 0) throw badRequest("messages: expected a non-empty list of messages");
  const messages: ChatMessage[] = raw.map((m, i) => {
    if (typeof m !== "object" || m === null || typeof (m as { role?: unknown }).role !== "string")
      throw badRequest(`messages[${i}]: expected an object with a string "role"`);
    const msg = m as { role: string; content?: unknown };
    return { role: msg.role, content: messageText(msg.content, i) };
  });
  let text: string;
  try {
    text = applyChatTemplate(tokenizer, messages, { template, addGenerationPrompt: true });
  } catch (e) {
    if (e instanceof TsmoeError) throw badRequest(e.message);
    throw e;
  }
  return tokenizer.tokenize(text, { addSpecial: true, parseSpecial: true });
}
