/**
 * KL divergence of a run against a base file's log-probabilities, accumulated as llama.cpp's perplexity
 * tool does (`--kl-divergence`), and its report: per-chunk lines and the final statistics blocks.
 */
import { fmt } from "./format.ts";

/** Mean and its standard error from sums, as llama.cpp (0 error when 10 values or fewer). */
export function meanAndUncertainty(sum: number, sum2: number, count: number): [number, number] {
  if (count < 1) return [0, 0];
  const f = sum / count;
  let df = sum2 / count - f * f;
  df = df > 0 && count > 10 ? Math.sqrt(df / (count - 1)) : 0;
  return [f, df];
}

function covariance(suma: number, sumb: number, sumab: number, count: number): number {
  if (count < 10) return 0;
  return (sumab / count - (suma / count) * (sumb / count)) / (count - 1);
}

/** llama.cpp's percentile: linear interpolation between sorted values. */
export function percentile(sorted: Float32Array, fraction: number): number {
  if (fraction <= 0) return sorted[0];
  if (fraction >= 1) return sorted[sorted.length - 1];
  let p = Math.fround(fraction * (sorted.length - 1));
  const ip = Math.floor(p);
  p -= ip;
  return (1 - p) * sorted[ip] + p * sorted[Math.min(ip + 1, sorted.length - 1)];
}

export function median(sorted: Float32Array): number {
  const n = sorted.length;
  return n % 2 === 0 ? 0.5 * (sorted[n / 2] + sorted[n / 2 - 1]) : sorted[(n - 1) / 2];
}

export class KldAccumulator {
  sumNll = 0;
  sumNll2 = 0;
  sumNllBase = 0;
  sumNllBase2 = 0;
  sumNllNllBase = 0;
  sumKld = 0;
  sumKld2 = 0;
  sumPDiff = 0;
  sumPDiff2 = 0;
  sumPDiff4 = 0;
  maxPDiff = 0;
  nSameTop = 0;
  count = 0;
  private kldValues: Float32Array;
  private pDiffValues: Float32Array;

  constructor(capacity = 1024) {
    this.kldValues = new Float32Array(capacity);
    this.pDiffValues = new Float32Array(capacity);
  }

  /**
   * Adds one scored position: `logits` (n_vocab raw logits of the current run), `record` (the base
   * file's record for that position) and `tok` (the token that follows).
   */
  add(logits: Float32Array, nVocab: number, record: Uint16Array, tok: number): void {
    let maxLogit = logits[0];
    let imax = 0;
    for (let i = 1; i < nVocab; i++) {
      if (logits[i] > maxLogit) {
        maxLogit = logits[i];
        imax = i;
      }
    }
    let sumExp = 0;
    for (let i = 0; i < nVocab; i++) sumExp += Math.fround(Math.exp(Math.fround(logits[i] - maxLogit)));
    const logSumExp = Math.fround(Math.log(sumExp));
    const head = new Float32Array(record.buffer, record.byteOffset, 2);
    const scale = head[0];
    const minLogProb = head[1];
    const q = record.subarray(4);

    const nll = Math.fround(Math.fround(maxLogit + logSumExp) - logits[tok]);
    const nllBase = -Math.fround(Math.fround(scale * q[tok]) + minLogProb);
    this.sumNll += nll;
    this.sumNll2 += Math.fround(nll * nll);
    this.sumNllBase += nllBase;
    this.sumNllBase2 += Math.fround(nllBase * nllBase);
    this.sumNllNllBase += Math.fround(nll * nllBase);

    const logNorm = Math.fround(maxLogit + logSumExp);
    let kld = 0;
    let imaxBase = 0;
    let maxBase = 0;
    for (let i = 0; i < nVocab; i++) {
      const lpBase = Math.fround(Math.fround(scale * q[i]) + minLogProb);
      if (i === 0 || lpBase > maxBase) {
        maxBase = lpBase;
        imaxBase = i;
      }
      if (lpBase > -16) {
        const pBase = Math.fround(Math.exp(lpBase));
        kld += Math.fround(pBase * Math.fround(Math.fround(lpBase - logits[i]) + logNorm));
      }
    }
    this.sumKld += kld;
    this.sumKld2 += kld * kld;
    if (imax === imaxBase) this.nSameTop++;

    const pDiff = Math.fround(Math.fround(Math.exp(-nll)) - Math.fround(Math.exp(-nllBase)));
    this.sumPDiff += pDiff;
    const pDiff2 = pDiff * pDiff;
    this.sumPDiff2 += pDiff2;
    this.sumPDiff4 += pDiff2 * pDiff2;
    this.maxPDiff = Math.max(this.maxPDiff, Math.abs(pDiff));

    if (this.count === this.kldValues.length) {
      const grow = (a: Float32Array) => {
        const b = new Float32Array(a.length * 2);
        b.set(a);
        return b;
      };
      this.kldValues = grow(this.kldValues);
      this.pDiffValues = grow(this.pDiffValues);
    }
    this.kldValues[this.count] = kld;
    this.pDiffValues[this.count] = pDiff;
    this.count++;
  }

  /** running figures printed after each chunk and used by `tradeoff` */
  summary(): KldSummary {
    const n = this.count;
    const logPpl = meanAndUncertainty(this.sumNll, this.sumNll2, n);
    const logPplBase = meanAndUncertainty(this.sumNllBase, this.sumNllBase2, n);
    const cov = covariance(this.sumNll, this.sumNllBase, this.sumNllNllBase, n);
    const ppl = Math.exp(logPpl[0]);
    const pplBase = Math.exp(logPplBase[0]);
    const ratioLog = logPpl[0] - logPplBase[0];
    const ratioLogErr = Math.sqrt(Math.max(0, logPpl[1] ** 2 + logPplBase[1] ** 2 - 2 * cov));
    const kld = meanAndUncertainty(this.sumKld, this.sumKld2, n);
    const mse = meanAndUncertainty(this.sumPDiff2, this.sumPDiff4, n);
    const rms = Math.sqrt(mse[0]);
    const sameTop = n > 0 ? this.nSameTop / n : 0;
    const pDiff = meanAndUncertainty(this.sumPDiff, this.sumPDiff2, n);
    return {
      count: n,
      ppl,
      pplErr: ppl * logPpl[1],
      pplBase,
      pplBaseErr: pplBase * logPplBase[1],
      logPplCor: cov / (logPpl[1] * logPplBase[1]),
      logRatio: ratioLog,
      logRatioErr: ratioLogErr,
      ratio: Math.exp(ratioLog),
      ratioErr: Math.exp(ratioLog) * ratioLogErr,
      diff: ppl - pplBase,
      diffErr: Math.sqrt(
        Math.max(0, (ppl * logPpl[1]) ** 2 + (pplBase * logPplBase[1]) ** 2 - 2 * ppl * pplBase * cov),
      ),
      kld: kld[0],
      kldErr: kld[1],
      pDiffRms: rms,
      pDiffRmsErr: rms > 0 ? (0.5 / rms) * mse[1] : 0,
      pDiffMean: pDiff[0],
      pDiffMeanErr: pDiff[1],
      sameTop,
      sameTopErr: n > 1 ? Math.sqrt((sameTop * (1 - sameTop)) / (n - 1)) : 0,
    };
  }

  /** sorted copies of the per-position KLD and Δp values */
  sortedValues(): { kld: Float32Array; pDiff: Float32Array } {
    return {
      kld: this.kldValues.slice(0, this.count).sort(),
      pDiff: this.pDiffValues.slice(0, this.count).sort(),
    };
  }
}

export interface KldSummary {
  count: number;
  ppl: number;
  pplErr: number;
  pplBase: number;
  pplBaseErr: number;
  logPplCor: number;
  logRatio: number;
  logRatioErr: number;
  ratio: number;
  ratioErr: number;
  diff: number;
  diffErr: number;
  kld: number;
  kldErr: number;
  pDiffRms: number;
  pDiffRmsErr: number;
  pDiffMean: number;
  pDiffMeanErr: number;
  sameTop: number;
  sameTopErr: number;
}

export const KLD_CHUNK_HEADER =
  "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p";

/** the line llama.cpp prints after each chunk */
export function kldChunkLine(chunk: number, s: KldSummary): string {
  return (
    fmt(chunk, 4, 0) +
    `    ${fmt(s.ppl, 9, 4)} ± ${fmt(s.pplErr, 9, 4)}` +
    `    ${fmt(s.logRatio, 10, 5)} ± ${fmt(s.logRatioErr, 10, 5)}` +
    `    ${fmt(s.kld, 10, 5)} ± ${fmt(s.kldErr, 10, 5)}` +
    `    ${fmt(100 * s.pDiffRms, 6, 3)} ± ${fmt(100 * s.pDiffRmsErr, 6, 3)} %` +
    `    ${fmt(100 * s.sameTop, 6, 3)} ± ${fmt(100 * s.sameTopErr, 6, 3)} %`
  );
}

/** llama.cpp's final statistics (empty when fewer than 100 positions were scored, as llama.cpp). */
export function kldReport(acc: KldAccumulator): string {
  if (acc.count < 100) return "";
  const s = acc.summary();
  const { kld, pDiff } = acc.sortedValues();
  const L: string[] = [];
  L.push("====== Perplexity statistics ======");
  L.push(`Mean PPL(Q)                   : ${fmt(s.ppl, 10, 6)} ± ${fmt(s.pplErr, 10, 6)}`);
  L.push(`Mean PPL(base)                : ${fmt(s.pplBase, 10, 6)} ± ${fmt(s.pplBaseErr, 10, 6)}`);
  L.push(`Cor(ln(PPL(Q)), ln(PPL(base))): ${fmt(100 * s.logPplCor, 6, 2)}%`);
  L.push(`Mean ln(PPL(Q)/PPL(base))     : ${fmt(s.logRatio, 10, 6)} ± ${fmt(s.logRatioErr, 10, 6)}`);
  L.push(`Mean PPL(Q)/PPL(base)         : ${fmt(s.ratio, 10, 6)} ± ${fmt(s.ratioErr, 10, 6)}`);
  L.push(`Mean PPL(Q)-PPL(base)         : ${fmt(s.diff, 10, 6)} ± ${fmt(s.diffErr, 10, 6)}`);
  L.push("");
  L.push("====== KL divergence statistics ======");
  L.push(`Mean    KLD: ${fmt(s.kld, 10, 6)} ± ${fmt(s.kldErr, 10, 6)}`);
  const k = (label: string, v: number) => L.push(`${label} KLD: ${fmt(v, 10, 6)}`);
  k("Maximum", kld[kld.length - 1]);
  k("99.9%  ", percentile(kld, 0.999));
  k("99.0%  ", percentile(kld, 0.99));
  k("95.0%  ", percentile(kld, 0.95));
  k("90.0%  ", percentile(kld, 0.9));
  k("Median ", median(kld));
  k("10.0%  ", percentile(kld, 0.1));
  k(" 5.0%  ", percentile(kld, 0.05));
  k(" 1.0%  ", percentile(kld, 0.01));
  k(" 0.1%  ", percentile(kld, 0.001));
  k("Minimum", kld[0]);
  L.push("");
  L.push("====== Token probability statistics ======");
  L.push(`Mean    Δp: ${fmt(100 * s.pDiffMean, 6, 3)} ± ${fmt(100 * s.pDiffMeanErr, 5, 3)} %`);
  const p = (label: string, v: number) => L.push(`${label} Δp: ${fmt(100 * v, 6, 3)}%`);
  p("Maximum", pDiff[pDiff.length - 1]);
  p("99.9%  ", percentile(pDiff, 0.999));
  p("99.0%  ", percentile(pDiff, 0.99));
  p("95.0%  ", percentile(pDiff, 0.95));
  p("90.0%  ", percentile(pDiff, 0.9));
  p("75.0%  ", percentile(pDiff, 0.75));
  p("Median ", median(pDiff));
  p("25.0%  ", percentile(pDiff, 0.25));
  p("10.0%  ", percentile(pDiff, 0.1));
  p(" 5.0%  ", percentile(pDiff, 0.05));
  p(" 1.0%  ", percentile(pDiff, 0.01));
  p(" 0.1%  ", percentile(pDiff, 0.001));
  p("Minimum", pDiff[0]);
  L.push(`RMS Δp    : ${fmt(100 * s.pDiffRms, 6, 3)} ± ${fmt(100 * s.pDiffRmsErr, 5, 3)} %`);
  L.push(`Same top p: ${fmt(100 * s.sameTop, 6, 3)} ± ${fmt(100 * s.sameTopErr, 5, 3)} %`);
  return L.join("\n") + "\n";
}
