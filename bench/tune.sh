#!/usr/bin/env bash
# tsmoe tune on the embedded model: calibration = the first half of models/eval.txt, evaluation = the
# second half (split at the first line break after the middle character), -c 256, one thread; budgets
# 0.75, 0.5, 0.25 with per-layer counts and with per-layer top-p thresholds (--dynamic).
# Usage: [CHUNKS=16 EVAL_CHUNKS=32 BUDGETS=0.75,0.5,0.25] bench/tune.sh [OUTDIR] (default: a temporary directory);
# each mode's report goes to OUTDIR/<mode>.md, its progress to OUTDIR/<mode>.log (wall and CPU seconds at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
node -e '
const fs = require("fs");
const t = fs.readFileSync("models/eval.txt", "utf8");
const i = t.indexOf("\n", Math.floor(t.length / 2)) + 1;
fs.writeFileSync(process.argv[1] + "/calib.txt", t.slice(0, i));
fs.writeFileSync(process.argv[1] + "/heldout.txt", t.slice(i));
' "$out"
# one run per mode tunes all the budgets (the per-layer sensitivities are measured once)
for mode in counts dynamic; do
  flag=""; [ "$mode" = dynamic ] && flag="--dynamic"
  echo "== $mode" >&2
  { time ./bin/tsmoe tune -f "$out/calib.txt" --eval-file "$out/heldout.txt" -c 256 --chunks "${CHUNKS:-16}" \
      --eval-chunks "${EVAL_CHUNKS:-32}" -t 1 --budget "${BUDGETS:-0.75,0.5,0.25}" $flag > "$out/$mode.md"; } 2> "$out/$mode.log"
  tail -4 "$out/$mode.log" >&2
done
echo "reports in $out" >&2
