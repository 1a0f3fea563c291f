/** Fixed addresses in the kernels' shared linear memory (see ./memory.ts for the whole layout). */

/** The f16 -> float32 table: 65536 float32 values. */
export const F16_TABLE_ADDR = 65536;

/**
 * 2^(e - 128) for e = 0..255 as f64 (the MXFP4 scale of exponent byte e): 256 values at the end of page 0,
 * after the arena's counters and probe slots (./memory.ts).
 */
export const E8M0_TABLE_ADDR = 65536 - 256 * 8;
