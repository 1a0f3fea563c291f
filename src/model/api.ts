/**
 * The engine's public surface for commands: load a model, open a session, evaluate tokens.
 * Implemented in src/model/ (loader, graph, architectures); used by src/cli/ and src/eval/.
 */

/** `--override-kv KEY=TYPE:VALUE` */
export interface KvOverride {
  key: string;
  type: "int" | "float" | "bool" | "str";
  value: number | boolean | string;
}

/** Expert-count override and dynamic routing (see README "Expert-count override"). */
export interface MoeOptions {
  /** --moe-n-expert N: routed experts per token (undefined = the model's expert_used_count) */
  nExpert?: number;
  /** --moe-mask: soft re-routes with top-N; hard keeps the first N of the model's top-k */
  mask: "soft" | "hard";
  /** --moe-n-expert-layers: per-layer counts, layer index -> N (overrides nExpert for those layers) */
  layers?: Map<number, number>;
  /** --moe-cum-p P: fewest top-ranked candidates whose probabilities reach P of the candidates' total */
  cumP?: number;
  /** --moe-cum-p-layers: per-layer P, layer index -> P (overrides cumP for those layers) */
  layerCumP?: Map<number, number>;
  /** --moe-ser KMIN,T: keep top KMIN, then each further expert whose probability > T * top expert's */
  ser?: { kmin: number; t: number };
}

export interface LoadOptions {
  overrideKv?: KvOverride[];
  /** worker threads for matmuls (default: number of cores) */
  threads?: number;
  /**
   * routed-expert cache size in bytes: stream the experts from the file through a cache of this size
   * (default: only when the model does not fit in the memory available)
   */
  moeCache?: number;
  /** which expert leaves the cache when it is full: least often used so far (default) or least recently used */
  moeCachePolicy?: "lru" | "lfu";
  /**
   * when streaming: while a token's layer computes, read ahead the experts the next layer's router picks
   * on this layer's FFN input (default true; false reads each layer's missing experts only when it needs them)
   */
  moePrefetch?: boolean;
  /** the context size sessions will use (sizes the KV cache in the memory plan; default min(training context, 4096)) */
  nCtx?: number;
  /** called with (bytes read, total bytes) while tensor data loads */
  onProgress?: (done: number, total: number) => void;
}

/** The streamed experts' cache since the model loaded (or since resetStats). */
export interface ExpertCacheStats {
  /** expert lookups that found the expert in the cache / had to read it from the file */
  hits: number;
  misses: number;
  /** bytes read from the file, read-ahead included */
  bytesRead: number;
  /** wall time spent waiting for reads, ms (read-ahead overlaps computation: not all of its time is waited for) */
  readMs: number;
  /** experts read ahead for the next layer (LoadOptions.moePrefetch), those of them that layer used (counted in hits too), and the others */
  readAhead: number;
  readAheadUsed: number;
  readAheadWasted: number;
  /** guessed experts not read ahead because recent guesses were mostly wrong */
  readAheadSkipped: number;
}

/**
 * Per-layer routing statistics collected while a session runs: tokens and mean experts always; the rest
 * (--moe-stats) only in sessions created with SessionOptions.moeStats.
 */
export interface MoeLayerStats {
  layer: number;
  /** tokens routed through this layer */
  tokens: number;
  /** mean routed experts computed per token */
  meanExperts: number;
  /** mean fraction of the router's top-k probability mass kept (with moeStats) */
  massKept?: number;
  /** per-expert count of tokens routed to it (with moeStats) */
  load?: number[];
  /** mean entropy (nats) of the router's distribution (with moeStats) */
  entropy?: number;
}

/** Hyperparameters as llama.cpp reads them from GGUF metadata (after --override-kv). */
export interface HParams {
  arch: string;
  nLayer: number;
  nEmbd: number;
  nVocab: number;
  nCtxTrain: number;
  nHead: number;
  nHeadKv: number;
  /** per-head key / value lengths */
  nEmbdHeadK: number;
  nEmbdHeadV: number;
  /** dense FFN width (0 if none) */
  nFf: number;
  /** routed experts (0 for dense models) and experts used per token */
  nExpert: number;
  nExpertUsed: number;
  /** routed expert FFN width */
  nFfExp: number;
  rmsEps: number;
  ropeBase: number;
}

export interface Session {
  /** tokens currently in the KV cache */
  readonly nPast: number;
  readonly nCtx: number;
  /**
   * Evaluates `tokens` at positions nPast.. and appends them to the KV cache.
   * Returns raw logits: all rows [tokens.length x nVocab] when allLogits, else only the last row [nVocab].
   */
  eval(tokens: number[], opts?: { allLogits?: boolean }): Promise<Float32Array>;
  /** keeps the first n cached tokens and drops the rest */
  truncate(n: number): void;
  /** the session's expert setting (undefined: the model's own routing) */
  readonly moe: MoeOptions | undefined;
  /**
   * Changes the expert setting for the following evaluations (undefined: the model's own routing); checked
   * like createSession's. Cheap: only the router is rebuilt. The KV cache is kept as it is (tokens already
   * cached stay as the old setting computed them: truncate to recompute them) and the routing statistics
   * start over. Ignored by dense models.
   */
  setMoe(moe: MoeOptions | undefined): void;
  /** routing statistics since the session started (or since resetStats / setMoe) */
  moeStats(): MoeLayerStats[];
  resetStats(): void;
}

export interface SessionOptions {
  /** context size (default min(training context, 4096)) */
  nCtx?: number;
  /**
   * "f32" (default) or "f16", which stores the KV cache in half precision and attends like llama.cpp's
   * default CPU context (flash attention)
   */
  kvType?: "f32" | "f16";
  /**
   * with kvType "f16": the F16 vector arithmetic of the llama.cpp build to reproduce in flash attention
   * ("f32" default, "avx512fp16"; see src/kernels/flash-attention.ts)
   */
  flashLanes?: "f32" | "avx512fp16";
  /**
   * flash attention (llama.cpp's -fa): default on with kvType "f16", off with "f32". kvType "f16" without it
   * attends like ggml's CPU matmuls over an F16 cache (llama.cpp -ctk f16 -ctv f16 -fa off); kvType "f32"
   * with it is not supported (a TsmoeError).
   */
  flashAttention?: boolean;
  /**
   * expert setting (undefined: the model's own routing), checked against the model's hyperparameters
   * (a TsmoeError naming the option at fault); ignored by dense models. Changeable with Session.setMoe.
   */
  moe?: MoeOptions;
  /**
   * collect the full routing statistics of --moe-stats (router mass kept, expert load, entropy: extra work
   * per routed token); without it Session.moeStats() has only tokens and mean experts per layer
   */
  moeStats?: boolean;
}

export interface Model {
  readonly path: string;
  readonly hparams: HParams;
  /** the GGUF file's metadata (after --override-kv), for the tokenizer and chat template */
  readonly metadata: Map<string, import("../gguf/types.ts").MetaEntry>;
  /** file size in bytes and parameter count, for reports */
  readonly fileSize: number;
  readonly nParams: number;
  /** a new session with its own KV cache and expert setting; sessions of one model share its weights */
  createSession(opts?: SessionOptions): Session;
  /**
   * one line when some weight tensors run on the slower TypeScript reference kernels (how many, their
   * bytes, why); undefined when every one has a WASM kernel
   */
  readonly slowKernels: string | undefined;
  /** when the routed experts are streamed from the file (LoadOptions.moeCache): the cache and its statistics */
  readonly streaming: { describe(): string; stats(): ExpertCacheStats; resetStats(): void } | undefined;
  /** one line saying that (and why) the experts are streamed; undefined when the model is resident */
  readonly memoryPlan: string | undefined;
  /** releases worker threads */
  dispose(): Promise<void>;
}
