/**
 * One generation on a server slot: the slot's session is emptied and given the request's expert setting,
 * then `generate` (the loop of `tsmoe run`, so the same flags and seed give the same tokens) runs with the
 * request's sampler, token budget and stop strings. Text reaches `onText` as it forms, minus any stop
 * string and whatever follows it (text that could be the start of a stop string is held back until it
 * cannot). Also the usage, llama-server's `timings` and the mean experts per token for the response.
 */
import type { MoeOptions, Session } from "../model/api.ts";
import { meanExperts } from "../eval/moe-report.ts";
import { emptyTimings, generate, type GenerationTimings } from "../sample/generate.ts";
import { Sampler, type SamplerParams } from "../sample/sampler.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";

export interface GenerationRequest {
  prompt: number[];
  sampling: Partial<SamplerParams>;
  moe: MoeOptions | undefined;
  /** -1: until end of text or a full context */
  nPredict: number;
  stop: string[];
  ignoreEos: boolean;
  /** receives the text as it forms (streaming) */
  onText?: (text: string) => void;
  /** checked between tokens: the client went away */
  cancelled: () => boolean;
}

export interface GenerationResult {
  text: string;
  /** generated tokens (without an end-of-generation token) */
  tokens: number[];
  /** OpenAI's finish_reason; "cancelled" when the client went away */
  finishReason: "stop" | "length" | "cancelled";
  timings: GenerationTimings;
  /** mean routed experts per token over the prompt and the generated tokens (undefined for a dense model) */
  meanExperts: number | undefined;
  seed: number;
}

/** Cuts text at the first stop string; holds back a tail that may begin one. */
export class StopFilter {
  private pending = "";
  matched = false;
  constructor(private readonly stops: string[]) {}

  /** the text that can be passed on after `piece` */
  push(piece: string): string {
    if (this.matched) return "";
    this.pending += piece;
    let cut = -1;
    for (const s of this.stops) {
      const i = this.pending.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.matched = true;
      const out = this.pending.slice(0, cut);
      this.pending = "";
      return out;
    }
    let hold = 0;
    for (const s of this.stops)
      for (let n = Math.min(s.length - 1, this.pending.length); n > hold; n--)
        if (this.pending.endsWith(s.slice(0, n))) {
          hold = n;
          break;
        }
    const out = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    return out;
  }

  /** what is held back, at the end of generation */
  flush(): string {
    const out = this.matched ? "" : this.pending;
    this.pending = "";
    return out;
  }
}

export async function runGeneration(session: Session, tokenizer: Tokenizer, req: GenerationRequest): Promise<GenerationResult> {
  session.truncate(0);
  session.setMoe(req.moe);
  session.resetStats();
  const sampler = new Sampler(req.sampling, session.nCtx);
  const timings = emptyTimings();
  const filter = new StopFilter(req.stop);
  let text = "";
  const emit = (s: string) => {
    if (s === "") return;
    text += s;
    req.onText?.(s);
  };
  const { tokens, stop } = await generate(session, sampler, tokenizer, req.prompt, {
    nPredict: req.nPredict,
    ignoreEos: req.ignoreEos,
    write: (piece) => emit(filter.push(piece)),
    shouldStop: () => filter.matched || req.cancelled(),
    timings,
  });
  emit(filter.flush());
  const finishReason = filter.matched || stop === "eog" ? "stop" : stop === "interrupted" ? "cancelled" : "length";
  const stats = session.moeStats();
  return { text, tokens, finishReason, timings, meanExperts: stats.length ? meanExperts(stats) : undefined, seed: sampler.seed };
}

/** llama-server's `timings` object. */
export function serverTimings(t: GenerationTimings, nPredicted: number) {
  const predictedMs = t.evalMs + t.sampleMs;
  return {
    cache_n: 0,
    prompt_n: t.nPrompt,
    prompt_ms: t.promptMs,
    prompt_per_token_ms: t.nPrompt ? t.promptMs / t.nPrompt : 0,
    prompt_per_second: t.promptMs > 0 ? (1000 * t.nPrompt) / t.promptMs : 0,
    predicted_n: nPredicted,
    predicted_ms: predictedMs,
    predicted_per_token_ms: nPredicted ? predictedMs / nPredicted : 0,
    predicted_per_second: predictedMs > 0 ? (1000 * nPredicted) / predictedMs : 0,
  };
}
