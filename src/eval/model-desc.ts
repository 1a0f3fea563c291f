/** How reports name a model (llama-bench style): "qwen3moe 5.56M Q8_0", "5.83 MiB", "5.56 M". */
import { fileTypeName } from "../gguf/file-types.ts";
import type { Model } from "../model/api.ts";

export function formatSize(bytes: number): string {
  const gib = bytes / 1024 ** 3;
  return gib >= 1 ? `${gib.toFixed(2)} GiB` : `${(bytes / 1024 ** 2).toFixed(2)} MiB`;
}

export function formatParams(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  return `${(n / 1e3).toFixed(2)} K`;
}

export function modelFileType(model: Model): string {
  const e = model.metadata.get("general.file_type");
  return e && typeof e.value === "number" ? fileTypeName(e.value) : "?";
}

export function modelDescription(model: Model): string {
  return `${model.hparams.arch} ${formatParams(model.nParams).replace(" ", "")} ${modelFileType(model)}`;
}
