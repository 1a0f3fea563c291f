#!/usr/bin/env bash
# tsmoe tune on the embedded model: calibration = the first half of models/eval.txt, evaluation = the
# second half (split at the first line break after the middle character), -c 256, one thread; budgets
# 0.75, 0.5, 0.25 with per-layer counts and with per-layer top-p thresholds (--dynamic).
# Usage: bench/tune.sh [OUTDIR] (default: a temporary directory); each run's report goes to OUTDIR/<mode>-<budget>.md,
# its progress to OUTDIR/<mode>-<budget>.log (with the wall and CPU seconds at the end).
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
for budget in ${BUDGETS:-0.5 0.75 0.25}; do
  for mode in counts dynamic; do
    flag=""; [ "$mode" = dynamic ] && flag="--dynamic"
    echo "== $mode $budget" >&2
    { time ./bin/tsmoe tune -f "$out/calib.txt" --eval-file "$out/heldout.txt" -c 256 --chunks "${CHUNKS:-16}" \
        --eval-chunks "${EVAL_CHUNKS:-32}" -t 1 --budget "$budget" $flag > "$out/$mode-$budget.md"; } 2> "$out/$mode-$budget.log"
    tail -4 "$out/$mode-$budget.log" >&2
  done
done
echo "reports in $out" >&2
