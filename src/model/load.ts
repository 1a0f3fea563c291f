/**
 * Loading a GGUF model and running it: `loadModel(path, opts)` reads the file, applies --override-kv,
 * reads the hyperparameters and tensors of its architecture (src/model/archs/), and returns a Model whose
 * sessions (each with its KV cache and expert setting) evaluate tokens through the shared forward pass
 * (src/model/graph.ts).
 */
import { TsmoeError } from "../errors.ts";
import { openGguf } from "../gguf/reader.ts";
import { freeTensorBytes, weightAllocator } from "../kernels/wasm/memory.ts";
import { metaArch } from "../gguf/meta.ts";
import type { GgufFile } from "../gguf/types.ts";
import type { MatmulBackend } from "../kernels/backend.ts";
import { createPoolBackend, defaultThreadCount } from "../pool/backend.ts";
import type { LoadOptions, Model, MoeLayerStats, MoeOptions, Session, SessionOptions } from "./api.ts";
import { getArch } from "./archs/index.ts";
import { KvCache, type KvCacheOptions } from "./attention.ts";
import { FLASH_F16_LANES } from "../kernels/flash-attention.ts";
import { forwardBatch, LayerGraph, type Arch } from "./graph.ts";
import { applyKvOverrides, MetaReader, readCommonHParams, type ModelHParams } from "./hparams.ts";
import { createRouter, type Router } from "./moe.ts";
import { checkMoeOptions } from "./moe-check.ts";
import { RoutingStats } from "./moe-stats.ts";
import type { RouterConfig } from "./moe-types.ts";
import { TensorSource, type ModelWeights } from "./weights.ts";
import { formatReferenceKernels, referenceKernels } from "./kernel-report.ts";
import { ExpertCache, MEMORY_MARGIN, memoryAvailable, slotBytesFor, STREAMED_TENSOR, type LayerExpertTensors } from "./expert-cache.ts";
import { formatBytes } from "../gguf/summary.ts";
import type { OpenedGguf } from "../gguf/reader.ts";

/** Tokens evaluated per forward pass (llama.cpp's n_ubatch); longer evals are split. */
export const MAX_BATCH = 512;
/** Context size of a session when none is asked for (capped by the model's training context). */
export const DEFAULT_CTX = 4096;

/** The parts of a loaded model the forward pass needs (also usable without a GGUF file, e.g. in tests). */
export interface LoadedModel {
  arch: Arch;
  hparams: ModelHParams;
  weights: ModelWeights;
  routerConfig?: RouterConfig;
}

/**
 * The model's architecture and hyperparameters (the common ones and its architecture's, one typed record),
 * read once from a parsed GGUF file's metadata and tensor shapes (after --override-kv; no tensor data).
 */
export function readModelHParams(file: GgufFile): { arch: Arch; hparams: ModelHParams } {
  const archName = metaArch(file);
  const arch = getArch(archName);
  const tok = file.tensors.get("token_embd.weight");
  if (!tok) throw new TsmoeError(`${file.path}: missing tensor 'token_embd.weight'`);
  const common = { ...readCommonHParams(file, archName, arch.ropeType), nVocab: tok.shape[1] ?? 1 };
  return { arch, hparams: arch.hparams(new MetaReader(file, archName), common) };
}

/** Reads the weights of a parsed GGUF file (after --override-kv), given its hyperparameters (read if not). */
export function buildModel(file: GgufFile, read = readModelHParams(file)): LoadedModel {
  const { arch, hparams: hp } = read;
  const archName = hp.arch;
  const weights = arch.tensors(new TensorSource(file), hp);
  const routerConfig = hp.nExpert > 0 ? arch.router?.(hp) : undefined;
  if (hp.nExpert > 0 && !routerConfig) throw new TsmoeError(`${archName}: mixture-of-experts models of this architecture are not supported`);
  return { arch, hparams: hp, weights, routerConfig };
}

/**
 * A router for the expert setting `moe` (checked against the model), watched by the --moe-stats statistics
 * when `stats`; undefined for a dense model.
 */
function sessionRouter(m: LoadedModel, moe: MoeOptions | undefined, stats: boolean): Router | undefined {
  if (!m.routerConfig) return undefined;
  return createRouter(checkMoeOptions(moe, m.hparams), m.hparams.nLayer, stats ? new RoutingStats() : undefined);
}

class ModelSession implements Session {
  private pos = 0;
  private readonly graph: LayerGraph;
  /** the session's KV cache */
  readonly cache: KvCache;
  private moeOpts: MoeOptions | undefined;
  private logitsBuf: Float32Array;

  constructor(
    private readonly m: LoadedModel,
    private readonly backend: MatmulBackend,
    moe: MoeOptions | undefined,
    readonly nCtx: number,
    kv: KvCacheOptions,
    private readonly withStats: boolean,
  ) {
    const hp = m.hparams;
    const router = sessionRouter(m, moe, withStats);
    this.moeOpts = moe;
    const shape = { nHead: hp.nHead, nHeadKv: hp.nHeadKv, headDimK: hp.nEmbdHeadK, headDimV: hp.nEmbdHeadV, scale: 1 };
    const cache = new KvCache(hp.nLayer, nCtx, shape, backend.memory, kv);
    this.cache = cache;
    this.graph = new LayerGraph(hp, backend, cache, router, m.routerConfig, m.weights.ropeFreqs);
    this.logitsBuf = backend.allocF32(hp.nVocab);
  }

  get moe(): MoeOptions | undefined {
    return this.moeOpts;
  }

  setMoe(moe: MoeOptions | undefined): void {
    this.graph.router = sessionRouter(this.m, moe, this.withStats);
    this.moeOpts = moe;
  }

  get nPast(): number {
    return this.pos;
  }

  async eval(tokens: number[], opts: { allLogits?: boolean } = {}): Promise<Float32Array> {
    const hp = this.m.hparams;
    if (tokens.length === 0) throw new TsmoeError("eval: no tokens to evaluate");
    if (this.pos + tokens.length > this.nCtx)
      throw new TsmoeError(`context is full: ${this.pos} + ${tokens.length} tokens exceed the context size ${this.nCtx}`);
    for (const t of tokens)
      if (!Number.isInteger(t) || t < 0 || t >= hp.nVocab) throw new TsmoeError(`token id ${t} is outside the vocabulary (0..${hp.nVocab - 1})`);
    const all = opts.allLogits ?? false;
    const result = new Float32Array((all ? tokens.length : 1) * hp.nVocab);
    for (let s = 0; s < tokens.length; s += MAX_BATCH) {
      const batch = tokens.slice(s, s + MAX_BATCH);
      const isLast = s + batch.length === tokens.length;
      const rows = all ? batch.length : 1;
      if (this.logitsBuf.length < rows * hp.nVocab) this.logitsBuf = this.backend.allocF32(rows * hp.nVocab);
      const logits = forwardBatch(this.m.arch, this.m.weights, this.graph, batch, this.pos, all, this.logitsBuf);
      this.pos += batch.length;
      if (all) result.set(logits, s * hp.nVocab);
      else if (isLast) result.set(logits);
    }
    return result;
  }

  truncate(n: number): void {
    if (!Number.isInteger(n) || n < 0) throw new TsmoeError(`truncate: invalid length ${n}`);
    this.pos = Math.min(this.pos, n);
  }

  moeStats(): MoeLayerStats[] {
    return this.graph.router?.stats() ?? [];
  }

  resetStats(): void {
    this.graph.router?.resetStats();
  }
}

class LoadedGgufModel implements Model {
  private disposed = false;
  /** one line when some weights run on the reference kernels (see ./kernel-report.ts) */
  readonly slowKernels: string | undefined;
  constructor(
    readonly path: string,
    private readonly file: GgufFile,
    private readonly m: LoadedModel,
    private readonly backend: MatmulBackend,
    /** whether dispose() stops the backend (false when the caller handed it in) */
    private readonly ownsBackend: boolean,
    /** the routed experts' cache when they are streamed from the file */
    readonly streaming: ExpertCache | undefined,
    /** one line saying the experts are streamed and through how large a cache */
    readonly memoryPlan: string | undefined,
  ) {
    this.slowKernels = formatReferenceKernels(referenceKernels(file.tensors, true));
  }

  get hparams(): ModelHParams {
    return this.m.hparams;
  }
  get metadata() {
    return this.file.metadata;
  }
  get fileSize(): number {
    return this.file.fileSize;
  }
  get nParams(): number {
    let n = 0;
    for (const t of this.file.tensors.values()) n += t.nElements;
    return n;
  }

  createSession(opts: SessionOptions = {}): Session {
    const nCtx = opts.nCtx ?? Math.min(this.m.hparams.nCtxTrain || DEFAULT_CTX, DEFAULT_CTX);
    if (!Number.isInteger(nCtx) || nCtx <= 0) throw new TsmoeError(`invalid context size ${nCtx}`);
    if (opts.kvType !== undefined && opts.kvType !== "f32" && opts.kvType !== "f16")
      throw new TsmoeError(`invalid KV cache type '${String(opts.kvType)}' (expected f32 or f16)`);
    if (opts.flashLanes !== undefined && !FLASH_F16_LANES.includes(opts.flashLanes))
      throw new TsmoeError(`invalid flash-attention lanes '${String(opts.flashLanes)}' (expected ${FLASH_F16_LANES.join(" or ")})`);
    const f16 = opts.kvType === "f16";
    if (opts.flashAttention && !f16) throw new TsmoeError("flash attention needs an F16 KV cache (kvType f16): an F32 cache with flash attention is not supported");
    const kv = { kvType: opts.kvType, flash: opts.flashAttention ?? f16, flashLanes: opts.flashLanes };
    return new ModelSession(this.m, this.backend, opts.moe, nCtx, kv, opts.moeStats === true);
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    if (this.ownsBackend) await this.backend.dispose();
    await this.streaming?.dispose();
    releaseTensors(this.file);
  }
}

/** Gives the tensors' space back to the WASM memory (a model must not be used after this). */
function releaseTensors(file: GgufFile): void {
  for (const t of file.tensors.values()) freeTensorBytes(t.data);
}

/**
 * What a GGUF header says about the model, for checks before its tensors load (after --override-kv; the
 * architecture's own layer count, e.g. without NextN layers, as the loaded model has it).
 */
export type HeaderHParams = Pick<ModelHParams, "arch" | "nExpert" | "nExpertUsed" | "nLayer">;

/**
 * Reads the header once, checks the architecture (and runs opts.onHeader) before the tensor data is read,
 * so a bad file or option fails before a long load.
 */
export async function loadModel(path: string, opts: LoadModelOptions = {}): Promise<Model> {
  const opened = await openGguf(path);
  const file = applyKvOverrides(opened.file, opts.overrideKv);
  const read = readModelHParams(file);
  const hp = read.hparams;
  opts.onHeader?.({ arch: hp.arch, nExpert: hp.nExpert, nExpertUsed: hp.nExpertUsed, nLayer: hp.nLayer });
  // bad expert settings fail before the (possibly long) load
  if (hp.nExpert > 0) for (const moe of opts.checkMoe ?? []) checkMoeOptions(moe, hp);
  const plan = planMemory(opened, file, opts, memoryAvailable, hp);
  try {
    // where each weight lives: the WebAssembly memories' allocator, given the model's size; streamed
    // experts stay in the file until a token needs them
    const alloc = weightAllocator(opened.dataBytes - (plan?.expertBytes ?? 0) + (plan?.cacheBytes ?? 0)).alloc;
    opened.readTensors(opts.onProgress, alloc, plan ? (name) => STREAMED_TENSOR.test(name) : undefined);
    const m = buildModel(file, read);
    let cache: ExpertCache | undefined;
    if (plan) {
      cache = new ExpertCache(plan.cacheBytes, expertTensors(opened, file), m.hparams.nExpert, alloc, opts.moeCachePolicy, 4, opts.moePrefetch ?? true);
      for (const [il, L] of m.weights.layers.entries()) if (L.moe) cache.attach(il, L.moe);
    }
    const backend = opts.backend ?? (await createPoolBackend(opts.threads ?? defaultThreadCount()));
    cache?.useBackend(backend);
    const line = plan && `routed experts streamed from the file through a cache of ${cache!.describe()}: model ${formatBytes(opened.dataBytes)}, ${plan.why}`;
    return new LoadedGgufModel(path, file, m, backend, opts.backend === undefined, cache, line);
  } catch (err) {
    releaseTensors(file);
    throw err;
  }
}

/** Each MoE layer's expert tensors and where they are in the file. */
function expertTensors(opened: OpenedGguf, file: GgufFile): Map<number, LayerExpertTensors> {
  const layers = new Map<number, Partial<LayerExpertTensors>>();
  for (const [name, entry] of file.tensors) {
    const m = STREAMED_TENSOR.exec(name);
    if (!m) continue;
    const il = Number(m[1]);
    const l = layers.get(il) ?? {};
    l[m[2] as "gate" | "up" | "down"] = { entry, ...opened.locations.get(name)! };
    layers.set(il, l);
  }
  for (const [il, l] of layers)
    if (!l.gate || !l.up || !l.down) throw new TsmoeError(`${file.path}: layer ${il} lacks one of its expert tensors ffn_{gate,up,down}_exps`);
  return layers as Map<number, LayerExpertTensors>;
}

/**
 * Whether the routed experts are streamed, and through how large a cache: with --moe-cache SIZE, always;
 * by default, when the whole model (plus the KV cache of a full context and a margin for Node itself)
 * does not fit in the memory available. Fails when even the non-expert weights, the KV cache and the
 * experts of one layer do not fit.
 */
export function planMemory(
  opened: OpenedGguf,
  file: GgufFile,
  opts: LoadModelOptions,
  available = memoryAvailable,
  hp: ModelHParams = readModelHParams(file).hparams,
): { cacheBytes: number; expertBytes: number; why: string } | undefined {
  if (hp.nExpert === 0) return undefined;
  let expertBytes = 0;
  // one expert's three matrices per layer in a cache slot
  const partsOfLayer = new Map<string, number[]>();
  for (const [name, t] of file.tensors) {
    const m = STREAMED_TENSOR.exec(name);
    if (!m) continue;
    expertBytes += t.nBytes;
    partsOfLayer.set(m[1]!, [...(partsOfLayer.get(m[1]!) ?? []), t.nBytes / hp.nExpert]);
  }
  if (expertBytes === 0) return undefined;
  const slotOfLayer = [...partsOfLayer.values()].map(slotBytesFor);
  const slotBytes = Math.max(...slotOfLayer);
  const nCtx = opts.nCtx ?? Math.min(hp.nCtxTrain || DEFAULT_CTX, DEFAULT_CTX);
  const kvBytes = 2 * hp.nLayer * nCtx * hp.nHeadKv * Math.max(hp.nEmbdHeadK, hp.nEmbdHeadV) * 4;
  const nonExpert = opened.dataBytes - expertBytes;
  const minCache = hp.nExpert * slotBytes;
  let cacheBytes: number;
  let why: string;
  if (opts.moeCache !== undefined) {
    cacheBytes = opts.moeCache;
    why = "--moe-cache";
    if (cacheBytes < minCache)
      throw new TsmoeError(`--moe-cache ${formatBytes(cacheBytes)} is too small: the ${hp.nExpert} experts of one layer need ${formatBytes(minCache)}`);
  } else {
    const avail = available();
    if (opened.dataBytes + kvBytes + MEMORY_MARGIN <= avail) return undefined;
    cacheBytes = avail - nonExpert - kvBytes - MEMORY_MARGIN;
    why = `more than the ${formatBytes(avail)} of memory available`;
    if (cacheBytes < minCache)
      throw new TsmoeError(
        `not enough memory: the model needs ${formatBytes(nonExpert)} for its non-expert weights + ${formatBytes(kvBytes)} KV cache (-c ${nCtx}) + ${formatBytes(minCache)} for the experts of one layer + ${formatBytes(MEMORY_MARGIN)} margin; ${formatBytes(avail)} available`,
      );
  }
  // more cache than all the experts take is never used
  cacheBytes = Math.min(cacheBytes, slotOfLayer.length * hp.nExpert * slotBytes);
  return { cacheBytes, expertBytes, why };
}

export interface LoadModelOptions extends LoadOptions {
  /** runs after the header is read (a throw stops the load before the tensor data is read) */
  onHeader?: (hp: HeaderHParams) => void;
  /**
   * where products, attention and KV caches run (default: a worker pool of `threads`); a backend handed in
   * stays the caller's (Model.dispose does not stop it)
   */
  backend?: MatmulBackend;
  /** expert settings to check against the header's hyperparameters before the tensor data is read */
  checkMoe?: (MoeOptions | undefined)[];
}
