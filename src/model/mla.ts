/**
 * Multi-head latent attention (DeepSeek-V2/V3, llama.cpp's deepseek2 graph with is_mla), in the absorbed
 * form llama.cpp runs: the KV cache holds one "KV head" per token, the normalised latent kv_cmpr
 * (kv_lora_rank values) followed by the RoPE'd shared key part k_pe (n_rot values); V is the latent.
 * Each query head is [wk_b[h] q_nope[h], rope(q_pe[h])], so q.k = q_nope.k_nope + q_pe.k_pe without ever
 * decompressing K; each head's attention output (a latent) is decompressed by wv_b[h] before attn_output.
 *
 * Shapes: q rows nHead x (nope + rope) (from q_a -> norm -> q_b, or one wq), kv_a_mqa rows kvLora + rope;
 * the graph's q/k/v/attn buffers use the model's head_count_kv 1, key_length kvLora + rope,
 * value_length kvLora, as the GGUF declares them.
 */
import type { LayerGraph } from "./graph.ts";
import { rmsNorm } from "./ops.ts";
import type { MlaLayer } from "./weights.ts";

/** MLA dimensions of a model */
export interface MlaShape {
  nHead: number;
  /** q_lora_rank (0: no q LoRA) */
  qLora: number;
  kvLora: number;
  /** per-head no-RoPE and RoPE parts of q/k, and the decompressed value width */
  nope: number;
  rope: number;
  vDim: number;
}

/** The session's MLA scratch buffers for a batch of g.n tokens (kept by the graph, see LayerGraph.buffer). */
function scratch(g: LayerGraph, s: MlaShape) {
  const n = g.n;
  const width = Math.max(s.nope, s.kvLora, s.vDim);
  return {
    qa: g.buffer("mla.qa", n * s.qLora),
    q: g.buffer("mla.q", n * s.nHead * (s.nope + s.rope)),
    kv: g.buffer("mla.kv", n * (s.kvLora + s.rope)),
    pe: g.buffer("mla.pe", n * s.nHead * s.rope),
    gatherIn: g.buffer("mla.gatherIn", n * width),
    gatherOut: g.buffer("mla.gatherOut", n * width),
    heads: g.buffer("mla.heads", n * s.nHead * s.vDim),
  };
}

/** rows [n][h][off .. off+len) of a buffer of nHead heads of `stride` per head (row width nHead*stride) */
function gatherHead(src: Float32Array, n: number, rowWidth: number, off: number, len: number, dst: Float32Array): void {
  for (let t = 0; t < n; t++) dst.set(src.subarray(t * rowWidth + off, t * rowWidth + off + len), t * len);
}

function scatterHead(src: Float32Array, n: number, rowWidth: number, off: number, len: number, dst: Float32Array): void {
  for (let t = 0; t < n; t++) dst.set(src.subarray(t * len, (t + 1) * len), t * rowWidth + off);
}

/**
 * Attention of layer il from the normalised input x: fills the graph's q/k/v, attends (cache, flash or
 * F32 kernel as configured), decompresses with wv_b and returns the rows [n x nHead * vDim] to project
 * with attn_output.
 */
export function mlaAttention(g: LayerGraph, L: MlaLayer, s: MlaShape, x: Float32Array, il: number): Float32Array {
  const w = L.mla;
  const n = g.n;
  const eps = g.hp.rmsEps;
  const sc = scratch(g, s);
  const headK = s.nope + s.rope; // q head width before absorption
  const kRow = s.kvLora + s.rope; // cache key width
  const qRowIn = s.nHead * headK;
  const qRowOut = s.nHead * kRow;

  // q
  if (w.wqA) {
    g.backend.matmul(w.wqA, x, n, sc.qa);
    rmsNorm(sc.qa, sc.qa, n, s.qLora, eps, w.qANorm);
    g.backend.matmul(w.wqB, sc.qa, n, sc.q);
  } else g.backend.matmul(w.wq, x, n, sc.q);

  // compressed kv + shared rope key
  g.backend.matmul(w.wkvA, x, n, sc.kv);
  const k = g.k;
  const v = g.v;
  // k_pe: RoPE (one head of n_rot) into the key's tail
  gatherHead(sc.kv, n, kRow, s.kvLora, s.rope, sc.pe);
  g.rope(sc.pe, 1, s.rope);
  scatterHead(sc.pe, n, kRow, s.kvLora, s.rope, k);
  // kv_cmpr: RMSNorm, the key's head and the value
  rmsNorm(sc.kv, sc.kv, n, s.kvLora, eps, w.kvANorm, kRow);
  for (let t = 0; t < n; t++) {
    const lat = sc.kv.subarray(t * kRow, t * kRow + s.kvLora);
    k.set(lat, t * kRow);
    v.set(lat, t * s.kvLora);
  }

  // q_pe: RoPE per head into each query head's tail
  const q = g.q;
  for (let t = 0; t < n; t++)
    for (let h = 0; h < s.nHead; h++)
      sc.pe.set(sc.q.subarray(t * qRowIn + h * headK + s.nope, t * qRowIn + (h + 1) * headK), (t * s.nHead + h) * s.rope);
  g.rope(sc.pe, s.nHead, s.rope);
  for (let t = 0; t < n; t++)
    for (let h = 0; h < s.nHead; h++)
      q.set(sc.pe.subarray((t * s.nHead + h) * s.rope, (t * s.nHead + h + 1) * s.rope), t * qRowOut + h * kRow + s.kvLora);
  // q_nope absorbed through wk_b per head
  for (let h = 0; h < s.nHead; h++) {
    gatherHead(sc.q, n, qRowIn, h * headK, s.nope, sc.gatherIn);
    g.backend.matmul(w.wkB[h], sc.gatherIn, n, sc.gatherOut);
    scatterHead(sc.gatherOut, n, qRowOut, h * kRow, s.kvLora, q);
  }

  g.attend(L, il);

  // decompress each head's latent output with wv_b
  const attn = g.attn;
  for (let h = 0; h < s.nHead; h++) {
    gatherHead(attn, n, s.nHead * s.kvLora, h * s.kvLora, s.kvLora, sc.gatherIn);
    g.backend.matmul(w.wvB[h], sc.gatherIn, n, sc.gatherOut);
    scatterHead(sc.gatherOut, n, s.nHead * s.vDim, h * s.vDim, s.vDim, sc.heads);
  }
  return sc.heads;
}
