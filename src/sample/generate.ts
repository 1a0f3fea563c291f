/**
 * The text-generation loop of `tsmoe run`: evaluate the prompt, then sample, stream and evaluate one
 * token at a time until end-of-generation, the token budget, a full context or an interruption.
 * Times prompt evaluation and decoding separately (llama.cpp's "prompt eval" and "eval" timings).
 */
import type { Session } from "../model/api.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { TokenStreamDecoder } from "../tokenizer/stream.ts";
import type { Sampler } from "./sampler.ts";

export interface GenerationTimings {
  /** prompt tokens evaluated and milliseconds spent */
  nPrompt: number;
  promptMs: number;
  /** single-token decode evaluations and milliseconds spent */
  nEval: number;
  evalMs: number;
  /** tokens sampled (including a final end-of-generation token) and milliseconds spent sampling */
  nSampled: number;
  sampleMs: number;
}

export function emptyTimings(): GenerationTimings {
  return { nPrompt: 0, promptMs: 0, nEval: 0, evalMs: 0, nSampled: 0, sampleMs: 0 };
}

export type StopReason = "eog" | "n_predict" | "context" | "interrupted";

export interface GenerateOptions {
  /** new tokens at most (-1: no limit; 0: the prompt is evaluated, nothing is sampled) */
  nPredict: number;
  /** end-of-generation tokens are never sampled (llama-cli --ignore-eos: their logits are set to -inf) */
  ignoreEos?: boolean;
  /** receives text as soon as it forms complete characters (generation waits for a returned promise) */
  write: (text: string) => unknown;
  /** checked between tokens (Ctrl-C) */
  shouldStop?: () => boolean;
  /** timings are added here */
  timings: GenerationTimings;
}

/**
 * Lets signal handlers (Ctrl-C) and stream errors (a closed stdout) run between tokens or chunks, even when
 * evaluation never leaves the main thread.
 */
export const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Evaluates `prompt` (appended to what the session holds), then generates. Returns the generated tokens
 * (without an end-of-generation token) and why generation stopped. The sampler has seen the prompt.
 */
export async function generate(
  session: Session,
  sampler: Sampler,
  tokenizer: Tokenizer,
  prompt: number[],
  opts: GenerateOptions,
): Promise<{ tokens: number[]; stop: StopReason }> {
  const t = opts.timings;
  let t0 = performance.now();
  let logits = await session.eval(prompt);
  t.promptMs += performance.now() - t0;
  t.nPrompt += prompt.length;
  for (const tok of prompt) sampler.accept(tok);
  const decoder = new TokenStreamDecoder(tokenizer);
  const out: number[] = [];
  const banned: number[] = [];
  if (opts.ignoreEos) for (let id = 0; id < tokenizer.nVocab; id++) if (tokenizer.isEog(id)) banned.push(id);
  let stop: StopReason = "n_predict";
  if (opts.nPredict === 0) return { tokens: out, stop }; // -n 0: the prompt only, nothing generated (llama-cli)
  for (;;) {
    await yieldToEventLoop();
    if (opts.shouldStop?.()) {
      stop = "interrupted";
      break;
    }
    t0 = performance.now();
    for (const id of banned) logits[id] = -Infinity;
    const tok = sampler.sample(logits);
    sampler.accept(tok);
    t.sampleMs += performance.now() - t0;
    t.nSampled++;
    if (tokenizer.isEog(tok)) {
      stop = "eog";
      break;
    }
    out.push(tok);
    await opts.write(decoder.push(tok));
    if (opts.nPredict >= 0 && out.length >= opts.nPredict) break;
    if (opts.shouldStop?.()) {
      stop = "interrupted"; // also checked here: a stop string (tsmoe serve) needs no further evaluation
      break;
    }
    if (session.nPast >= session.nCtx) {
      stop = "context";
      break;
    }
    t0 = performance.now();
    logits = await session.eval([tok]);
    t.evalMs += performance.now() - t0;
    t.nEval++;
  }
  const rest = decoder.flush();
  if (rest) await opts.write(rest);
  return { tokens: out, stop };
}

/** llama.cpp-style timing lines (for stderr at the end of a run). */
export function formatTimings(loadMs: number, t: GenerationTimings, totalMs: number): string {
  const ms = (v: number) => v.toFixed(2).padStart(10);
  const rate = (n: number, v: number) =>
    n > 0 ? `(${(v / n).toFixed(2).padStart(8)} ms per token, ${((1000 * n) / v).toFixed(2).padStart(8)} tokens per second)` : "";
  return [
    `tsmoe_perf:        load time = ${ms(loadMs)} ms`,
    `tsmoe_perf:    sampling time = ${ms(t.sampleMs)} ms / ${String(t.nSampled).padStart(5)} runs   ${rate(t.nSampled, t.sampleMs)}`,
    `tsmoe_perf: prompt eval time = ${ms(t.promptMs)} ms / ${String(t.nPrompt).padStart(5)} tokens ${rate(t.nPrompt, t.promptMs)}`,
    `tsmoe_perf:        eval time = ${ms(t.evalMs)} ms / ${String(t.nEval).padStart(5)} runs   ${rate(t.nEval, t.evalMs)}`,
    `tsmoe_perf:       total time = ${ms(totalMs)} ms / ${String(t.nPrompt + t.nEval).padStart(5)} tokens`,
  ].join("\n");
}
