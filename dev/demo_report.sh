#!/usr/bin/env bash
# The demo's report from its per-epoch metrics (metrics.tsv written by dev/demo.sh: a header, then one row per
# loss and epoch, "nan" where a value is missing):
#   OUT/summary.md      a markdown table, one row per loss and epoch
#   OUT/stability.svg   one panel per metric, one curve per loss over the epochs
# Plain awk (POSIX; mawk and gawk), so it runs on a fresh machine without Python packages; the panels are
# dev/svg_plot.awk's, which dev/plot_runs.sh draws too.
#   dev/demo_report.sh out/demo/metrics.tsv out/demo
set -euo pipefail
metrics=$1
out=$2
mkdir -p "$out"

awk -F'\t' '
  NR == 1 { printf "| "; for (i = 1; i <= NF; i++) printf "%s | ", $i; printf "\n|"
            for (i = 1; i <= NF; i++) printf "---|"; printf "\n"; next }
  { printf "| %s | %s | %s |", $1, $2, $3
    for (i = 4; i <= NF; i++) printf " %s |", ($i == "nan" ? "–" : sprintf("%.3f", $i)); printf "\n" }
' "$metrics" > "$out/summary.md"

awk -F'\t' -v first=4 -v xlabel=epoch -v generator=dev/demo_report.sh -f "$(dirname "$0")/svg_plot.awk" \
  "$metrics" > "$out/stability.svg"
