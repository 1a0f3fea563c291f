/**
 * Speed measurements as llama-bench makes them: prompt processing (pp: n random tokens in one batch from an
 * empty cache) and text generation (tg: n tokens decoded one at a time from an empty cache), repeated,
 * after one uncounted warm-up run; tokens/s mean and standard deviation over the repetitions.
 */
import type { Session } from "../model/api.ts";
import { Rng } from "../sample/rng.ts";

export interface SpeedSample {
  /** tokens/s of each repetition */
  samples: number[];
  mean: number;
  sd: number;
  /** mean seconds per repetition */
  seconds: number;
}

export function meanSd(xs: number[]): { mean: number; sd: number } {
  const n = xs.length;
  const mean = xs.reduce((s, v) => s + v, 0) / n;
  const sd = n > 1 ? Math.sqrt(xs.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, sd };
}

function randomTokens(rng: Rng, n: number, nVocab: number, bos: number | null): number[] {
  const t = Array.from({ length: n }, () => rng.nextU32() % nVocab);
  if (bos !== null && n > 0) t[0] = bos;
  return t;
}

/** seconds to evaluate n random tokens in batches of nBatch from an empty cache */
export async function timePrompt(session: Session, n: number, nVocab: number, nBatch: number, rng: Rng, bos: number | null): Promise<number> {
  const tokens = randomTokens(rng, n, nVocab, bos);
  session.truncate(0);
  const t0 = performance.now();
  for (let p = 0; p < n; p += nBatch) await session.eval(tokens.slice(p, p + nBatch));
  return (performance.now() - t0) / 1000;
}

/** seconds to decode n tokens one at a time from an empty cache */
export async function timeDecode(session: Session, n: number, nVocab: number, rng: Rng, bos: number | null): Promise<number> {
  session.truncate(0);
  let tok = bos ?? rng.nextU32() % nVocab;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    await session.eval([tok]);
    tok = rng.nextU32() % nVocab;
  }
  return (performance.now() - t0) / 1000;
}

export type SpeedTest = { kind: "pp" | "tg"; n: number };

export function testName(t: SpeedTest): string {
  return `${t.kind}${t.n}`;
}

/** Runs one test `reps` times after a warm-up run, llama-bench style. */
export async function measure(
  session: Session,
  test: SpeedTest,
  opts: { reps: number; nVocab: number; nBatch: number; bos: number | null; seed?: number },
): Promise<SpeedSample> {
  const rng = new Rng(opts.seed ?? 1234);
  const run = () =>
    test.kind === "pp"
      ? timePrompt(session, test.n, opts.nVocab, opts.nBatch, rng, opts.bos)
      : timeDecode(session, test.n, opts.nVocab, rng, opts.bos);
  // one uncounted warm-up run of the whole test (llama-bench warms up with a single token; a JavaScript
  // engine needs longer to compile the hot paths)
  await run();
  const times: number[] = [];
  for (let r = 0; r < opts.reps; r++) times.push(await run());
  const samples = times.map((s) => test.n / s);
  const { mean, sd } = meanSd(samples);
  return { samples, mean, sd, seconds: times.reduce((a, b) => a + b, 0) / times.length };
}
