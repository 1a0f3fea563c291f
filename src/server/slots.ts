/**
 * The server's --parallel slots (one session each, reused request after request) and the bounded queue of
 * requests waiting for one: first come, first served; a request that finds the queue full gets 503; a
 * waiting request can be withdrawn (its client went away).
 */
import { HttpError } from "./request.ts";

export interface Waiter<T> {
  /** resolves with a slot; call release(slot) when done */
  readonly slot: Promise<T>;
  /** withdraws a request still waiting (no effect once it holds a slot) */
  cancel(): void;
}

export class SlotPool<T> {
  private readonly free: T[];
  private readonly waiting: { resolve: (slot: T) => void; reject: (e: Error) => void }[] = [];

  constructor(
    readonly slots: readonly T[],
    /** requests that may wait for a slot; one more gets 503 */
    readonly maxQueue: number,
  ) {
    this.free = [...slots];
  }

  /** requests waiting for a slot */
  get queued(): number {
    return this.waiting.length;
  }
  /** slots in use */
  get busy(): number {
    return this.slots.length - this.free.length;
  }

  /** A free slot now, or a place in the queue; an HttpError 503 when the queue is full. */
  acquire(): Waiter<T> {
    const slot = this.free.pop();
    if (slot !== undefined) return { slot: Promise.resolve(slot), cancel: () => {} };
    if (this.waiting.length >= this.maxQueue)
      throw new HttpError(503, `the server is busy: ${this.slots.length} requests running and ${this.waiting.length} waiting (try again later)`, "unavailable_error");
    let entry!: (typeof this.waiting)[number];
    const promise = new Promise<T>((resolve, reject) => {
      entry = { resolve, reject };
      this.waiting.push(entry);
    });
    return {
      slot: promise,
      cancel: () => {
        const i = this.waiting.indexOf(entry);
        if (i >= 0) {
          this.waiting.splice(i, 1);
          entry.reject(new HttpError(499, "the client closed the request"));
        }
      },
    };
  }

  /** Gives a slot back: to the first waiting request, else to the free list. */
  release(slot: T): void {
    const next = this.waiting.shift();
    if (next) next.resolve(slot);
    else this.free.push(slot);
  }
}
