// Preloaded by bench/startup.ts (NODE_OPTIONS=--import): when the process exits, appends the CPU time it
// used (user + system, all threads, in ms) to the file named by TSMOE_CPU_LOG.
import { appendFileSync } from "node:fs";

process.on("exit", () => {
  const u = process.cpuUsage();
  if (process.env.TSMOE_CPU_LOG) appendFileSync(process.env.TSMOE_CPU_LOG, `${(u.user + u.system) / 1000}\n`);
});
