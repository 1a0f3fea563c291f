/**
 * A synthetic SentencePiece-style vocabulary (`tokenizer.ggml.model = "llama"`) for generated models, laid out
 * like the fixtures': 0 `<unk>` (UNKNOWN), 1 `<s>` (BOS, CONTROL), 2 `</s>` (EOS, CONTROL), 3..258 the byte
 * pieces `<0x00>`..`<0xFF>` (BYTE), then learned-looking pieces (NORMAL, score = -rank): single characters
 * first, then `▁`-prefixed and plain letter combinations of growing length.
 */
import { GgufValueType, type MetaEntry } from "./types.ts";

/** llama.cpp token types (llama_token_type) */
export const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;
export const N_SPECIAL_AND_BYTES = 3 + 256;

const SPACE = "\u2581";
const LETTERS = "etaoinshrdlucmfwypvbgkjqxz";
const SINGLES = [SPACE, ...LETTERS, ...LETTERS.toUpperCase(), ..."0123456789", ...".,;:!?'\"-()/"];

/** Learned pieces in rank order: singles, then strings over [▁ + letters] (▁ only in front) of length 2, 3, ... */
function* learnedPieces(): Generator<string> {
  yield* SINGLES;
  let level = [...LETTERS].map((c) => c);
  for (;;) {
    const next: string[] = [];
    for (const stem of level) for (const c of LETTERS) next.push(stem + c);
    for (const p of next) yield SPACE + p.slice(1);
    for (const p of next) yield p;
    level = next;
  }
}

export interface SyntheticVocab {
  tokens: string[];
  scores: number[];
  types: number[];
}

export function syntheticVocab(nVocab: number): SyntheticVocab {
  if (!Number.isInteger(nVocab) || nVocab <= N_SPECIAL_AND_BYTES + SINGLES.length)
    throw new RangeError(`synthetic vocabulary needs more than ${N_SPECIAL_AND_BYTES + SINGLES.length} tokens, got ${nVocab}`);
  const tokens = ["<unk>", "<s>", "</s>"];
  const types: number[] = [TOKEN_TYPE.UNKNOWN, TOKEN_TYPE.CONTROL, TOKEN_TYPE.CONTROL];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(TOKEN_TYPE.BYTE);
  }
  const scores = tokens.map(() => 0);
  const seen = new Set(tokens);
  let rank = 0;
  for (const p of learnedPieces()) {
    if (tokens.length >= nVocab) break;
    if (seen.has(p)) continue;
    seen.add(p);
    tokens.push(p);
    types.push(TOKEN_TYPE.NORMAL);
    scores.push(-rank++);
  }
  return { tokens, scores, types };
}

/** A minimal ChatML-style template for `tokenizer.chat_template`. */
export const SIMPLE_CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '</s>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

/** The tokenizer.* metadata entries for a synthetic vocabulary. */
export function vocabMetadata(nVocab: number, chatTemplate?: string): MetaEntry[] {
  const v = syntheticVocab(nVocab);
  const S = GgufValueType;
  const entries: MetaEntry[] = [
    { key: "tokenizer.ggml.model", type: S.STRING, value: "llama" },
    { key: "tokenizer.ggml.tokens", type: S.ARRAY, arrayType: S.STRING, value: v.tokens },
    { key: "tokenizer.ggml.scores", type: S.ARRAY, arrayType: S.FLOAT32, value: v.scores },
    { key: "tokenizer.ggml.token_type", type: S.ARRAY, arrayType: S.INT32, value: v.types },
    { key: "tokenizer.ggml.bos_token_id", type: S.UINT32, value: 1 },
    { key: "tokenizer.ggml.eos_token_id", type: S.UINT32, value: 2 },
    { key: "tokenizer.ggml.unknown_token_id", type: S.UINT32, value: 0 },
    { key: "tokenizer.ggml.add_bos_token", type: S.BOOL, value: true },
    { key: "tokenizer.ggml.add_eos_token", type: S.BOOL, value: false },
    { key: "tokenizer.ggml.add_space_prefix", type: S.BOOL, value: true },
  ];
  if (chatTemplate !== undefined) entries.push({ key: "tokenizer.chat_template", type: S.STRING, value: chatTemplate });
  return entries;
}
