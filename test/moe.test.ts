/**
 * Expert routing (src/model/moe.ts) against a plain float64 reference written here from the definitions:
 * gating (softmax / sigmoid / softmax over the top-k), selection bias, expert groups, soft and hard masks,
 * per-layer counts, dynamic routing (cumP, ser) and the per-layer statistics.
 */
import { describe, expect, it } from "vitest";
import { createRouter, topK } from "../src/model/moe.ts";
import { moePolicy } from "../src/model/moe-check.ts";
import { RoutingStats } from "../src/model/moe-stats.ts";
import type { MoeOptions } from "../src/model/api.ts";
import type { RouterConfig, Routing } from "../src/model/moe-types.ts";

/** Deterministic normal draws (mulberry32 + Box-Muller). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

function randomLogits(nTokens: number, nExpert: number, seed: number, std = 1.5): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: nTokens * nExpert }, () => r() * std);
}

// ---------------------------------------------------------------------------------------------------
// float64 reference, straight from the definitions

interface RefChoice {
  ids: number[];
  weights: number[];
}

/** Indices of v sorted by value, largest first, ties by lower index. */
function ranked(v: number[]): number[] {
  return v.map((_, i) => i).sort((a, b) => v[b] - v[a] || a - b);
}

/** Probabilities (before selection) and selection scores of one token. */
function refScores(cfg: RouterConfig, z: number[]): { p: number[]; s: number[] } {
  let p: number[];
  if (cfg.gating === "softmax") {
    const m = Math.max(...z);
    const e = z.map((x) => Math.exp(x - m));
    const sum = e.reduce((a, b) => a + b, 0);
    p = e.map((x) => x / sum);
  } else if (cfg.gating === "sigmoid") p = z.map((x) => 1 / (1 + Math.exp(-x)));
  else p = z.slice();
  let s = p.map((x, i) => x + (cfg.selectionBias ? cfg.selectionBias[i] : 0));
  if (cfg.nGroup && cfg.nGroup > 1) {
    const per = cfg.nExpert / cfg.nGroup;
    const groupScore = Array.from({ length: cfg.nGroup }, (_, g) => {
      const top2 = s.slice(g * per, (g + 1) * per).sort((a, b) => b - a);
      return top2[0] + top2[1];
    });
    const keep = new Set(ranked(groupScore).slice(0, cfg.nGroupUsed));
    s = s.map((x, i) => (keep.has(Math.floor(i / per)) ? x : -Infinity));
  }
  return { p, s };
}

/** The model's rule for K experts: top-K of s, weights from p (softmax over them for softmax_topk). */
function refTopK(cfg: RouterConfig, z: number[], K: number): { ids: number[]; raw: number[] } {
  const { p, s } = refScores(cfg, z);
  const ids = ranked(s).slice(0, K);
  let raw = ids.map((i) => p[i]);
  if (cfg.gating === "softmax_topk") {
    const m = Math.max(...raw);
    const e = raw.map((x) => Math.exp(x - m));
    const sum = e.reduce((a, b) => a + b, 0);
    raw = e.map((x) => x / sum);
  }
  return { ids, raw };
}

function refFinish(cfg: RouterConfig, raw: number[], normOver: number[]): number[] {
  const sum = Math.max(
    normOver.reduce((a, b) => a + b, 0),
    6.103515625e-5,
  );
  const scale = cfg.scale === 0 ? 1 : cfg.scale;
  return raw.map((x) => (cfg.normTopK ? x / sum : x) * scale);
}

/** Reference routing of one token with override N and the given mask, plus optional dynamic routing. */
function refRoute(cfg: RouterConfig, z: number[], N: number, mask: "soft" | "hard", dyn?: { cumP?: number; ser?: { kmin: number; t: number } }): RefChoice {
  const k = cfg.nExpertUsed;
  const { ids, raw } = refTopK(cfg, z, mask === "soft" ? N : k);
  const count = mask === "soft" ? N : Math.min(N, k);
  const cand = raw.slice(0, count);
  let prefix = count;
  if (dyn?.cumP !== undefined) {
    const total = cand.reduce((a, b) => a + b, 0);
    prefix = 1;
    while (prefix < count && cand.slice(0, prefix).reduce((a, b) => a + b, 0) < dyn.cumP * total) prefix++;
  }
  const top = Math.max(...cand);
  const keep = cand.map((_, j) => j).filter((j) => j < prefix && (!dyn?.ser || j < dyn.ser.kmin || cand[j] > dyn.ser.t * top));
  if (mask === "soft" && cfg.gating === "softmax_topk" && keep.length < count) {
    // the weights of softmax-over-the-selected models always sum to 1: renormalise the kept ones
    const sum = keep.reduce((a, j) => a + raw[j], 0);
    return { ids: keep.map((j) => ids[j]), weights: keep.map((j) => raw[j] / sum) };
  }
  const normOver = mask === "hard" ? raw : keep.map((j) => raw[j]);
  const w = refFinish(cfg, raw, normOver);
  return { ids: keep.map((j) => ids[j]), weights: keep.map((j) => w[j]) };
}

function tokenOf(r: Routing, t: number): RefChoice {
  const base = t * r.maxK;
  const n = r.counts[t];
  return { ids: Array.from(r.ids.subarray(base, base + n)), weights: Array.from(r.weights.subarray(base, base + n)) };
}

function expectMatches(r: Routing, logits: Float32Array, cfg: RouterConfig, ref: (z: number[]) => RefChoice): void {
  for (let t = 0; t < r.nTokens; t++) {
    const z = Array.from(logits.subarray(t * cfg.nExpert, (t + 1) * cfg.nExpert));
    const want = ref(z);
    const got = tokenOf(r, t);
    expect(got.ids, `token ${t} ids`).toEqual(want.ids);
    for (let j = 0; j < want.weights.length; j++) {
      expect(Math.abs(got.weights[j] - want.weights[j]), `token ${t} weight ${j}`).toBeLessThan(2e-6 * Math.max(1, Math.abs(want.weights[j])));
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// configurations of the gating families

const NT = 40;
const olmoe: RouterConfig = { nExpert: 64, nExpertUsed: 8, gating: "softmax", normTopK: false, scale: 1 };
const qwen3: RouterConfig = { nExpert: 32, nExpertUsed: 8, gating: "softmax", normTopK: true, scale: 1 };
function glm(seed: number): RouterConfig {
  const r = rng(seed);
  return { nExpert: 16, nExpertUsed: 4, gating: "sigmoid", normTopK: true, scale: 2.5, selectionBias: Float32Array.from({ length: 16 }, () => r() * 0.3) };
}
function deepseek(seed: number): RouterConfig {
  return { ...glm(seed), nExpert: 16, nExpertUsed: 4, nGroup: 4, nGroupUsed: 2 };
}
const gptoss: RouterConfig = { nExpert: 32, nExpertUsed: 4, gating: "softmax_topk", normTopK: false, scale: 1 };

const families: [string, RouterConfig][] = [
  ["softmax, not normalised (OLMoE)", olmoe],
  ["softmax, normalised (Qwen3-MoE)", qwen3],
  ["sigmoid + bias, normalised, scale 2.5 (GLM-4.5)", glm(7)],
  ["sigmoid + bias + groups 4/2 (DeepSeek-V3)", deepseek(8)],
  ["softmax over the top-k logits (gpt-oss)", gptoss],
];

function route(moe: MoeOptions | undefined, cfg: RouterConfig, logits: Float32Array, layer = 0, nLayer = 4): Routing {
  return createRouter(moePolicy(moe), nLayer).route(logits, logits.length / cfg.nExpert, cfg, layer);
}

function expectIdentical(a: Routing, b: Routing): void {
  expect(Array.from(a.counts)).toEqual(Array.from(b.counts));
  for (let t = 0; t < a.nTokens; t++) expect(tokenOf(a, t)).toEqual(tokenOf(b, t));
}

describe("topK", () => {
  it("returns the largest values first and breaks exact ties by lower index", () => {
    const out = new Int32Array(4);
    topK([1, 3, 3, 2, 3, -Infinity], 6, 4, out);
    expect(Array.from(out)).toEqual([1, 2, 4, 3]);
    topK([-Infinity, -Infinity, 0.5], 3, 3, out);
    expect(Array.from(out.subarray(0, 3))).toEqual([2, 0, 1]);
  });

  it("routes equal logits to the lowest expert ids", () => {
    const r = route(undefined, qwen3, new Float32Array(32));
    expect(tokenOf(r, 0).ids).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(tokenOf(r, 0).weights.every((w) => Math.abs(w - 1 / 8) < 1e-7)).toBe(true);
  });
});

describe.each(families)("gating: %s", (_name, cfg) => {
  const logits = randomLogits(NT, cfg.nExpert, cfg.nExpert * 31 + cfg.nExpertUsed);
  const k = cfg.nExpertUsed;

  it("the model's routing (no override) matches the reference", () => {
    const r = route(undefined, cfg, logits);
    expect(r.maxK).toBe(k);
    expectMatches(r, logits, cfg, (z) => refRoute(cfg, z, k, "soft"));
  });

  it.each([1, 2, 3, 6])("soft mask N=%i matches the reference top-N", (N) => {
    const r = route({ nExpert: N, mask: "soft" }, cfg, logits);
    expect(Array.from(r.counts).every((c) => c === N)).toBe(true);
    expectMatches(r, logits, cfg, (z) => refRoute(cfg, z, N, "soft"));
  });

  it.each([1, 2, 3])("hard mask N=%i keeps the model's first N with their weights", (N) => {
    const r = route({ nExpert: N, mask: "hard" }, cfg, logits);
    expect(Array.from(r.counts).every((c) => c === Math.min(N, k))).toBe(true);
    expectMatches(r, logits, cfg, (z) => refRoute(cfg, z, N, "hard"));
  });

  it("N = k is identical to no override in both masks", () => {
    const base = route(undefined, cfg, logits);
    expectIdentical(route({ nExpert: k, mask: "soft" }, cfg, logits), base);
    expectIdentical(route({ nExpert: k, mask: "hard" }, cfg, logits), base);
    expectIdentical(route({ mask: "hard", layers: new Map([[0, k]]) }, cfg, logits), base);
  });

  it("soft N > k matches the reference top-N", () => {
    const N = Math.min(cfg.nExpert, 2 * k);
    expectMatches(route({ nExpert: N, mask: "soft" }, cfg, logits), logits, cfg, (z) => refRoute(cfg, z, N, "soft"));
  });
});

describe("soft vs hard", () => {
  it.each([1, 2, 4, 7])("are identical for a model that does not normalise (N=%i, also with a scale)", (N) => {
    for (const cfg of [olmoe, { ...olmoe, scale: 1.7 }]) {
      const logits = randomLogits(NT, cfg.nExpert, 100 + N);
      expectIdentical(route({ nExpert: N, mask: "soft" }, cfg, logits), route({ nExpert: N, mask: "hard" }, cfg, logits));
    }
  });

  it("differ for a normalising model: hard weights sum below 1, soft weights sum to 1", () => {
    const logits = randomLogits(NT, qwen3.nExpert, 5);
    const soft = route({ nExpert: 2, mask: "soft" }, qwen3, logits);
    const hard = route({ nExpert: 2, mask: "hard" }, qwen3, logits);
    for (let t = 0; t < NT; t++) {
      const s = tokenOf(soft, t);
      const h = tokenOf(hard, t);
      expect(s.ids).toEqual(h.ids);
      expect(s.weights[0] + s.weights[1]).toBeCloseTo(1, 6);
      expect(h.weights[0] + h.weights[1]).toBeLessThan(0.999);
    }
  });

  it("hard routing selects the same experts as soft for ranking by biased score (GLM)", () => {
    const cfg = glm(3);
    const logits = randomLogits(NT, cfg.nExpert, 6);
    const soft = route({ nExpert: 3, mask: "soft" }, cfg, logits);
    const hard = route({ nExpert: 3, mask: "hard" }, cfg, logits);
    for (let t = 0; t < NT; t++) expect(tokenOf(soft, t).ids).toEqual(tokenOf(hard, t).ids);
  });
});

describe("selection bias and groups", () => {
  it("the bias changes the ranking but not the weights", () => {
    const cfg = glm(11);
    const noBias = { ...cfg, selectionBias: undefined };
    const logits = randomLogits(NT, cfg.nExpert, 12);
    const a = route(undefined, cfg, logits);
    const b = route(undefined, noBias, logits);
    let differ = 0;
    for (let t = 0; t < NT; t++) if (tokenOf(a, t).ids.join() !== tokenOf(b, t).ids.join()) differ++;
    expect(differ).toBeGreaterThan(0);
    // weights are sigmoids of the chosen logits, renormalised and scaled: no bias inside
    for (let t = 0; t < NT; t++) {
      const { ids, weights } = tokenOf(a, t);
      const sig = ids.map((i) => 1 / (1 + Math.exp(-logits[t * cfg.nExpert + i])));
      const sum = sig.reduce((x, y) => x + y, 0);
      ids.forEach((_, j) => expect(weights[j]).toBeCloseTo((2.5 * sig[j]) / sum, 5));
    }
  });

  it("group-limited routing only uses experts of the best groups", () => {
    const cfg = deepseek(21);
    const logits = randomLogits(NT, cfg.nExpert, 22, 3);
    const r = route(undefined, cfg, logits);
    let changed = 0;
    const free = route(undefined, { ...cfg, nGroup: undefined, nGroupUsed: undefined }, logits);
    for (let t = 0; t < NT; t++) {
      const groups = new Set(tokenOf(r, t).ids.map((i) => Math.floor(i / 4)));
      expect(groups.size).toBeLessThanOrEqual(2);
      if (tokenOf(free, t).ids.join() !== tokenOf(r, t).ids.join()) changed++;
    }
    expect(changed).toBeGreaterThan(0);
  });

  it("with more experts requested than the kept groups hold, masked experts come last", () => {
    const cfg = { ...deepseek(4), nGroupUsed: 1 };
    const logits = randomLogits(4, cfg.nExpert, 9);
    const r = route({ nExpert: 6, mask: "soft" }, cfg, logits);
    expectMatches(r, logits, cfg, (z) => refRoute(cfg, z, 6, "soft"));
    for (let t = 0; t < 4; t++) {
      const ids = tokenOf(r, t).ids;
      const g = Math.floor(ids[0] / 4);
      expect(ids.slice(0, 4).every((i) => Math.floor(i / 4) === g)).toBe(true);
    }
  });
});

describe("per-layer counts", () => {
  it("a layer named in `layers` uses its count, others the global N or k", () => {
    const logits = randomLogits(NT, qwen3.nExpert, 31);
    const moe: MoeOptions = { nExpert: 4, mask: "soft", layers: new Map([[1, 2], [3, 8]]) };
    const router = createRouter(moePolicy(moe), 4);
    const counts = [0, 1, 2, 3].map((l) => router.route(logits, NT, qwen3, l).counts[0]);
    expect(counts).toEqual([4, 2, 4, 8]);
    const onlyLayers = createRouter(moePolicy({ mask: "hard", layers: new Map([[2, 3]]) }), 4);
    expect([0, 1, 2, 3].map((l) => onlyLayers.route(logits, NT, qwen3, l).counts[0])).toEqual([8, 8, 3, 8]);
    expectMatches(router.route(logits, NT, qwen3, 1), logits, qwen3, (z) => refRoute(qwen3, z, 2, "soft"));
  });

  it("rejects a layer outside the model", () => {
    expect(() => createRouter(moePolicy(undefined), 2).route(new Float32Array(32), 1, qwen3, 2)).toThrow(/layer 2/);
  });
});

describe("dynamic routing", () => {
  const cases: [string, RouterConfig][] = [
    ["normalised", qwen3],
    ["not normalised", olmoe],
    ["sigmoid", glm(41)],
    ["gpt-oss", gptoss],
  ];

  it.each(cases)("cumP = 1 keeps all k experts and equals the model (%s)", (_n, cfg) => {
    const logits = randomLogits(NT, cfg.nExpert, 51);
    expectIdentical(route({ mask: "soft", cumP: 1 }, cfg, logits), route(undefined, cfg, logits));
  });

  it.each(cases)("a tiny cumP keeps one expert (%s)", (_n, cfg) => {
    const logits = randomLogits(NT, cfg.nExpert, 52);
    const r = route({ mask: "soft", cumP: 1e-9 }, cfg, logits);
    expect(Array.from(r.counts).every((c) => c === 1)).toBe(true);
    expectMatches(r, logits, cfg, (z) => refRoute(cfg, z, cfg.nExpertUsed, "soft", { cumP: 1e-9 }));
    if (cfg.normTopK) for (let t = 0; t < NT; t++) expect(tokenOf(r, t).weights[0]).toBeCloseTo(cfg.scale, 6);
  });

  it.each(cases)("cumP = 0.5 and 0.8 match the reference, renormalising only where the model does (%s)", (_n, cfg) => {
    const logits = randomLogits(NT, cfg.nExpert, 53, 2.5);
    for (const P of [0.5, 0.8]) {
      const r = route({ mask: "soft", cumP: P }, cfg, logits);
      expectMatches(r, logits, cfg, (z) => refRoute(cfg, z, cfg.nExpertUsed, "soft", { cumP: P }));
      const counts = new Set(r.counts);
      expect(counts.size, "the number of experts varies per token").toBeGreaterThan(1);
    }
  });

  it.each(cases)("ser T = 0 is the model, T = 1 is a fixed KMIN (%s)", (_n, cfg) => {
    const logits = randomLogits(NT, cfg.nExpert, 54);
    expectIdentical(route({ mask: "soft", ser: { kmin: 1, t: 0 } }, cfg, logits), route(undefined, cfg, logits));
    for (const kmin of [1, 2, 3]) {
      const r = route({ mask: "soft", ser: { kmin, t: 1 } }, cfg, logits);
      expect(Array.from(r.counts).every((c) => c === kmin)).toBe(true);
      expectMatches(r, logits, cfg, (z) => refRoute(cfg, z, kmin, "soft"));
    }
  });

  it.each(cases)("ser KMIN=1, T=0.3 matches the reference (%s)", (_n, cfg) => {
    const logits = randomLogits(NT, cfg.nExpert, 55, 2.5);
    const ser = { kmin: 1, t: 0.3 };
    const r = route({ mask: "soft", ser }, cfg, logits);
    expectMatches(r, logits, cfg, (z) => refRoute(cfg, z, cfg.nExpertUsed, "soft", { ser }));
    expect(new Set(r.counts).size).toBeGreaterThan(1);
  });

  it("KMIN above k is capped at k", () => {
    const logits = randomLogits(NT, qwen3.nExpert, 56);
    expectIdentical(route({ mask: "soft", ser: { kmin: 20, t: 1 } }, qwen3, logits), route(undefined, qwen3, logits));
  });

  it("under the hard mask the kept weights stay as the model computed them", () => {
    const logits = randomLogits(NT, qwen3.nExpert, 57, 2.5);
    const base = route(undefined, qwen3, logits);
    const r = route({ mask: "hard", cumP: 0.6 }, qwen3, logits);
    for (let t = 0; t < NT; t++) {
      const got = tokenOf(r, t);
      const model = tokenOf(base, t);
      expect(got.ids).toEqual(model.ids.slice(0, got.ids.length));
      expect(got.weights).toEqual(model.weights.slice(0, got.ids.length));
    }
  });

  it("per-layer cumP (layerCumP) overrides cumP in the layers it names", () => {
    const logits = randomLogits(NT, qwen3.nExpert, 60, 2.5);
    const moe: MoeOptions = { mask: "soft", cumP: 0.5, layerCumP: new Map([[1, 0.9], [2, 1]]) };
    expectIdentical(route(moe, qwen3, logits, 0), route({ mask: "soft", cumP: 0.5 }, qwen3, logits, 0));
    expectIdentical(route(moe, qwen3, logits, 1), route({ mask: "soft", cumP: 0.9 }, qwen3, logits, 1));
    expectIdentical(route(moe, qwen3, logits, 2), route(undefined, qwen3, logits, 2));
    // without a global cumP, the layers not named keep the model's routing
    const only = { mask: "soft" as const, layerCumP: new Map([[3, 0.5]]) };
    expectIdentical(route(only, qwen3, logits, 0), route(undefined, qwen3, logits, 0));
    expectIdentical(route(only, qwen3, logits, 3), route({ mask: "soft", cumP: 0.5 }, qwen3, logits, 3));
  });

  it("with cumP and ser together an expert is kept only if both keep it", () => {
    const cfg = glm(59);
    const logits = randomLogits(NT, cfg.nExpert, 58, 2.5);
    const a = route({ mask: "soft", cumP: 0.7 }, cfg, logits);
    const b = route({ mask: "soft", ser: { kmin: 1, t: 0.5 } }, cfg, logits);
    const dyn = { cumP: 0.7, ser: { kmin: 1, t: 0.5 } };
    const both = route({ mask: "soft", ...dyn }, cfg, logits);
    expectMatches(both, logits, cfg, (z) => refRoute(cfg, z, cfg.nExpertUsed, "soft", dyn));
    let fewer = 0;
    for (let t = 0; t < NT; t++) {
      const inB = new Set(tokenOf(b, t).ids);
      expect(tokenOf(both, t).ids).toEqual(tokenOf(a, t).ids.filter((e) => inB.has(e)));
      if (both.counts[t] < Math.min(a.counts[t], b.counts[t])) fewer++;
    }
    expect(fewer, "the intersection is sometimes smaller than either").toBeGreaterThan(0);
  });

  it("ser with a selection bias keeps later experts above the threshold even after a dropped one", () => {
    // expert 0 ranks first by its bias but has the lowest probability; 1 and 2 pass the threshold
    const cfg: RouterConfig = { nExpert: 4, nExpertUsed: 3, gating: "sigmoid", normTopK: true, scale: 1, selectionBias: new Float32Array([10, 0, 1, -5]) };
    const logits = new Float32Array([-3, 2, 1, 0]);
    const r = route({ mask: "soft", ser: { kmin: 1, t: 0.9 } }, cfg, logits);
    // ranking: expert 0 (p 0.047, +10), expert 2 (p 0.731, +1), expert 1 (p 0.881, largest)
    expect(tokenOf(r, 0).ids).toEqual([0, 1]);
    const r2 = route({ mask: "soft", ser: { kmin: 1, t: 0.8 } }, cfg, logits);
    expect(tokenOf(r2, 0).ids).toEqual([0, 2, 1]);
    expect(tokenOf(route({ mask: "soft", ser: { kmin: 1, t: 1 } }, cfg, logits), 0).ids).toEqual([0]);
    expectMatches(r2, logits, cfg, (z) => refRoute(cfg, z, 3, "soft", { ser: { kmin: 1, t: 0.8 } }));
  });
});

describe("statistics", () => {
  it("count tokens, experts, load, mass kept and entropy per layer", () => {
    const cfg = qwen3;
    const logits = randomLogits(NT, cfg.nExpert, 61);
    const router = createRouter(moePolicy({ nExpert: 2, mask: "soft", layers: new Map([[1, 8]]) }), 2, new RoutingStats());
    router.route(logits, NT, cfg, 0);
    router.route(logits.subarray(0, 10 * cfg.nExpert), 10, cfg, 0);
    router.route(logits, NT, cfg, 1);
    const [s0, s1] = router.stats();
    expect(s0.layer).toBe(0);
    expect(s0.tokens).toBe(NT + 10);
    expect(s0.meanExperts).toBe(2);
    expect(s0.load!.reduce((a, b) => a + b, 0)).toBe(2 * (NT + 10));
    expect(s1.meanExperts).toBe(8);
    expect(s1.massKept).toBeCloseTo(1, 12);

    // reference mass kept and entropy for layer 1 (all NT tokens) and layer 0 (NT + first 10 again)
    let mass = 0;
    let ent = 0;
    const load = new Array(cfg.nExpert).fill(0);
    const rows = [...Array(NT).keys(), ...Array(10).keys()];
    for (const t of rows) {
      const z = Array.from(logits.subarray(t * cfg.nExpert, (t + 1) * cfg.nExpert));
      const { p } = refScores(cfg, z);
      const order = ranked(p);
      const top8 = order.slice(0, 8).reduce((a, i) => a + p[i], 0);
      mass += (p[order[0]] + p[order[1]]) / top8;
      load[order[0]]++;
      load[order[1]]++;
      const h = -p.reduce((a, x) => a + x * Math.log(x), 0);
      ent += h;
    }
    expect(s0.massKept).toBeCloseTo(mass / rows.length, 5);
    expect(s0.entropy).toBeCloseTo(ent / rows.length, 5);
    expect(s0.load).toEqual(load);
    expect(s0.entropy).toBeGreaterThan(0);
    expect(s0.entropy).toBeLessThan(Math.log(cfg.nExpert));

    router.resetStats();
    expect(router.stats()).toEqual([]);
  });

  it("entropy of sigmoid routers uses the normalised sigmoid scores; mean experts under cumP is fractional", () => {
    const cfg = glm(71);
    const logits = randomLogits(NT, cfg.nExpert, 72, 2.5);
    const router = createRouter(moePolicy({ mask: "soft", cumP: 0.6 }), 1, new RoutingStats());
    const r = router.route(logits, NT, cfg, 0);
    const [s] = router.stats();
    const mean = Array.from(r.counts).reduce((a, b) => a + b, 0) / NT;
    expect(s.meanExperts).toBeCloseTo(mean, 12);
    expect(s.meanExperts).toBeGreaterThan(1);
    expect(s.meanExperts).toBeLessThan(4);
    expect(s.massKept).toBeLessThan(1);
    let ent = 0;
    for (let t = 0; t < NT; t++) {
      const z = Array.from(logits.subarray(t * cfg.nExpert, (t + 1) * cfg.nExpert));
      const sig = z.map((x) => 1 / (1 + Math.exp(-x)));
      const sum = sig.reduce((a, b) => a + b, 0);
      ent -= sig.reduce((a, x) => a + (x / sum) * Math.log(x / sum), 0);
    }
    expect(s.entropy).toBeCloseTo(ent / NT, 5);
  });
});
