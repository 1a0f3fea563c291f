/**
 * llama.cpp's KV cache and attention flags, shared by run / eval / perplexity / bench / tradeoff:
 *
 *   -ctk, --cache-type-k f32|f16   -ctv, --cache-type-v f32|f16   -fa, --flash-attn on|off|auto
 *
 * Each combination tsmoe accepts reproduces llama.cpp's CPU numerics for it: f32 with -fa off (tsmoe's
 * default), f16 with -fa on (flash attention over an F16 cache), f16 with -fa off (ggml's matmuls over an
 * F16 cache). K and V must have the same type; an F32 cache with flash attention is refused. `auto` turns
 * flash attention on for an F16 cache (as llama.cpp's auto does on a CPU) and off for an F32 one.
 */
import type { Command } from "commander";
import { UsageError } from "../errors.ts";
import type { SessionOptions } from "../model/api.ts";

export interface AttentionCliValues {
  cacheTypeK: string;
  cacheTypeV: string;
  flashAttn: string;
}

export function addAttentionOptions(cmd: Command): Command {
  return cmd
    .option("--cache-type-k <type>", "KV cache type for K (also -ctk): f32 or f16", "f32")
    .option("--cache-type-v <type>", "KV cache type for V (also -ctv): f32 or f16", "f32")
    .option("--flash-attn <mode>", "flash attention (also -fa): on, off or auto (on for an f16 cache)", "auto");
}

function cacheType(flag: string, t: string): "f32" | "f16" {
  const v = t.toLowerCase();
  if (v !== "f32" && v !== "f16") throw new UsageError(`${flag}: expected f32 or f16, got '${t}' (quantized caches are not supported)`);
  return v;
}

/** The session options the flags ask for (one-line UsageErrors for values or combinations tsmoe lacks). */
export function attentionFrom(o: AttentionCliValues): Pick<SessionOptions, "kvType" | "flashAttention"> {
  const k = cacheType("--cache-type-k (-ctk)", o.cacheTypeK);
  const v = cacheType("--cache-type-v (-ctv)", o.cacheTypeV);
  if (k !== v) throw new UsageError(`-ctk ${k} with -ctv ${v}: K and V must have the same cache type`);
  const fa = o.flashAttn.toLowerCase();
  if (fa !== "on" && fa !== "off" && fa !== "auto") throw new UsageError(`--flash-attn (-fa): expected on, off or auto, got '${o.flashAttn}'`);
  if (fa === "on" && k === "f32") throw new UsageError("-fa on needs an F16 cache (-ctk f16 -ctv f16): flash attention over an F32 cache is not supported");
  return { kvType: k, flashAttention: fa === "on" || (fa === "auto" && k === "f16") };
}
