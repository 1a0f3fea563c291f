/** The package's version, read from package.json (one level up from src/version.ts and from dist/version.js alike). */
import { readFileSync } from "node:fs";

export const VERSION: string = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;
