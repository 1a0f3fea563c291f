/**
 * llama.cpp's KL-divergence base file (`perplexity --kl-divergence-base FILE`), read and written chunk
 * by chunk. Layout, little-endian, no padding:
 *   "_logits_" | int32 n_ctx | int32 n_vocab | int32 n_chunk | n_chunk*n_ctx int32 tokens |
 *   per chunk, per scored position (n_ctx - 1 - n_ctx/2 of them) one record of 2*ceil(n_vocab/2) + 4 uint16:
 *   float32 scale, float32 min_log_prob, then one uint16 q per vocabulary entry (log p = scale*q + min_log_prob).
 * The writer quantises log-probabilities over a range of at most 16 nats below the most likely token.
 */
import { closeSync, fstatSync, openSync, readSync, writeSync } from "node:fs";
import { TsmoeError } from "../errors.ts";

export const KLD_MAGIC = "_logits_";
const HEADER_BYTES = 8 + 3 * 4;

/** uint16 units per scored position */
export function recordLength(nVocab: number): number {
  return 2 * Math.ceil(nVocab / 2) + 4;
}

/** positions scored per chunk: n_ctx/2 .. n_ctx-2 (each predicts the token after it) */
export function scoredPerChunk(nCtx: number): number {
  return nCtx - 1 - Math.floor(nCtx / 2);
}

export interface KldHeader {
  nCtx: number;
  nVocab: number;
  nChunk: number;
  /** n_chunk * n_ctx tokens as evaluated (before the BOS replacement of each chunk's first token) */
  tokens: Int32Array;
}

/** Rounds to the nearest integer, ties to even, as llama.cpp's nearest_int (float magic-number trick). */
function nearestInt(v: number): number {
  return Math.fround(v + 12582912) - 12582912;
}

/**
 * Quantises one row of logits into a record (`out` has recordLength(nVocab) entries) and returns the
 * negative log-likelihood of `tok`, computed in float32 like llama.cpp.
 */
export function encodeLogProbs(logits: Float32Array, nVocab: number, out: Uint16Array, tok: number): number {
  let maxLogit = logits[0];
  let minLogit = logits[0];
  for (let i = 1; i < nVocab; i++) {
    const v = logits[i];
    if (v > maxLogit) maxLogit = v;
    if (v < minLogit) minLogit = v;
  }
  minLogit = Math.max(minLogit, Math.fround(maxLogit - 16));
  let sumExp = 0;
  for (let i = 0; i < nVocab; i++) sumExp += Math.fround(Math.exp(Math.fround(logits[i] - maxLogit)));
  const logSumExp = Math.fround(Math.log(sumExp));
  const minLogProb = Math.fround(Math.fround(minLogit - maxLogit) - logSumExp);
  const scale = Math.fround(Math.fround(maxLogit - minLogit) / 65535);
  const head = new Float32Array(out.buffer, out.byteOffset, 2);
  head[0] = scale;
  head[1] = minLogProb;
  const q = out.subarray(4, 4 + nVocab);
  if (scale !== 0) {
    const invScale = Math.fround(1 / scale);
    for (let i = 0; i < nVocab; i++) {
      q[i] = logits[i] > minLogit ? nearestInt(Math.fround(invScale * Math.fround(logits[i] - minLogit))) : 0;
    }
  } else {
    q.fill(0);
  }
  out.fill(0, 4 + nVocab);
  return Math.fround(Math.fround(maxLogit + logSumExp) - logits[tok]);
}

/** The decoded log-probability of entry i of a record. */
export function decodeLogProb(record: Uint16Array, i: number): number {
  const head = new Float32Array(record.buffer, record.byteOffset, 2);
  return Math.fround(Math.fround(head[0] * record[4 + i]) + head[1]);
}

export class KldBaseWriter {
  private readonly fd: number;
  private chunksWritten = 0;
  readonly recordLen: number;
  readonly nScored: number;

  constructor(
    readonly path: string,
    readonly header: KldHeader,
  ) {
    const { nCtx, nVocab, nChunk, tokens } = header;
    if (tokens.length !== nCtx * nChunk) throw new TsmoeError(`${path}: expected ${nCtx * nChunk} tokens, got ${tokens.length}`);
    this.recordLen = recordLength(nVocab);
    this.nScored = scoredPerChunk(nCtx);
    try {
      this.fd = openSync(path, "w");
    } catch (e) {
      throw new TsmoeError(`cannot write ${path}: ${(e as Error).message}`);
    }
    const head = Buffer.alloc(HEADER_BYTES);
    head.write(KLD_MAGIC, 0, "latin1");
    head.writeInt32LE(nCtx, 8);
    head.writeInt32LE(nVocab, 12);
    head.writeInt32LE(nChunk, 16);
    writeSync(this.fd, head);
    writeSync(this.fd, Buffer.from(tokens.buffer, tokens.byteOffset, tokens.byteLength));
  }

  /** a buffer for one chunk's records (nScored records) */
  allocChunk(): Uint16Array {
    return new Uint16Array(this.nScored * this.recordLen);
  }

  writeChunk(records: Uint16Array): void {
    if (records.length !== this.nScored * this.recordLen) throw new TsmoeError("KLD chunk has the wrong size");
    if (this.chunksWritten >= this.header.nChunk) throw new TsmoeError("KLD file: too many chunks written");
    writeSync(this.fd, Buffer.from(records.buffer, records.byteOffset, records.byteLength));
    this.chunksWritten++;
  }

  close(): void {
    closeSync(this.fd);
  }
}

export class KldBaseReader {
  readonly header: KldHeader;
  readonly recordLen: number;
  readonly nScored: number;
  private readonly fd: number;
  private readonly dataStart: number;

  constructor(readonly path: string) {
    try {
      this.fd = openSync(path, "r");
    } catch (e) {
      throw new TsmoeError(`cannot read ${path}: ${(e as Error).message}`);
    }
    const size = fstatSync(this.fd).size;
    const head = Buffer.alloc(HEADER_BYTES);
    if (readSync(this.fd, head, 0, HEADER_BYTES, 0) < HEADER_BYTES || head.toString("latin1", 0, 8) !== KLD_MAGIC) {
      this.close();
      throw new TsmoeError(`${path} does not look like a file containing log-probabilities (no _logits_ header)`);
    }
    const nCtx = head.readInt32LE(8);
    const nVocab = head.readInt32LE(12);
    const nChunk = head.readInt32LE(16);
    if (nCtx < 3 || nVocab < 1 || nChunk < 1) {
      this.close();
      throw new TsmoeError(`${path}: bad header (n_ctx ${nCtx}, n_vocab ${nVocab}, n_chunk ${nChunk})`);
    }
    this.recordLen = recordLength(nVocab);
    this.nScored = scoredPerChunk(nCtx);
    this.dataStart = HEADER_BYTES + nCtx * nChunk * 4;
    const expected = this.dataStart + nChunk * this.nScored * this.recordLen * 2;
    if (size < expected) {
      this.close();
      throw new TsmoeError(`${path}: truncated (${size} bytes, the header announces ${expected})`);
    }
    const tokens = new Int32Array(nCtx * nChunk);
    readSync(this.fd, Buffer.from(tokens.buffer), 0, tokens.byteLength, HEADER_BYTES);
    this.header = { nCtx, nVocab, nChunk, tokens };
  }

  /** the records of chunk i: nScored records of recordLen uint16 */
  readChunk(i: number, into?: Uint16Array): Uint16Array {
    const n = this.nScored * this.recordLen;
    const out = into ?? new Uint16Array(n);
    const bytes = n * 2;
    const pos = this.dataStart + i * bytes;
    const got = readSync(this.fd, Buffer.from(out.buffer, out.byteOffset, bytes), 0, bytes, pos);
    if (got !== bytes) throw new TsmoeError(`${this.path}: failed reading log-probs for chunk ${i}`);
    return out;
  }

  close(): void {
    try {
      closeSync(this.fd);
    } catch {
      /* already closed */
    }
  }
}
