/**
 * Loading a model for a command: a hand-written progress bar on stderr (hidden for the first second, so fast
 * loads print nothing, and drawn only on a terminal, so logs and pipes stay clean), the embedded default
 * model's path, and `openModel` (load + progress + MoE option checks).
 */
import { existsSync } from "node:fs";
import { Option } from "commander";
import { TsmoeError } from "../errors.ts";
import type { KvOverride, Model, MoeOptions } from "../model/api.ts";
import { EMBEDDED_MODEL } from "../model/embedded.ts";
import { loadModel } from "../model/load.ts";
import { denseModelWarning } from "../model/moe-check.ts";

export interface Progress {
  /** (bytes done, bytes total): pass as LoadOptions.onProgress */
  update: (done: number, total: number) => void;
  /** clears the bar */
  finish: () => void;
}

export function loadProgress(label: string, opts: { delayMs?: number; stream?: NodeJS.WriteStream } = {}): Progress {
  const stream = opts.stream ?? process.stderr;
  const delay = opts.delayMs ?? 1000;
  const start = performance.now();
  const enabled = Boolean(stream.isTTY);
  let shown = false;
  let lastDraw = 0;
  let done = 0;
  let total = 0;
  const draw = () => {
    const now = performance.now();
    if (now - start < delay) return;
    lastDraw = now;
    shown = true;
    stream.write(`\r${renderBar(label, done, total, stream.columns || 80)}`);
  };
  // redraws while the event loop is free (loading can go on after the bytes are read)
  const timer = enabled ? setInterval(draw, 250) : undefined;
  timer?.unref();
  return {
    update(d, t) {
      done = d;
      total = t;
      if (enabled && performance.now() - lastDraw >= 50) draw();
    },
    finish() {
      if (timer) clearInterval(timer);
      if (shown) stream.write(`\r${" ".repeat(Math.max(0, (stream.columns || 80) - 1))}\r`);
      shown = false;
    },
  };
}

/** `label [#####.....]  42% 12.3/29.1 MiB`, fitted to `columns` */
export function renderBar(label: string, done: number, total: number, columns = 80): string {
  const frac = total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
  const mib = (b: number) => (b / 1048576).toFixed(1);
  const tail = ` ${String(Math.round(frac * 100)).padStart(3)}% ${mib(done)}/${mib(total)} MiB`;
  const width = Math.max(10, Math.min(40, columns - label.length - tail.length - 4));
  const filled = Math.round(frac * width);
  return `${label} [${"#".repeat(filled)}${".".repeat(width - filled)}]${tail}`;
}

/** The embedded model that commands use without -m (resolved against the package root). */
export const DEFAULT_MODEL = EMBEDDED_MODEL;

/** `-m, --model <file>`, defaulting to the embedded model. */
export function modelOption(): Option {
  return new Option("-m, --model <file>", "GGUF model").default(DEFAULT_MODEL, "the embedded models/tiny-moe-32x8-q8_0.gguf");
}

export interface OpenModelOptions {
  /** the command's expert setting (checked against the model; returned for createSession) */
  moe?: MoeOptions;
  /** more expert settings to check before the tensors load (bench's grid) */
  checkMoe?: (MoeOptions | undefined)[];
  overrideKv?: KvOverride[];
  threads?: number;
  /** --moe-stats was given (warned about on a dense model) */
  stats?: boolean;
  /** --moe-cache SIZE (bytes) */
  moeCache?: number;
  /** --moe-prefetch on|off */
  moePrefetch?: boolean;
  /** -c: the context size sessions will use (sizes the memory plan) */
  nCtx?: number;
}

/**
 * Loads a model for a command: checks the file exists and shows the progress bar while loading; the loader
 * checks the MoE options against the model's header before the tensors load (src/model/moe-check.ts). On a
 * dense model the options are ignored with a warning. Returns the model, the load time in milliseconds and
 * the expert setting to create sessions with.
 */
export async function openModel(path: string, opts: OpenModelOptions = {}): Promise<{ model: Model; loadMs: number; moe: MoeOptions | undefined }> {
  if (!existsSync(path))
    throw new TsmoeError(path === DEFAULT_MODEL ? `the embedded model ${path} is missing: pass a model with -m` : `model file not found: ${path}`);
  const t0 = performance.now();
  const bar = loadProgress("loading model");
  let model: Model;
  try {
    model = await loadModel(path, {
      overrideKv: opts.overrideKv,
      threads: opts.threads,
      moeCache: opts.moeCache,
      moePrefetch: opts.moePrefetch,
      nCtx: opts.nCtx,
      onProgress: bar.update,
      checkMoe: [opts.moe, ...(opts.checkMoe ?? [])],
    });
  } finally {
    bar.finish();
  }
  if (model.slowKernels) process.stderr.write(`warning: ${model.slowKernels}\n`);
  if (model.memoryPlan) process.stderr.write(`${model.memoryPlan}\n`);
  const dense = model.hparams.nExpert === 0;
  if (dense && (opts.moe !== undefined || opts.stats || opts.checkMoe?.some((m) => m !== undefined)))
    process.stderr.write(`warning: ${denseModelWarning(model.hparams.arch)}\n`);
  return { model, loadMs: performance.now() - t0, moe: dense ? undefined : opts.moe };
}
