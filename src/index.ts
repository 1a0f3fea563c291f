/**
 * tsmoe as a library (the package's entry point):
 *
 *   const model = await loadModel();                        // the embedded model, or loadModel("x.gguf")
 *   const session = model.createSession({ moe: { nExpert: 4 } });
 *   for await (const piece of session.generate("Once upon a time", { maxTokens: 32 })) write(piece);
 *   await model.dispose();
 *
 * Errors are TsmoeError (one-line messages); bad options are its subclass UsageError, with the CLI's texts.
 */
export { loadModel, Model, type LoadModelOptions, type ModelInfo, type SessionOptions } from "./lib/model.ts";
export { Session, type GenerateOptions } from "./lib/session.ts";
export type { MoeSettings } from "./lib/moe.ts";
export type { MoeLayerStats } from "./model/api.ts";
export { EMBEDDED_MODEL } from "./model/embedded.ts";
export { GgufError, TsmoeError, UsageError } from "./errors.ts";
export { VERSION } from "./version.ts";
