/**
 * Evaluating many expert settings against the model's own routing on the same text (`tsmoe tune`): the
 * full-expert run's log-probabilities are saved once (a llama.cpp KL-divergence base file), then each
 * setting is one KL-divergence run over the same chunks: mean KLD, PPL, same top token and the mean
 * experts per token it used (overall and per layer). The model is loaded once; one session switches
 * between the settings (Session.setMoe).
 */
import type { Model, MoeOptions, Session } from "../model/api.ts";
import { meanExperts } from "./moe-report.ts";
import { KldBaseReader, KldBaseWriter } from "./kld-file.ts";
import { planChunks } from "./perplexity.ts";
import { runKlDivergence, runPerplexity } from "./run-chunks.ts";

export interface MoeRun {
  kld: number;
  kldErr: number;
  ppl: number;
  /** the model's own perplexity on the same positions */
  pplBase: number;
  sameTop: number;
  /** mean routed experts per token over all MoE layers */
  meanExperts: number;
  /** mean routed experts per token of each MoE layer */
  layerExperts: Map<number, number>;
  /** scored positions */
  count: number;
}

export interface EvalText {
  tokens: number[];
  bos: number | null;
  nCtx: number;
  /** chunks to evaluate (-1: all the text holds) */
  chunks: number;
}

export class MoeEvaluator {
  private constructor(
    /** one session, its expert setting changed between runs */
    private readonly session: Session,
    private readonly reader: KldBaseReader,
    private readonly nVocab: number,
    private readonly nBatch: number,
    private readonly bos: number | null,
    /** the model's own run */
    readonly base: MoeRun,
  ) {}

  /** Runs the model's own routing over the text, saving its log-probabilities to `basePath`. */
  static async create(model: Model, text: EvalText, o: { nBatch: number; basePath: string }): Promise<MoeEvaluator> {
    const nVocab = model.hparams.nVocab;
    const session = model.createSession({ nCtx: text.nCtx });
    const plan = planChunks(text.tokens.length, text.nCtx, text.chunks);
    const writer = new KldBaseWriter(o.basePath, {
      nCtx: text.nCtx,
      nVocab,
      nChunk: plan.nChunk,
      tokens: Int32Array.from(text.tokens.slice(0, plan.nChunk * text.nCtx)),
    });
    let base: MoeRun;
    try {
      const run = await runPerplexity(session, text.tokens, plan, { nVocab, bos: text.bos, nBatch: o.nBatch, kldOut: writer });
      const { ppl } = run.acc.final();
      base = { kld: 0, kldErr: 0, ppl, pplBase: ppl, sameTop: 1, ...expertsOf(session), count: run.acc.count };
    } finally {
      writer.close();
    }
    return new MoeEvaluator(session, new KldBaseReader(o.basePath), nVocab, o.nBatch, text.bos, base);
  }

  /** the MoE layers (those the model's run routed), in order */
  get moeLayers(): number[] {
    return [...this.base.layerExperts.keys()];
  }

  /** chunks in the base file */
  get nChunk(): number {
    return this.reader.header.nChunk;
  }

  /** One setting over the first `chunks` chunks (default: all of them). */
  async evaluate(moe: MoeOptions | undefined, chunks?: number): Promise<MoeRun> {
    this.session.setMoe(moe);
    const run = await runKlDivergence(this.session, this.reader, { nVocab: this.nVocab, bos: this.bos, nBatch: this.nBatch, chunks });
    const s = run.acc.summary();
    return { kld: s.kld, kldErr: s.kldErr, ppl: s.ppl, pplBase: s.pplBase, sameTop: s.sameTop, ...expertsOf(this.session), count: s.count };
  }

  close(): void {
    this.reader.close();
  }
}

function expertsOf(session: Session): Pick<MoeRun, "meanExperts" | "layerExperts"> {
  const stats = session.moeStats();
  return { meanExperts: meanExperts(stats), layerExperts: new Map(stats.map((s) => [s.layer, s.meanExperts])) };
}
