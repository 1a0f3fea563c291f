/**
 * The two engines measured the same way by the benchmarks: prompt processing (one batch, the last token
 * asking for the next) then greedy decode one token at a time, tsmoe through a session and llama.cpp
 * through node-llama-cpp, both in this process. Speeds are wall clock and per CPU-second of the process.
 */
import type { Token } from "node-llama-cpp";
import type { loadModel } from "../src/model/load.ts";

/** node-llama-cpp's token ids are a branded number type */
export const asTokens = (t: number[]): Token[] => t as Token[];

/** a fixed prompt of `n` ordinary tokens (the synthetic vocabularies' first ids are special) */
export function promptTokens(nVocab: number, n: number): number[] {
  const t: number[] = [];
  for (let i = 0; i < n; i++) t.push(16 + ((i * 7919) % (nVocab - 16)));
  return t;
}

function argmax(v: Float32Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}

export interface Speed {
  /** tokens/s, wall clock (tg 0 when no decode was asked for) */
  pp: number;
  tg: number;
  /** tokens per CPU-second of the whole process (all threads; spinning threads count) */
  ppCpu: number;
  tgCpu: number;
}

const cpuSeconds = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/** prompt and decode speeds of one run, through `pp(tokens) -> next token` and `tg(first, n)` */
async function timeRun(prompt: number[], nTg: number, pp: (t: number[]) => Promise<number>, tg: (first: number, n: number) => Promise<void>): Promise<Speed> {
  const c0 = cpuSeconds();
  const t0 = performance.now();
  const next = await pp(prompt);
  const t1 = performance.now();
  const c1 = cpuSeconds();
  if (nTg > 0) await tg(next, nTg);
  const t2 = performance.now();
  const c2 = cpuSeconds();
  return {
    pp: (prompt.length * 1000) / (t1 - t0),
    tg: nTg > 0 ? (nTg * 1000) / (t2 - t1) : 0,
    ppCpu: prompt.length / (c1 - c0),
    tgCpu: nTg > 0 ? nTg / (c2 - c1) : 0,
  };
}

export type TsmoeModel = Awaited<ReturnType<typeof loadModel>>;

/**
 * The prompt in a fresh session of `nCtx`, then `nTg` decoded tokens. `allLogits`: the prompt is evaluated
 * as llama-perplexity evaluates a chunk, with the logits of every position (the last row picks the next token).
 */
export async function runTsmoe(model: TsmoeModel, prompt: number[], nTg: number, nCtx: number, allLogits = false): Promise<Speed> {
  const s = model.createSession({ nCtx });
  const nVocab = model.hparams.nVocab;
  return timeRun(
    prompt,
    nTg,
    async (p) => argmax((await s.eval(p, { allLogits })).subarray(allLogits ? (p.length - 1) * nVocab : 0)),
    async (first, n) => {
      let tok = first;
      for (let i = 0; i < n; i++) tok = argmax(await s.eval([tok]));
    },
  );
}

export type LlamaModel = Awaited<ReturnType<Awaited<ReturnType<typeof import("node-llama-cpp").getLlama>>["loadModel"]>>;

/**
 * The prompt in one batch of a fresh context of `nCtx`, the last token asking for the next one (`allLogits`:
 * every token asks for its next one, so llama.cpp computes the logits of every position); then greedy decode.
 */
export async function runLlama(lm: LlamaModel, threads: number, prompt: number[], nTg: number, nCtx: number, allLogits = false): Promise<Speed> {
  const ctx = await lm.createContext({ contextSize: nCtx, threads, batchSize: prompt.length, sequences: 1 });
  try {
    const seq = ctx.getSequence();
    return await timeRun(
      prompt,
      nTg,
      async (p) => {
        const next = { generateNext: { token: true, options: { temperature: 0 } } } as const;
        const items = asTokens(p).map((t, i) => (allLogits || i === p.length - 1 ? ([t, next] as [Token, typeof next]) : t));
        const res = await seq.controlledEvaluate(items);
        return res.at(-1)!.next!.token!;
      },
      async (first, n) => {
        let count = 0;
        for await (const _tok of seq.evaluate(asTokens([first]), { temperature: 0 })) if (++count >= n) break;
      },
    );
  } finally {
    await ctx.dispose();
  }
}

/** each speed's best over the runs */
export function best(runs: Speed[]): Speed {
  const max = (k: keyof Speed): number => Math.max(...runs.map((r) => r[k]));
  return { pp: max("pp"), tg: max("tg"), ppCpu: max("ppCpu"), tgCpu: max("tgCpu") };
}

