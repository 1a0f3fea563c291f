// Entry file of a pool worker thread (piscina loads it): worker threads start without the main thread's
// TypeScript loader, so register tsx here, then hand piscina the TypeScript worker's task function.
import { register } from "tsx/esm/api";

register();
const worker = await import("./worker.ts");
export default worker.default;
