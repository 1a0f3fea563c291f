/**
 * The architectures tsmoe runs, by their GGUF `general.architecture` name.
 */
import { TsmoeError } from "../../errors.ts";
import type { Arch } from "../graph.ts";
import { deepseek2 } from "./deepseek2.ts";
import { glm4moe } from "./glm4moe.ts";
import { gptOss } from "./gpt-oss.ts";
import { granitemoe } from "./granitemoe.ts";
import { llama } from "./llama.ts";
import { olmoe } from "./olmoe.ts";
import { qwen2 } from "./qwen2.ts";
import { qwen2moe } from "./qwen2moe.ts";
import { qwen3 } from "./qwen3.ts";
import { qwen3moe } from "./qwen3moe.ts";
import { qwen3vlmoe } from "./qwen3vlmoe.ts";

export const ARCHS: ReadonlyMap<string, Arch> = new Map([llama, qwen2, qwen3, qwen2moe, qwen3moe, olmoe, glm4moe, gptOss, deepseek2, qwen3vlmoe, granitemoe].map((a) => [a.name, a]));

export function getArch(name: string): Arch {
  const a = ARCHS.get(name);
  if (!a) throw new TsmoeError(`architecture '${name}' is not supported (supported: ${[...ARCHS.keys()].join(", ")})`);
  return a;
}
