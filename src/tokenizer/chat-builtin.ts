/**
 * Chat templates by name, for `--chat-template NAME` and for models without a template of their own
 * (chatml, as llama.cpp falls back to). The names are llama.cpp's; each template is written here in Jinja
 * and produces the prompt text llama.cpp's built-in formatter of that name produces (messages in order,
 * `add_generation_prompt` ending with the assistant's turn header; no BOS, which tokenization adds).
 */
import { readFileSync } from "node:fs";
import { UsageError } from "../errors.ts";

/** Each message in turn: `{% for m in messages %}...{% endfor %}`, then the generation prompt. */
const each = (body: string, generation: string, before = "") =>
  `${before}{% for m in messages %}${body}{% endfor %}{% if add_generation_prompt %}${generation}{% endif %}`;

export const BUILTIN_CHAT_TEMPLATES: Record<string, string> = {
  chatml: each("{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}", "{{ '<|im_start|>assistant\\n' }}"),
  // [INST] opens the conversation and every user turn after an answer; a system message has no markers
  llama2: each(
    "{% if m.role == 'system' %}{{ m.content + '\\n' }}{% elif m.role == 'user' %}{% if ns.open %}{{ '[INST] ' }}{% endif %}{{ m.content + ' [/INST]' }}{% set ns.open = false %}{% else %}{{ m.content + '</s>' }}{% set ns.open = true %}{% endif %}",
    "",
    "{{ '[INST] ' }}{% set ns = namespace(open=false) %}",
  ),
  llama3: each(
    "{{ '<|start_header_id|>' + m.role + '<|end_header_id|>\\n\\n' + (m.content | trim) + '<|eot_id|>' }}",
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}",
  ),
  phi3: each("{{ '<|' + m.role + '|>\\n' + m.content + '<|end|>\\n' }}", "{{ '<|assistant|>\\n' }}"),
  zephyr: each("{{ '<|' + m.role + '|>\\n' + m.content + '<|endoftext|>\\n' }}", "{{ '<|assistant|>\\n' }}"),
  // gemma has no system turn: the system text goes in front of the next user turn
  gemma: each(
    "{% if m.role == 'system' %}{% set ns.system = ns.system + (m.content | trim) %}{% else %}{% set role = 'model' if m.role == 'assistant' else m.role %}{{ '<start_of_turn>' + role + '\\n' }}{% if ns.system and role != 'model' %}{{ ns.system + '\\n\\n' }}{% set ns.system = '' %}{% endif %}{{ (m.content | trim) + '<end_of_turn>\\n' }}{% endif %}",
    "{{ '<start_of_turn>model\\n' }}",
    "{% set ns = namespace(system='') %}",
  ),
  "mistral-v7": each(
    "{% if m.role == 'system' %}{{ '[SYSTEM_PROMPT] ' + m.content + '[/SYSTEM_PROMPT]' }}{% elif m.role == 'user' %}{{ '[INST] ' + m.content + '[/INST]' }}{% else %}{{ ' ' + m.content + '</s>' }}{% endif %}",
    "",
  ),
  deepseek3: each(
    "{% if m.role == 'system' %}{{ m.content + '\\n\\n' }}{% elif m.role == 'user' %}{{ '<｜User｜>' + m.content }}{% else %}{{ '<｜Assistant｜>' + m.content + '<｜end▁of▁sentence｜>' }}{% endif %}",
    "{{ '<｜Assistant｜>' }}",
  ),
  vicuna: each(
    "{% if m.role == 'system' %}{{ m.content + '\\n\\n' }}{% elif m.role == 'user' %}{{ 'USER: ' + m.content + '\\n' }}{% else %}{{ 'ASSISTANT: ' + m.content + '</s>\\n' }}{% endif %}",
    "{{ 'ASSISTANT:' }}",
  ),
  granite: each("{{ '<|start_of_role|>' + m.role + '<|end_of_role|>' + m.content + '<|end_of_text|>\\n' }}", "{{ '<|start_of_role|>assistant<|end_of_role|>\\n' }}"),
};

/**
 * The template the options ask for: `--chat-template-file FILE` (a Jinja template), `--chat-template` a
 * built-in name or a Jinja template itself; undefined when neither is given.
 */
export function chatTemplateFromOptions(o: { chatTemplate?: string; chatTemplateFile?: string }): string | undefined {
  if (o.chatTemplate !== undefined && o.chatTemplateFile !== undefined)
    throw new UsageError("give --chat-template or --chat-template-file, not both");
  if (o.chatTemplateFile !== undefined) {
    try {
      return readFileSync(o.chatTemplateFile, "utf8");
    } catch {
      throw new UsageError(`--chat-template-file: cannot read '${o.chatTemplateFile}'`);
    }
  }
  const t = o.chatTemplate;
  if (t === undefined) return undefined;
  if (Object.hasOwn(BUILTIN_CHAT_TEMPLATES, t)) return BUILTIN_CHAT_TEMPLATES[t];
  if (t.includes("{{") || t.includes("{%")) return t;
  throw new UsageError(`--chat-template: unknown template '${t}' (built-in: ${Object.keys(BUILTIN_CHAT_TEMPLATES).join(", ")}; or a Jinja template)`);
}
