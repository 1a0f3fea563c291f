/**
 * A small seeded pseudo-random generator (xoshiro128**, seeded through splitmix32) so that the same
 * `--seed` always gives the same text on every platform. Not cryptographic.
 */

/** llama.cpp's LLAMA_DEFAULT_SEED: "pick a random seed". */
export const RANDOM_SEED = 0xffffffff;

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) >>> 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

export class Rng {
  private s = new Uint32Array(4);

  constructor(seed: number) {
    const st = { s: seed >>> 0 };
    for (let i = 0; i < 4; i++) this.s[i] = splitmix32(st);
    if ((this.s[0] | this.s[1] | this.s[2] | this.s[3]) === 0) this.s[0] = 1;
  }

  /** next uniformly distributed 32-bit unsigned integer */
  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** uniform double in [0, 1) with 53 random bits */
  nextDouble(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** The seed to use for `--seed` (RANDOM_SEED or negative picks one from the clock and Math.random). */
export function resolveSeed(seed: number): number {
  if (seed < 0 || seed === RANDOM_SEED) return (Math.floor(Math.random() * 0xfffffffe) ^ Date.now()) >>> 0;
  return seed >>> 0;
}
