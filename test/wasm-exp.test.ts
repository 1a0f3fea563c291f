/**
 * The WASM exponential (src/kernels/wasm/exp.ts) gives the bits of Math.exp: over the whole double range,
 * around every branch point of the algorithm, at the special values, and densely where the kernels use it
 * (softmax: differences of float32 values, at most 0).
 */
import { describe, expect, it } from "vitest";
import { encodeModule } from "../src/kernels/wasm/emitter.ts";
import { emitExp } from "../src/kernels/wasm/exp.ts";
import { uniformRng } from "../src/tensor/random.ts";

const mod = new WebAssembly.Instance(new WebAssembly.Module(encodeModule([emitExp()], 1, 1)), { env: { memory: new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true }) } });
const exp = mod.exports.exp_f64 as (x: number) => number;

function firstMismatch(xs: Iterable<number>): number | undefined {
  for (const x of xs) if (!Object.is(exp(x), Math.exp(x))) return x;
  return undefined;
}

/** doubles with the given high words and random low words, both signs */
function* aroundWords(words: number[], u: () => number): Generator<number> {
  const b = new DataView(new ArrayBuffer(8));
  for (const w of words)
    for (let d = -3; d <= 3; d++)
      for (let i = 0; i < 20; i++)
        for (const sign of [0, 0x80000000]) {
          b.setUint32(0, ((w + d) | sign) >>> 0);
          b.setUint32(4, i < 2 ? i * 0xffffffff : Math.floor(u() * 2 ** 32));
          yield b.getFloat64(0);
        }
}

describe("exp_f64", () => {
  it("equals Math.exp at the special values and around every branch point", () => {
    const special = [0, -0, 1, -1, 0.5, -0.5, NaN, Infinity, -Infinity, Number.MIN_VALUE, -Number.MIN_VALUE, Number.MAX_VALUE, -Number.MAX_VALUE,
      709.782712893384, 709.7827128933841, 709.78, 710, -745.1332191019411, -745.1332191019412, -745.2, -744, 2 ** -28, -(2 ** -28), 2 ** -30, 1e-300, Math.LN2 / 2, Math.LN2 * 1.5, -708.4, -708.3];
    expect(firstMismatch(special)).toBeUndefined();
    expect(firstMismatch(aroundWords([0x40862e42, 0x7ff00000, 0x3fd62e42, 0x3ff0a2b2, 0x3e300000, 0x3ff00000, 0x4086232b, 0x40874910], uniformRng(1)))).toBeUndefined();
    // NaN payloads stay NaN
    expect(exp(NaN)).toBeNaN();
  });

  it("equals Math.exp on random doubles over the whole range and on softmax arguments", () => {
    const u = uniformRng(2);
    const xs: number[] = [];
    for (let i = 0; i < 200_000; i++) xs.push((u() * 2 - 1) * 750);
    for (let i = 0; i < 200_000; i++) xs.push((u() * 2 - 1) * 2 ** (u() * 80 - 70));
    // softmax: float32 score minus the float32 maximum
    for (let i = 0; i < 400_000; i++) xs.push(Math.fround((u() - 1) * 30) - Math.fround(u() * 5));
    expect(firstMismatch(xs)).toBeUndefined();
  });
});
