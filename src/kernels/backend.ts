/**
 * Where matrix products run. The model code calls `backend.matmul` for every weight product, so the
 * serial backend (this file) and the worker-thread pool (src/pool/) are interchangeable.
 */
import { matmul, type Weight } from "./matmul.ts";

export interface MatmulBackend {
  readonly nThreads: number;
  /** out[t * w.ne1 + r] = dot(row r of w, row t of x), for t < nTokens, r < w.ne1 */
  matmul(w: Weight, x: Float32Array, nTokens: number, out: Float32Array): void;
  /** a float buffer that worker threads can read and write (SharedArrayBuffer-backed); use it for activations */
  allocF32(n: number): Float32Array;
  dispose(): Promise<void>;
}

/** Runs every product on the calling thread. */
export class SerialBackend implements MatmulBackend {
  readonly nThreads = 1;
  matmul(w: Weight, x: Float32Array, nTokens: number, out: Float32Array): void {
    matmul(w, x, nTokens, out);
  }
  allocF32(n: number): Float32Array {
    return new Float32Array(new SharedArrayBuffer(n * 4));
  }
  async dispose(): Promise<void> {}
}
