/**
 * The library's model: `loadModel(path?, { threads })` loads a GGUF file (default: the embedded model) with
 * the engine's loader (src/model/load.ts) and its tokenizer (src/tokenizer/); sessions get their own KV cache
 * and MoE routing.
 */
import { existsSync } from "node:fs";
import { TsmoeError } from "../errors.ts";
import type { DetokenizeOptions, TokenizeOptions } from "../tokenizer/tokenizer.ts";
import { Tokenizer } from "../tokenizer/tokenizer.ts";
import type { Model as EngineModel } from "../model/api.ts";
import { EMBEDDED_MODEL } from "../model/embedded.ts";
import { loadModel as loadEngineModel } from "../model/load.ts";
import { resolveMoe, type MoeSettings } from "./moe.ts";
import { Session, type SessionOwner } from "./session.ts";

export interface LoadModelOptions {
  /** threads for matrix products (default: one per core) */
  threads?: number;
}

export interface SessionOptions {
  /** MoE routing of this session (default: the model's own); checked as the CLI checks its flags */
  moe?: MoeSettings;
  /** context size in tokens (default: the model's training context, at most 4096) */
  nCtx?: number;
}

export interface ModelInfo {
  path: string;
  /** general.name, or "" */
  name: string;
  /** GGUF architecture, e.g. "qwen3moe" */
  arch: string;
  fileSize: number;
  nParams: number;
  nLayer: number;
  nEmbd: number;
  nVocab: number;
  nCtxTrain: number;
  /** routed experts (0 for a dense model) and experts used per token */
  nExpert: number;
  nExpertUsed: number;
}

export class Model implements SessionOwner {
  readonly info: ModelInfo;
  private disposed = false;

  /** @internal use loadModel */
  constructor(
    private readonly engine: EngineModel,
    readonly tokenizer: Tokenizer,
  ) {
    const hp = engine.hparams;
    const name = engine.metadata.get("general.name")?.value;
    this.info = {
      path: engine.path,
      name: typeof name === "string" ? name : "",
      arch: hp.arch,
      fileSize: engine.fileSize,
      nParams: engine.nParams,
      nLayer: hp.nLayer,
      nEmbd: hp.nEmbd,
      nVocab: hp.nVocab,
      nCtxTrain: hp.nCtxTrain,
      nExpert: hp.nExpert,
      nExpertUsed: hp.nExpertUsed,
    };
  }

  /** Text to token ids (with the model's BOS/EOS unless `addSpecial: false`). */
  tokenize(text: string, opts: TokenizeOptions = {}): number[] {
    this.checkOpen();
    return this.tokenizer.tokenize(text, opts);
  }

  /** Token ids to text. */
  detokenize(ids: readonly number[], opts: DetokenizeOptions = {}): string {
    this.checkOpen();
    return this.tokenizer.detokenize(ids, opts);
  }

  /** A new session (its own KV cache), with the MoE routing given (bad values throw a UsageError). */
  createSession(opts: SessionOptions = {}): Session {
    this.checkOpen();
    const moe = resolveMoe(opts.moe, this.engine.hparams);
    return new Session(this, this.engine.createSession({ nCtx: opts.nCtx, moe }));
  }

  /** Stops the worker threads and frees the weights; the model and its sessions cannot be used after. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.engine.dispose();
  }

  checkOpen(): void {
    if (this.disposed) throw new TsmoeError("the model has been disposed");
  }
}

/** Loads a GGUF model (default: the embedded tiny MoE model). */
export async function loadModel(path: string = EMBEDDED_MODEL, opts: LoadModelOptions = {}): Promise<Model> {
  if (!existsSync(path)) throw new TsmoeError(path === EMBEDDED_MODEL ? `the embedded model ${path} is missing` : `model file not found: ${path}`);
  const engine = await loadEngineModel(path, { threads: opts.threads });
  try {
    return new Model(engine, Tokenizer.fromMetadata(engine.metadata));
  } catch (e) {
    await engine.dispose();
    throw e;
  }
}
