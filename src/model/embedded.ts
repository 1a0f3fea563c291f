/** The embedded default model (models/ in the package root; the same path from src/model/ and dist/model/). */
import { fileURLToPath } from "node:url";

export const EMBEDDED_MODEL = fileURLToPath(new URL("../../models/tiny-moe-32x8-q8_0.gguf", import.meta.url));
