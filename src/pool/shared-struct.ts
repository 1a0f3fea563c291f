/**
 * Passing small flat objects (a Weight, quantized Activations, an output view) to workers without copying
 * their data: typed-array fields over SharedArrayBuffers travel as (buffer id, byte offset, length), numbers
 * as themselves, in Float64 slots of the control block. Each buffer and each object layout is posted to the
 * workers once (ControlMessage "buffer" / "layout") and referred to by id afterwards; a buffer the main
 * thread no longer references is dropped from the workers too.
 */
import { TsmoeError } from "../errors.ts";
import { VIEW_CTORS, type ControlMessage, type FieldLayout, type ViewCtorName } from "./protocol.ts";

/**
 * What to do with a typed array that is not over a SharedArrayBuffer: "stable" data (weights) is copied
 * into shared memory once per buffer; "volatile" data (activations) is copied on every call.
 */
export type CopyPolicy = "stable" | "volatile";

type View = (typeof VIEW_CTORS)[ViewCtorName]["prototype"];

function viewCtorName(v: unknown): ViewCtorName | undefined {
  if (!ArrayBuffer.isView(v)) return undefined;
  const name = v.constructor.name;
  return name in VIEW_CTORS ? (name as ViewCtorName) : undefined;
}

/** Main-thread side: gives buffers and layouts ids and writes objects into slots. */
export class SharedEncoder {
  private readonly bufferIds = new WeakMap<SharedArrayBuffer, number>();
  private nextBufferId = 1;
  private readonly layoutIds = new Map<string, { id: number; fields: FieldLayout[] }>();
  /** shared copies of non-shared buffers holding stable data */
  private readonly stableCopies = new WeakMap<ArrayBufferLike, SharedArrayBuffer>();
  /** per-field scratch for volatile non-shared data, keyed "layout:field:tag" */
  private readonly scratch = new Map<string, SharedArrayBuffer>();
  private readonly released = new FinalizationRegistry<number>((id) => this.post({ kind: "drop", id }));

  constructor(private readonly post: (msg: ControlMessage) => void) {}

  /**
   * Writes `obj` into `slots` from index `at` and returns the index after it. Volatile non-shared data is
   * copied into scratch kept per layout, field and `tag`: objects of one job that are alive at the same
   * time need different tags. Objects passed with the same `shape` name must have the same keys in the
   * same order (built by one object literal): their layout is then looked up by the name instead of
   * being worked out from the object's entries on every call.
   */
  encode(obj: object, slots: Float64Array, at: number, policy: CopyPolicy, tag = 0, shape?: string): number {
    let layout = shape === undefined ? undefined : this.shapes.get(shape);
    if (layout === undefined || !this.fits(obj as Record<string, unknown>, layout.fields)) {
      layout = this.layoutOf(Object.entries(obj));
      if (shape !== undefined) this.shapes.set(shape, layout);
    }
    const fields = layout.fields;
    slots[at++] = layout.id;
    for (let f = 0; f < fields.length; f++) {
      const field = fields[f]!;
      const v = (obj as Record<string, unknown>)[field.key];
      if (field.kind === "number") slots[at++] = v as number;
      else if (field.kind === "boolean") slots[at++] = v ? 1 : 0;
      else if (field.kind === "view") at = this.writeView(v as View, slots, at, policy, layout.id, f, tag);
    }
    // writes past the end of a typed array are dropped: check once at the end
    if (at > slots.length) throw new TsmoeError("pool: job descriptor too large");
    return at;
  }

  /**
   * Writes the object `{ v: view }` (without making it): the workers decode it as such an object. For
   * output buffers, passed in every job.
   */
  encodeView(view: View, slots: Float64Array, at: number, policy: CopyPolicy, tag = 0): number {
    const ctor = viewCtorName(view);
    if (ctor === undefined) throw new TsmoeError(`pool: cannot pass a ${view.constructor.name} to worker threads`);
    let id = this.viewLayouts.get(ctor);
    if (id === undefined) this.viewLayouts.set(ctor, (id = this.layoutOf([["v", view]]).id));
    slots[at] = id;
    const end = this.writeView(view, slots, at + 1, policy, id, 0, tag);
    if (end > slots.length) throw new TsmoeError("pool: job descriptor too large");
    return end;
  }

  /** layouts of objects passed with a shape name */
  private readonly shapes = new Map<string, { id: number; fields: FieldLayout[] }>();
  /** layout ids of `{ v: view }` per view type */
  private readonly viewLayouts = new Map<ViewCtorName, number>();

  /** whether obj's fields still have the kinds the layout says (a field that changed kind needs a new layout) */
  private fits(obj: Record<string, unknown>, fields: readonly FieldLayout[]): boolean {
    for (const field of fields) {
      const v = obj[field.key];
      if (field.kind === "number" ? typeof v !== "number" : field.kind === "boolean" ? typeof v !== "boolean" : field.kind === "view" ? viewCtorName(v) !== field.ctor : v !== field.value) return false;
    }
    return true;
  }

  private writeView(v: View, slots: Float64Array, at: number, policy: CopyPolicy, layoutId: number, field: number, tag: number): number {
    const shared = v.buffer instanceof SharedArrayBuffer ? v : this.sharedView(v, policy, `${layoutId}:${field}:${tag}`);
    slots[at] = this.bufferId(shared.buffer as SharedArrayBuffer);
    slots[at + 1] = shared.byteOffset;
    slots[at + 2] = shared.length;
    return at + 3;
  }

  /** encoded slots of stable objects (weights), reused when the same object is passed again */
  private readonly stableSlots = new WeakMap<object, Float64Array>();

  /**
   * `encode` with the "stable" policy, for objects that never change (weights): the slots written the first
   * time are kept and copied on later calls.
   */
  encodeStable(obj: object, slots: Float64Array, at: number): number {
    const known = this.stableSlots.get(obj);
    if (known) {
      if (at + known.length > slots.length) throw new TsmoeError("pool: job descriptor too large");
      slots.set(known, at);
      return at + known.length;
    }
    const end = this.encode(obj, slots, at, "stable");
    this.stableSlots.set(obj, slots.slice(at, end));
    return end;
  }

  private layoutOf(entries: [string, unknown][]): { id: number; fields: FieldLayout[] } {
    // a cheap signature first; the full layout only when new
    let sig = "";
    for (const [key, v] of entries) {
      const t = typeof v;
      sig += t === "number" || t === "boolean" ? `${key}:${t};` : ArrayBuffer.isView(v) ? `${key}:${v.constructor.name};` : `${key}=${String(v)}:${t};`;
    }
    const known = this.layoutIds.get(sig);
    if (known !== undefined) return known;
    const fields: FieldLayout[] = entries.map(([key, v]) => {
      if (typeof v === "number") return { key, kind: "number" };
      if (typeof v === "boolean") return { key, kind: "boolean" };
      const ctor = viewCtorName(v);
      if (ctor) return { key, kind: "view", ctor };
      if (typeof v === "string" || v === null || v === undefined) return { key, kind: "const", value: v };
      throw new TsmoeError(`pool: cannot pass field '${key}' (${typeof v}) to worker threads`);
    });
    const layout = { id: this.layoutIds.size + 1, fields };
    this.layoutIds.set(sig, layout);
    this.post({ kind: "layout", id: layout.id, layout: fields });
    return layout;
  }

  private sharedView(v: View, policy: CopyPolicy, scratchKey: string): View {
    if (v.buffer instanceof SharedArrayBuffer) return v;
    const Ctor = v.constructor as new (b: ArrayBufferLike, off: number, len: number) => View;
    if (policy === "stable") {
      let copy = this.stableCopies.get(v.buffer);
      if (!copy) {
        copy = new SharedArrayBuffer(v.buffer.byteLength);
        new Uint8Array(copy).set(new Uint8Array(v.buffer));
        this.stableCopies.set(v.buffer, copy);
      }
      return new Ctor(copy, v.byteOffset, v.length);
    }
    let buf = this.scratch.get(scratchKey);
    if (!buf || buf.byteLength < v.byteLength) {
      buf = new SharedArrayBuffer(Math.max(v.byteLength, 2 * (buf?.byteLength ?? 0)));
      this.scratch.set(scratchKey, buf);
    }
    const copy = new Ctor(buf, 0, v.length);
    copy.set(v as never);
    return copy;
  }

  private bufferId(buffer: SharedArrayBuffer): number {
    let id = this.bufferIds.get(buffer);
    if (id === undefined) {
      id = this.nextBufferId++;
      this.bufferIds.set(buffer, id);
      this.released.register(buffer, id);
      this.post({ kind: "buffer", id, buffer });
    }
    return id;
  }
}

/** Worker side: keeps the buffers and layouts it was sent and rebuilds objects from slots. */
export class SharedDecoder {
  private readonly buffers = new Map<number, SharedArrayBuffer>();
  private readonly layouts = new Map<number, FieldLayout[]>();

  /** Applies a "buffer", "layout" or "drop" message; returns false for other kinds. */
  apply(msg: ControlMessage): boolean {
    if (msg.kind === "buffer") this.buffers.set(msg.id, msg.buffer);
    else if (msg.kind === "drop") this.buffers.delete(msg.id);
    else if (msg.kind === "layout") this.layouts.set(msg.id, msg.layout);
    else return false;
    return true;
  }

  /** Rebuilds the object written at `slots[at]`; returns it and the index after it. */
  decode<T>(slots: Float64Array, at: number): { value: T; next: number } {
    const layout = this.layouts.get(slots[at]);
    if (!layout) throw new Error(`pool worker: unknown layout ${slots[at]}`);
    at++;
    const value: Record<string, unknown> = {};
    for (const f of layout) {
      if (f.kind === "number") value[f.key] = slots[at++];
      else if (f.kind === "boolean") value[f.key] = slots[at++] !== 0;
      else if (f.kind === "const") value[f.key] = f.value;
      else {
        const buffer = this.buffers.get(slots[at]);
        if (!buffer) throw new Error(`pool worker: unknown buffer ${slots[at]}`);
        const Ctor = VIEW_CTORS[f.ctor] as unknown as new (b: SharedArrayBuffer, off: number, len: number) => View;
        value[f.key] = new Ctor(buffer, slots[at + 1], slots[at + 2]);
        at += 3;
      }
    }
    return { value: value as T, next: at };
  }
}
