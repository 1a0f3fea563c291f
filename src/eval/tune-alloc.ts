/**
 * Allocating an expert budget across layers (`tsmoe tune`): every layer has a few options (an expert count
 * or a top-p threshold), each with a cost (experts per token computed in that layer) and a loss (the KL
 * divergence of the model's output when only that layer takes the option). Assuming the losses add up, the
 * best schedule is the one with the least total loss whose total cost stays within the budget: a
 * multiple-choice knapsack, solved exactly by dynamic programming over layers and cost units.
 *
 * Why not greedy (take the next expert away where it costs the least KLD per expert saved)? Greedy is exact
 * only when every layer's loss curve is convex in the cost; measured curves are not always (two experts
 * may cost less than one to remove, or noise bends the curve), and the exact solution is cheap:
 * layers x options x cost units steps (48 x 8 x 384 for Qwen3-30B-A3B counts).
 */

export interface LayerOption {
  /** experts per token this option computes in its layer (any non-negative number) */
  cost: number;
  /** the loss (mean KLD) when only this layer takes the option */
  loss: number;
}

export interface Allocation {
  /** the option chosen for each layer (an index into that layer's options) */
  choice: number[];
  /** total cost and total (summed) loss of the choice */
  cost: number;
  loss: number;
}

/**
 * The choice of one option per layer with the least summed loss and summed cost ≤ budget, or undefined
 * when even the cheapest options exceed it. Costs are counted in whole `unit`s, each rounded up (so the
 * result never exceeds the budget; unit 1 is exact for integer costs). Ties go to the cheaper total cost.
 */
export function allocate(layers: LayerOption[][], budget: number, unit = 1): Allocation | undefined {
  if (!(unit > 0)) throw new RangeError(`allocate: unit must be positive (got ${unit})`);
  const units = (c: number) => Math.ceil(c / unit - 1e-9);
  const capacity = Math.floor(budget / unit + 1e-9);
  if (capacity < 0) return undefined;
  // best[u]: least loss of the layers so far with exactly u units spent (Infinity: impossible)
  let best = new Float64Array(capacity + 1).fill(Infinity);
  best[0] = 0;
  const picks: Int32Array[] = [];
  for (const options of layers) {
    if (options.length === 0) throw new RangeError("allocate: a layer has no options");
    const next = new Float64Array(capacity + 1).fill(Infinity);
    const pick = new Int32Array(capacity + 1).fill(-1);
    for (let u = 0; u <= capacity; u++) {
      if (best[u] === Infinity) continue;
      options.forEach((o, i) => {
        const v = u + units(o.cost);
        if (v > capacity) return;
        const loss = best[u] + o.loss;
        if (loss < next[v]) {
          next[v] = loss;
          pick[v] = i;
        }
      });
    }
    picks.push(pick);
    best = next;
  }
  let end = -1;
  for (let u = 0; u <= capacity; u++) if (best[u] < Infinity && (end < 0 || best[u] < best[end])) end = u;
  if (end < 0) return undefined;
  const choice = new Array<number>(layers.length);
  for (let l = layers.length - 1, u = end; l >= 0; l--) {
    choice[l] = picks[l][u];
    u -= units(layers[l][choice[l]].cost);
  }
  return {
    choice,
    cost: choice.reduce((s, c, l) => s + layers[l][c].cost, 0),
    loss: choice.reduce((s, c, l) => s + layers[l][c].loss, 0),
  };
}

/** `0-1:6,2:4,3-5:3`: a per-layer value map as a spec, consecutive layers with equal values merged. */
export function layerSpec(values: Map<number, number | string>): string {
  const layers = [...values.keys()].sort((a, b) => a - b);
  const items: string[] = [];
  for (let i = 0; i < layers.length; ) {
    let j = i;
    while (j + 1 < layers.length && layers[j + 1] === layers[j] + 1 && values.get(layers[j + 1]) === values.get(layers[i])) j++;
    const range = j > i ? `${layers[i]}-${layers[j]}` : `${layers[i]}`;
    items.push(`${range}:${values.get(layers[i])}`);
    i = j + 1;
  }
  return items.join(",");
}
