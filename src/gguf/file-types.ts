/**
 * `general.file_type` values (llama.cpp's llama_ftype): names, and the value written for a file whose weights
 * are uniformly of one ggml type.
 */
import { GGMLType } from "../tensor/types.ts";

export const FILE_TYPE_NAMES: Record<number, string> = {
  0: "F32",
  1: "F16",
  2: "Q4_0",
  3: "Q4_1",
  7: "Q8_0",
  8: "Q5_0",
  9: "Q5_1",
  10: "Q2_K",
  11: "Q3_K_S",
  12: "Q3_K_M",
  13: "Q3_K_L",
  14: "Q4_K_S",
  15: "Q4_K_M",
  16: "Q5_K_S",
  17: "Q5_K_M",
  18: "Q6_K",
  19: "IQ2_XXS",
  20: "IQ2_XS",
  21: "Q2_K_S",
  22: "IQ3_XS",
  23: "IQ3_XXS",
  24: "IQ1_S",
  25: "IQ4_NL",
  26: "IQ3_S",
  27: "IQ3_M",
  28: "IQ2_S",
  29: "IQ2_M",
  30: "IQ4_XS",
  31: "IQ1_M",
  32: "BF16",
  36: "TQ1_0",
  37: "TQ2_0",
  38: "MXFP4_MOE",
};

export function fileTypeName(ftype: number): string {
  return FILE_TYPE_NAMES[ftype] ?? `ftype#${ftype}`;
}

/** general.file_type for "mostly <type>" weights (K-quants: the _S variant). */
export const FILE_TYPE_OF_WEIGHT_TYPE: Partial<Record<GGMLType, number>> = {
  [GGMLType.F32]: 0,
  [GGMLType.F16]: 1,
  [GGMLType.Q4_0]: 2,
  [GGMLType.Q4_1]: 3,
  [GGMLType.Q8_0]: 7,
  [GGMLType.Q5_0]: 8,
  [GGMLType.Q5_1]: 9,
  [GGMLType.Q2_K]: 10,
  [GGMLType.Q3_K]: 11,
  [GGMLType.Q4_K]: 14,
  [GGMLType.Q5_K]: 16,
  [GGMLType.Q6_K]: 18,
  [GGMLType.IQ4_NL]: 25,
  [GGMLType.IQ4_XS]: 30,
  [GGMLType.BF16]: 32,
  [GGMLType.MXFP4]: 38,
};
