/**
 * Request bodies of `tsmoe serve`: checks each field the server reads (type and range) and turns them into
 * sampler parameters, an expert setting and a token budget. A bad field is an HttpError 400 naming the field.
 * The MoE fields take the command-line flags' syntax and go through the same parser and model check
 * (src/cli/moe-options.ts, src/model/moe-check.ts), their messages renamed from `--moe-x-y` to `moe_x_y`.
 * Fields the server does not know are ignored (OpenAI clients send many).
 */
import { TsmoeError } from "../errors.ts";
import type { HParams, MoeOptions } from "../model/api.ts";
import { Sampler, type SamplerParams } from "../sample/sampler.ts";
import { moeOptionsFrom, type MoeCliValues } from "../cli/moe-options.ts";
import { moeForModel } from "../model/moe-check.ts";

/** An error answered with an OpenAI-style body: {"error": {"code", "message", "type"}}. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = "invalid_request_error",
  ) {
    super(message);
  }
}

export const badRequest = (message: string) => new HttpError(400, message);

export type Body = Record<string, unknown>;

/** Parses a request body: a JSON object, else 400. */
export function parseBody(text: string): Body {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw badRequest(`invalid JSON in the request body: ${(e as Error).message}`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw badRequest("the request body must be a JSON object");
  return v as Body;
}

const show = (v: unknown) => {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 40 ? s.slice(0, 40) + "..." : s;
};

/** A field's value, undefined when absent or null. */
const get = (body: Body, key: string): unknown => (body[key] === null ? undefined : body[key]);

export function optNumber(body: Body, key: string): number | undefined {
  const v = get(body, key);
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) throw badRequest(`${key}: expected a number, got ${show(v)}`);
  return v;
}

export function optInt(body: Body, key: string, min = Number.MIN_SAFE_INTEGER): number | undefined {
  const v = get(body, key);
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isSafeInteger(v)) throw badRequest(`${key}: expected an integer, got ${show(v)}`);
  if (v < min) throw badRequest(`${key}: must be at least ${min}, got ${v}`);
  return v;
}

export function optBool(body: Body, key: string): boolean | undefined {
  const v = get(body, key);
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") throw badRequest(`${key}: expected true or false, got ${show(v)}`);
  return v;
}

export function optString(body: Body, key: string): string | undefined {
  const v = get(body, key);
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw badRequest(`${key}: expected a string, got ${show(v)}`);
  return v;
}

/** The request's sampling fields (llama-server's names) and the sampler option each sets. */
const SAMPLING_FIELDS: [field: string, param: keyof SamplerParams, flag: string, int: boolean][] = [
  ["temperature", "temp", "--temp", false],
  ["top_k", "topK", "--top-k", true],
  ["top_p", "topP", "--top-p", false],
  ["min_p", "minP", "--min-p", false],
  ["repeat_penalty", "repeatPenalty", "--repeat-penalty", false],
  ["repeat_last_n", "repeatLastN", "--repeat-last-n", true],
  ["seed", "seed", "--seed", true],
];

/** Sampler parameters from the request (llama-server's defaults, which are llama-cli's, for the rest). */
export function samplingParams(body: Body): Partial<SamplerParams> {
  const p: Partial<SamplerParams> = {};
  for (const [field, param, , int] of SAMPLING_FIELDS) {
    const v = int ? optInt(body, field, field === "seed" || field === "repeat_last_n" ? -1 : undefined) : optNumber(body, field);
    if (v !== undefined) p[param] = v;
  }
  try {
    new Sampler(p); // the sampler's own range checks
  } catch (e) {
    let msg = (e as Error).message;
    for (const [field, , flag] of SAMPLING_FIELDS) msg = msg.replace(flag, field);
    throw badRequest(msg);
  }
  return p;
}

/** `max_tokens` (or `max_completion_tokens`, or llama-server's `n_predict`): -1 = until end of text or a full context. */
export function tokenBudget(body: Body): number {
  const keys = ["max_tokens", "max_completion_tokens", "n_predict"].filter((k) => get(body, k) !== undefined);
  if (keys.length === 0) return -1;
  const n = optInt(body, keys[0], -1)!;
  if (n === 0) throw badRequest(`${keys[0]}: must be at least 1 (or -1: until the end of text or a full context)`);
  return n;
}

/** `stop`: a string or a list of strings (at most 16, none empty). */
export function stopStrings(body: Body): string[] {
  const v = get(body, "stop");
  if (v === undefined) return [];
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || list.some((s) => typeof s !== "string")) throw badRequest(`stop: expected a string or a list of strings, got ${show(v)}`);
  if (list.length > 16) throw badRequest(`stop: at most 16 stop strings, got ${list.length}`);
  return (list as string[]).filter((s) => s !== "");
}

/** Renames the command-line flags in a message to the request fields (`--moe-n-expert` -> `moe_n_expert`). */
export const flagsToFields = (message: string) => message.replace(/--moe-[a-z-]+/g, (f) => f.slice(2).replace(/-/g, "_"));

/**
 * The request's MoE fields as the command-line option values they stand for: `moe_n_expert` (integer),
 * `moe_mask` ("soft" | "hard"), `moe_n_expert_layers` ("0-3:8,4-47:4"), `moe_cum_p` (number), `moe_ser`
 * ("KMIN,T" or [KMIN, T]).
 */
export function moeFields(body: Body): MoeCliValues {
  const out: MoeCliValues = {};
  const n = optInt(body, "moe_n_expert");
  if (n !== undefined) out.moeNExpert = String(n);
  const mask = optString(body, "moe_mask");
  if (mask !== undefined) out.moeMask = mask;
  const layers = optString(body, "moe_n_expert_layers");
  if (layers !== undefined) out.moeNExpertLayers = layers;
  const p = optNumber(body, "moe_cum_p");
  if (p !== undefined) out.moeCumP = String(p);
  const ser = get(body, "moe_ser");
  if (ser !== undefined) {
    const pair = Array.isArray(ser) && ser.length === 2 && ser.every((x) => typeof x === "number" && Number.isFinite(x));
    if (typeof ser !== "string" && !pair) throw badRequest(`moe_ser: expected "KMIN,T" or [KMIN, T], got ${show(ser)}`);
    out.moeSer = typeof ser === "string" ? ser : (ser as number[]).join(",");
  }
  return out;
}

/**
 * The expert setting of a request: the server's own MoE flags, with the request's fields over them,
 * checked against the model (undefined: the model's routing; always undefined for a dense model).
 */
export function requestMoe(body: Body, serverDefaults: MoeCliValues, hp: Pick<HParams, "nExpert" | "nExpertUsed" | "nLayer" | "arch">): MoeOptions | undefined {
  const values = { ...serverDefaults, ...moeFields(body) };
  try {
    const { moe } = moeOptionsFrom({ moeNExpert: values.moeNExpert, moeMask: values.moeMask, moeNExpertLayers: values.moeNExpertLayers, moeCumP: values.moeCumP, moeSer: values.moeSer });
    return moeForModel(moe, hp);
  } catch (e) {
    if (e instanceof TsmoeError) throw badRequest(flagsToFields(e.message));
    throw e;
  }
}
