/**
 * The merge loop shared by the SentencePiece and BPE tokenizers (llama.cpp's llm_tokenizer_spm/bpe sessions):
 * the text starts as one symbol per character; the adjacent pair with the smallest priority (leftmost on
 * ties) is merged into its left symbol, and the new neighbouring pairs are queued, until no pair is left.
 */

/** Symbols after merging: symbol i covers text[start[i], start[i] + len[i]); len 0 = merged away. */
export interface Symbols {
  start: number[];
  len: number[];
  /** next symbol in text order, -1 at the end */
  next: number[];
}

/**
 * Merges `text` (non-empty). `priority(leftStart, leftLen, rightLen)` gives the priority of merging the two
 * adjacent pieces text[leftStart, +leftLen) and the following rightLen units, or undefined if they cannot merge.
 */
export function mergeSymbols(text: string, priority: (leftStart: number, leftLen: number, rightLen: number) => number | undefined): Symbols {
  const start: number[] = [];
  const len: number[] = [];
  const prev: number[] = [];
  const next: number[] = [];
  for (let i = 0; i < text.length; ) {
    const c = text.charCodeAt(i);
    const n = c >= 0xd800 && c <= 0xdbff && i + 1 < text.length ? 2 : 1;
    start.push(i);
    len.push(n);
    prev.push(start.length - 2);
    i += n;
    next.push(i === text.length ? -1 : start.length);
  }
  const queue = new PairQueue();
  const tryAdd = (left: number, right: number) => {
    if (left === -1 || right === -1) return;
    const p = priority(start[left], len[left], len[right]);
    if (p !== undefined) queue.push(p, left, right, len[left] + len[right]);
  };
  for (let i = 1; i < start.length; i++) tryAdd(i - 1, i);
  for (let e = queue.pop(); e >= 0; e = queue.pop()) {
    const left = queue.left(e);
    const right = queue.right(e);
    // skip pairs that changed since they were queued (symbols only grow: same total length = same pair)
    if (len[left] === 0 || len[right] === 0 || len[left] + len[right] !== queue.pairSize(e)) continue;
    len[left] += len[right];
    len[right] = 0;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    tryAdd(prev[left], left);
    tryAdd(left, next[left]);
  }
  return { start, len, next };
}

/** Pairs of adjacent symbols ordered by (priority, left) ascending, in parallel arrays (faster than objects). */
class PairQueue {
  private readonly priority: number[] = [];
  private readonly leftOf: number[] = [];
  private readonly rightOf: number[] = [];
  private readonly sizeOf: number[] = [];
  /** heap of entry indices */
  private readonly heap: number[] = [];

  get size(): number {
    return this.heap.length;
  }

  private before(a: number, b: number): boolean {
    const pa = this.priority[a];
    const pb = this.priority[b];
    return pa < pb || (pa === pb && this.leftOf[a] < this.leftOf[b]);
  }

  push(priority: number, left: number, right: number, size: number): void {
    const e = this.priority.length;
    this.priority.push(priority);
    this.leftOf.push(left);
    this.rightOf.push(right);
    this.sizeOf.push(size);
    const h = this.heap;
    let i = h.length;
    h.push(e);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(e, h[p])) break;
      h[i] = h[p];
      i = p;
    }
    h[i] = e;
  }

  /** Removes the first pair; returns its entry index (read it with left/right/pairSize), or -1 when empty. */
  pop(): number {
    const h = this.heap;
    if (h.length === 0) return -1;
    const top = h[0];
    const last = h.pop() as number;
    const n = h.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && this.before(h[r], h[l]) ? r : l;
        if (!this.before(h[c], last)) break;
        h[i] = h[c];
        i = c;
      }
      h[i] = last;
    }
    return top;
  }

  left(e: number): number {
    return this.leftOf[e];
  }
  right(e: number): number {
    return this.rightOf[e];
  }
  pairSize(e: number): number {
    return this.sizeOf[e];
  }
}
