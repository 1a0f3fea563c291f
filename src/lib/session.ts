/**
 * A library session: one KV cache over which `generate` streams text and `evaluate` returns logits.
 * A thin layer over the engine's Session (src/model/load.ts), the CLI's generation loop
 * (src/sample/generate.ts) and sampler (src/sample/sampler.ts).
 */
import { TsmoeError, UsageError } from "../errors.ts";
import type { MoeLayerStats, Session as EngineSession } from "../model/api.ts";
import { emptyTimings, generate } from "../sample/generate.ts";
import { Sampler } from "../sample/sampler.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";

export interface GenerateOptions {
  /** new tokens at most (default -1: until end of text or a full context) */
  maxTokens?: number;
  /** 0: greedy; default 0.8 (with llama.cpp's default top-k 40, top-p 0.95, min-p 0.05) */
  temperature?: number;
  /** sampling seed (default: random) */
  seed?: number;
  /** stops generation between tokens; the iteration then throws the signal's reason */
  signal?: AbortSignal;
}

/** What a session needs from its model. */
export interface SessionOwner {
  readonly tokenizer: Tokenizer;
  /** throws when the model has been disposed */
  checkOpen(): void;
}

export class Session {
  /** tokens generated but not evaluated yet (the last one of a generation cut by maxTokens) */
  private pending: number[] = [];
  private busy = false;

  /** @internal created by Model.createSession */
  constructor(
    private readonly owner: SessionOwner,
    private readonly engine: EngineSession,
  ) {}

  /** context size in tokens */
  get nCtx(): number {
    return this.engine.nCtx;
  }

  /** tokens the session holds (prompts and generated text so far) */
  get nPast(): number {
    return this.engine.nPast + this.pending.length;
  }

  /**
   * Evaluates `tokens` after what the session holds and returns the logits of the last one (`nVocab`
   * values), or of every one with `{ all: true }` (`tokens.length × nVocab`, row after row).
   */
  async evaluate(tokens: number[], opts: { all?: boolean } = {}): Promise<Float32Array> {
    if (tokens.length === 0) throw new TsmoeError("eval: no tokens to evaluate");
    this.begin();
    try {
      const skip = this.pending.length;
      const logits = await this.engine.eval([...this.pending, ...tokens], { allLogits: opts.all === true });
      this.pending = [];
      return skip > 0 && opts.all ? logits.subarray(skip * (logits.length / (skip + tokens.length))) : logits;
    } finally {
      this.busy = false;
    }
  }

  /**
   * Streams the continuation of `prompt` (text, or token ids) as pieces of text. The prompt goes after what
   * the session already holds (a text prompt gets the model's BOS only in an empty session), so calls
   * continue one another. Breaking out of the loop stops generation.
   */
  async *generate(prompt: string | number[], opts: GenerateOptions = {}): AsyncGenerator<string, void, undefined> {
    this.begin();
    try {
      opts.signal?.throwIfAborted();
      const { tokenizer } = this.owner;
      const tokens = typeof prompt === "string" ? tokenizer.tokenize(prompt, { addSpecial: this.nPast === 0, parseSpecial: true }) : [...prompt];
      if (tokens.length === 0) throw new UsageError("the prompt is empty");
      const input = [...this.pending, ...tokens];
      if (this.engine.nPast + input.length >= this.nCtx)
        throw new UsageError(`the prompt is too long: ${this.nPast + tokens.length} tokens for a context of ${this.nCtx} (raise nCtx)`);
      const sampler = new Sampler({ ...(opts.temperature !== undefined && { temp: opts.temperature }), ...(opts.seed !== undefined && { seed: opts.seed }) }, this.nCtx);
      const start = this.engine.nPast;
      let generated: number[] = [];
      try {
        yield* pull<string>(async (push, stopped) => {
          const r = await generate(this.engine, sampler, tokenizer, input, {
            nPredict: opts.maxTokens ?? -1,
            write: (piece) => (piece ? push(piece) : undefined),
            shouldStop: () => stopped() || opts.signal?.aborted === true,
            timings: emptyTimings(),
          });
          generated = r.tokens;
        });
      } finally {
        // also when the loop was left: what the engine has not evaluated (the token sampled last, when
        // generation ended at maxTokens) goes first at the next call
        this.pending = [...input, ...generated].slice(this.engine.nPast - start);
      }
      opts.signal?.throwIfAborted();
    } finally {
      this.busy = false;
    }
  }

  /** per-layer routing statistics since the session started (empty for a dense model) */
  moeStats(): MoeLayerStats[] {
    return this.engine.moeStats();
  }

  private begin(): void {
    this.owner.checkOpen();
    if (this.busy) throw new TsmoeError("the session is busy: finish (or break out of) its generation first");
    this.busy = true;
  }
}

/**
 * Runs a producer that pushes values (and waits for each push) as an async iterable the consumer pulls
 * from: the producer goes on only when the consumer asks for the next value. When the consumer stops early,
 * `stopped()` turns true and further pushes return at once; the iteration ends when the producer does.
 */
async function* pull<T>(run: (push: (value: T) => void | Promise<void>, stopped: () => boolean) => Promise<void>): AsyncGenerator<T, void, undefined> {
  const queue: T[] = [];
  let wake: (() => void) | undefined;
  let resume: (() => void) | undefined;
  let finished = false;
  let stop = false;
  let failure: { error: unknown } | undefined;
  const push = (value: T): void | Promise<void> => {
    if (stop) return;
    queue.push(value);
    wake?.();
    return new Promise<void>((r) => (resume = r));
  };
  const done = run(push, () => stop).then(
    () => void (finished = true),
    (error: unknown) => void ((failure = { error }), (finished = true)),
  ).finally(() => wake?.());
  try {
    for (;;) {
      while (queue.length === 0 && !finished) await new Promise<void>((r) => (wake = r));
      wake = undefined;
      if (queue.length === 0) break;
      yield queue.shift() as T;
      const r = resume;
      resume = undefined;
      r?.();
    }
  } finally {
    stop = true;
    resume?.();
    await done;
  }
  if (failure) throw failure.error;
}
