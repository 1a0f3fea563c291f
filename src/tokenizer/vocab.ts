/**
 * A model's vocabulary read from GGUF metadata, with everything llama.cpp derives from it at load time:
 * token attributes (including the ones it infers from token texts), special token ids, end-of-generation
 * tokens, the special-token list used to split prompts, BPE merge ranks and the text piece of every token.
 */
import { TsmoeError } from "../errors.ts";
import type { MetaEntry, MetaValue } from "../gguf/types.ts";
import { preTokenizerFor, type PreTokenizer } from "./pre-types.ts";
import { charToByte, utf8Encode, utf8Length } from "./unicode.ts";

/** Token attribute bits (llama_token_attr). */
export const ATTR = {
  UNDEFINED: 0,
  UNKNOWN: 1 << 0,
  UNUSED: 1 << 1,
  NORMAL: 1 << 2,
  CONTROL: 1 << 3,
  USER_DEFINED: 1 << 4,
  BYTE: 1 << 5,
  NORMALIZED: 1 << 6,
  LSTRIP: 1 << 7,
  RSTRIP: 1 << 8,
  SINGLE_WORD: 1 << 9,
} as const;

/** GGUF token_type values -> attributes. */
const TYPE_TO_ATTR: Record<number, number> = {
  0: ATTR.UNDEFINED,
  1: ATTR.NORMAL,
  2: ATTR.UNKNOWN,
  3: ATTR.CONTROL,
  4: ATTR.USER_DEFINED,
  5: ATTR.UNUSED,
  6: ATTR.BYTE,
};

export type VocabKind = "spm" | "bpe";

/** Special token ids; null where the model has none. */
export interface SpecialTokens {
  bos: number | null;
  eos: number | null;
  eot: number | null;
  eom: number | null;
  unk: number | null;
  sep: number | null;
  pad: number | null;
  mask: number | null;
  fimPre: number | null;
  fimSuf: number | null;
  fimMid: number | null;
  fimPad: number | null;
  fimRep: number | null;
  fimSep: number | null;
}

const SPECIAL_KEYS: Array<[string, keyof SpecialTokens]> = [
  ["tokenizer.ggml.bos_token_id", "bos"],
  ["tokenizer.ggml.eos_token_id", "eos"],
  ["tokenizer.ggml.eot_token_id", "eot"],
  ["tokenizer.ggml.eom_token_id", "eom"],
  ["tokenizer.ggml.unknown_token_id", "unk"],
  ["tokenizer.ggml.seperator_token_id", "sep"],
  ["tokenizer.ggml.padding_token_id", "pad"],
  ["tokenizer.ggml.mask_token_id", "mask"],
  ["tokenizer.ggml.fim_pre_token_id", "fimPre"],
  ["tokenizer.ggml.fim_suf_token_id", "fimSuf"],
  ["tokenizer.ggml.fim_mid_token_id", "fimMid"],
  ["tokenizer.ggml.fim_pad_token_id", "fimPad"],
  ["tokenizer.ggml.fim_rep_token_id", "fimRep"],
  ["tokenizer.ggml.fim_sep_token_id", "fimSep"],
  // deprecated spellings, read last like llama.cpp
  ["tokenizer.ggml.prefix_token_id", "fimPre"],
  ["tokenizer.ggml.suffix_token_id", "fimSuf"],
  ["tokenizer.ggml.middle_token_id", "fimMid"],
];

/** Token texts llama.cpp recognises as special when the metadata does not name them (first match wins). */
const TEXT_DETECTED: Array<[keyof SpecialTokens, string[]]> = [
  ["eot", ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"]],
  ["eom", ["<|eom_id|>"]],
  ["fimPre", ["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"]],
  ["fimSuf", ["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"]],
  ["fimMid", ["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"]],
  ["fimPad", ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"]],
  ["fimRep", ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"]],
  ["fimSep", ["<|file_sep|>"]],
];

/** Token texts that end generation (llama.cpp's list). */
const EOG_TEXTS = [
  "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
  "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
  "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
];

// ---- metadata access ----

function entry(meta: Map<string, MetaEntry>, key: string): MetaValue | undefined {
  return meta.get(key)?.value;
}

function str(meta: Map<string, MetaEntry>, key: string): string | undefined {
  const v = entry(meta, key);
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new TsmoeError(`GGUF metadata ${key} should be a string`);
  return v;
}

function num(meta: Map<string, MetaEntry>, key: string): number | undefined {
  const v = entry(meta, key);
  if (v === undefined) return undefined;
  if (typeof v === "bigint") return Number(v);
  if (typeof v !== "number") throw new TsmoeError(`GGUF metadata ${key} should be a number`);
  return v;
}

function bool(meta: Map<string, MetaEntry>, key: string): boolean | undefined {
  const v = entry(meta, key);
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") throw new TsmoeError(`GGUF metadata ${key} should be a boolean`);
  return v;
}

function arr(meta: Map<string, MetaEntry>, key: string): MetaValue[] | undefined {
  const v = entry(meta, key);
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw new TsmoeError(`GGUF metadata ${key} should be an array`);
  return v;
}

/** The vocabulary and the flags that drive tokenization. */
export class Vocab {
  readonly kind: VocabKind;
  readonly pre: PreTokenizer | null;
  readonly texts: string[];
  readonly tokenToId = new Map<string, number>();
  readonly scores: Float32Array;
  readonly attrs: Uint16Array;
  readonly special: SpecialTokens;
  readonly eog = new Set<number>();
  /** control / user-defined / unknown tokens, longest text first: what prompts are split on */
  readonly specialCache: number[];
  /** text of each token with special tokens rendered (llama.cpp's token-to-piece cache) */
  readonly pieces: Uint8Array[];
  addSpacePrefix: boolean;
  addBos: boolean;
  addEos: boolean;
  readonly cleanSpaces: boolean;
  readonly ignoreMerges: boolean;
  readonly escapeWhitespaces: boolean;
  readonly chatTemplate: string | undefined;
  /** merge ranks: left piece -> right piece -> rank */
  private readonly ranks = new Map<string, Map<string, number>>();

  get size(): number {
    return this.texts.length;
  }

  constructor(meta: Map<string, MetaEntry>) {
    const model = str(meta, "tokenizer.ggml.model");
    if (model === undefined) throw new TsmoeError("the model has no tokenizer (tokenizer.ggml.model is missing)");
    const sp: SpecialTokens = {
      bos: null, eos: null, eot: null, eom: null, unk: null, sep: null, pad: null, mask: null,
      fimPre: null, fimSuf: null, fimMid: null, fimPad: null, fimRep: null, fimSep: null,
    };
    if (model === "llama") {
      this.kind = "spm";
      this.pre = null;
      Object.assign(sp, { bos: 1, eos: 2, unk: 0 });
      this.addSpacePrefix = true;
      this.cleanSpaces = false;
      this.addBos = true;
      this.addEos = false;
      this.ignoreMerges = false;
      this.escapeWhitespaces = true;
    } else if (model === "gpt2") {
      this.kind = "bpe";
      this.pre = preTokenizerFor(str(meta, "tokenizer.ggml.pre"));
      Object.assign(sp, { bos: this.pre.noDefaultBos ? null : 11, eos: 11 });
      this.addSpacePrefix = false;
      this.cleanSpaces = this.pre.cleanSpaces;
      this.addBos = this.pre.addBos;
      this.addEos = false;
      this.ignoreMerges = this.pre.ignoreMerges;
      this.escapeWhitespaces = false;
      const merges = arr(meta, "tokenizer.ggml.merges");
      // Kimi-K2 vocabularies may come without merges (llama.cpp accepts that for them only)
      if (!merges && this.pre.name !== "kimi-k2") throw new TsmoeError("cannot find tokenizer merges (tokenizer.ggml.merges) in the model file");
      merges?.forEach((m, i) => {
        const s = String(m);
        const cut = s.indexOf(" ", 1);
        const [left, right] = cut < 0 ? ["", ""] : [s.slice(0, cut), s.slice(cut + 1)];
        let byRight = this.ranks.get(left);
        if (!byRight) this.ranks.set(left, (byRight = new Map()));
        if (!byRight.has(right)) byRight.set(right, i); // the first of duplicate merges wins
      });
    } else {
      throw new TsmoeError(`unsupported tokenizer model tokenizer.ggml.model = '${model}' (supported: llama, gpt2)`);
    }
    this.addSpacePrefix = bool(meta, "tokenizer.ggml.add_space_prefix") ?? this.addSpacePrefix;
    this.chatTemplate = str(meta, "tokenizer.chat_template");

    const tokens = arr(meta, "tokenizer.ggml.tokens");
    if (!tokens) throw new TsmoeError("cannot find the tokenizer vocabulary (tokenizer.ggml.tokens) in the model file");
    const n = tokens.length;
    const scores = arr(meta, "tokenizer.ggml.scores");
    if (scores && scores.length < n) throw new TsmoeError(`tokenizer.ggml.scores has ${scores.length} entries for ${n} tokens`);
    const types = arr(meta, "tokenizer.ggml.token_type");
    if (types && types.length < n) throw new TsmoeError(`tokenizer.ggml.token_type has ${types.length} entries for ${n} tokens`);
    this.texts = new Array<string>(n);
    this.scores = new Float32Array(n);
    this.attrs = new Uint16Array(n);
    for (let i = 0; i < n; i++) {
      let t = String(tokens[i]);
      if (t === "") t = `[EMPTY_${i}]`;
      if (this.tokenToId.has(t)) throw new TsmoeError(`the vocabulary has a duplicate token ${JSON.stringify(t)} (ids ${this.tokenToId.get(t)} and ${i})`);
      this.tokenToId.set(t, i);
      this.texts[i] = t;
      this.scores[i] = scores ? Number(scores[i]) : 0;
      this.attrs[i] = types ? (TYPE_TO_ATTR[Number(types[i])] ?? ATTR.UNDEFINED) : ATTR.NORMAL;
    }

    // special ids: defaults out of range are dropped; metadata ids out of range are ignored
    for (const [key, field] of SPECIAL_KEYS) {
      const cur = sp[field];
      if (cur !== null && cur >= n) sp[field] = null;
      const v = num(meta, key);
      if (v !== undefined && v >= 0 && v < n) sp[field] = v;
    }
    this.special = sp;
    this.addBos = bool(meta, "tokenizer.ggml.add_bos_token") ?? this.addBos;
    this.addEos = bool(meta, "tokenizer.ggml.add_eos_token") ?? this.addEos;

    this.detectSpecialTokens();
    this.specialCache = [];
    for (let id = 0; id < n; id++) if (this.attrs[id] & (ATTR.CONTROL | ATTR.USER_DEFINED | ATTR.UNKNOWN)) this.specialCache.push(id);
    const bytes = this.specialCache.map((id) => utf8Length(this.texts[id]));
    const order = this.specialCache.map((_, i) => i).sort((a, b) => bytes[b] - bytes[a] || a - b);
    this.specialCache = order.map((i) => this.specialCache[i]);
    this.pieces = this.texts.map((_, id) => this.renderPiece(id));
    this.applyModelSpecificAttributes(str(meta, "general.name") ?? "", str(meta, "tokenizer.ggml.pre") ?? "", str(meta, "general.architecture") ?? "");
  }

  /** EOT/EOM/FIM ids and end-of-generation tokens recognised by their text, as llama.cpp does. */
  private detectSpecialTokens(): void {
    const sp = this.special;
    const markControl = (id: number) => {
      this.attrs[id] |= ATTR.CONTROL;
    };
    for (const [field, texts] of TEXT_DETECTED) {
      if (sp[field] !== null) continue;
      for (const t of texts) {
        const id = this.tokenToId.get(t);
        if (id !== undefined) {
          sp[field] = id;
          markControl(id);
          break;
        }
      }
    }
    // control tokens named "unused" are unused
    for (let id = 0; id < this.size; id++) {
      if (this.attrs[id] & ATTR.CONTROL && this.texts[id].includes("unused")) this.attrs[id] |= ATTR.UNUSED;
    }
    for (const f of ["fimPad", "fimRep", "fimSep"] as const) if (sp[f] !== null) this.eog.add(sp[f]);
    for (const t of EOG_TEXTS) {
      const id = this.tokenToId.get(t);
      if (id === undefined) continue;
      this.eog.add(id);
      markControl(id);
    }
    // gpt-oss: these are always rendered
    for (const t of ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"]) {
      const id = this.tokenToId.get(t);
      if (id !== undefined) this.attrs[id] = ATTR.USER_DEFINED;
    }
    for (const f of ["eos", "eot", "eom"] as const) if (sp[f] !== null) this.eog.add(sp[f]);
    // o200k_harmony / solar-open: "<|end|>" is not an end of generation when "<|return|>"/"<|call|>" exist
    const eogText = (t: string) => {
      const id = this.tokenToId.get(t);
      return id !== undefined && this.eog.has(id) ? id : undefined;
    };
    const end = eogText("<|end|>");
    const hasCall = eogText("<|call|>") !== undefined || eogText("<|calls|>") !== undefined;
    if (end !== undefined && hasCall && (eogText("<|return|>") !== undefined || eogText("<|flush|>") !== undefined)) {
      this.eog.delete(end);
      this.attrs[end] = ATTR.USER_DEFINED;
    }
    // gemma4 / paddleocr: "</s>" is not an end of generation next to "<|tool_response>"
    const s = eogText("</s>");
    if (s !== undefined && eogText("<|tool_response>") !== undefined) {
      this.eog.delete(s);
      this.attrs[s] = ATTR.NORMAL;
    }
  }

  /** Strip flags llama.cpp sets for particular models (by name / pre-tokenizer / architecture). */
  private applyModelSpecificAttributes(generalName: string, pre: string, arch: string): void {
    const name = generalName.toLowerCase();
    const setAttr = (id: number | undefined, bit: number, on: boolean) => {
      if (id === undefined) return;
      this.attrs[id] = on ? this.attrs[id] | bit : this.attrs[id] & ~bit;
    };
    const has = (s: string, subs: string[]) => subs.some((x) => s.includes(x));
    if (has(pre, ["jina-v2-de", "jina-v2-es", "jina-v2-code"]) || has(arch, ["nomic-bert-moe", "jina-bert-v3"])) {
      setAttr(this.tokenToId.get("<mask>"), ATTR.LSTRIP, true);
    } else if (has(name, ["phi-3", "phi3"])) {
      for (const id of this.specialCache) setAttr(id, ATTR.RSTRIP, true);
      setAttr(this.tokenToId.get("</s>"), ATTR.RSTRIP, true);
      for (const t of ["<unk>", "<s>", "<|endoftext|>"]) setAttr(this.tokenToId.get(t), ATTR.RSTRIP, false);
    } else if (has(name, ["modern-bert"])) {
      setAttr(this.tokenToId.get("[MASK]"), ATTR.LSTRIP, true);
    }
  }

  /** Rank of the merge (left, right), or -1. */
  mergeRank(left: string, right: string): number {
    return this.ranks.get(left)?.get(right) ?? -1;
  }

  /** The token for one byte (SentencePiece byte fallback: "<0xAB>", else the character itself). */
  byteToken(byte: number): number {
    const hex = byte.toString(16).toUpperCase().padStart(2, "0");
    const id = this.tokenToId.get(`<0x${hex}>`) ?? (byte < 0x80 ? this.tokenToId.get(String.fromCharCode(byte)) : undefined);
    if (id === undefined) throw new TsmoeError(`the vocabulary has no token for byte 0x${hex} (byte fallback)`);
    return id;
  }

  /** The bytes a token stands for, special tokens included (llama.cpp's token_to_piece with special = true). */
  private renderPiece(id: number): Uint8Array {
    const attr = this.attrs[id];
    const text = this.texts[id];
    if (attr & (ATTR.UNKNOWN | ATTR.CONTROL | ATTR.USER_DEFINED)) return utf8Encode(text);
    if (attr & ATTR.NORMAL) {
      if (this.kind === "spm" || this.escapeWhitespaces) return utf8Encode(text.replaceAll("\u2581", " "));
      return decodeByteLevel(text);
    }
    if (attr & ATTR.BYTE) return Uint8Array.of(parseInt(text.substr(3, 2), 16) & 0xff);
    return new Uint8Array(0);
  }
}

/** Byte-level BPE text -> bytes; characters outside the byte mapping are written as llama.cpp does. */
function decodeByteLevel(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const b = charToByte(ch);
    if (b !== undefined) {
      out.push(b);
      continue;
    }
    const hex = [...utf8Encode(ch)].map((x) => x.toString(16).padStart(2, "0")).join("");
    out.push(...utf8Encode(`[UNK_BYTE_0x${hex}${text}]`));
  }
  return Uint8Array.from(out);
}
