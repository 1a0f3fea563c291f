/**
 * Seeded pseudo-random numbers (xorshift32 + Box-Muller) for tests, benchmarks and generated models:
 * the same seed gives the same values on every machine.
 */

/** A uniform generator on (0, 1). */
export function uniformRng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s + 0.5) / 4294967296;
  };
}

/** n normal draws with standard deviation `scale`. */
export function randn(n: number, seed: number, scale = 1): Float32Array {
  const u = uniformRng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return out;
}
