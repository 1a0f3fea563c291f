/** Fixed addresses in the kernels' shared linear memory (see ./memory.ts for the whole layout). */

/** The f16 -> float32 table: 65536 float32 values. */
export const F16_TABLE_ADDR = 65536;
