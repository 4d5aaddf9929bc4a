#!/usr/bin/env bash
# The study's report (dev/study.sh), from every run's metrics.tsv (dev/demo.sh) and log.jsonl:
#   OUT/study_full.md   mean ± standard error over the seeds, per run kind (pairs and learning rate), loss, epoch
#   OUT/study.md        the same at epochs 0, 1, 5 and the last, each loss's best trained epoch (highest mean
#                       task accuracy of epochs 1 on), the protocol's stability criteria, the step-0 diagnostics
#   OUT/study-KIND.svg  the per-epoch means, one curve per loss, one plot per run kind (dev/svg_plot.awk)
# A run directory is OUT/KIND-seedS (e.g. onpolicy-lr1e-3-seed2). Plain awk, as dev/demo_report.sh.
#   dev/study_report.sh out/study
set -euo pipefail
out=$1
here=$(dirname "$0")
shopt -s nullglob
files=("$out"/*-seed*/metrics.tsv)
[ ${#files[@]} -gt 0 ] || { echo "no $out/*-seed*/metrics.tsv" >&2; exit 1; }

# One table of all runs: kind, seed, then the metrics.tsv columns.
all="$out/all_runs.tsv"
awk -F'\t' -v OFS='\t' '
  FNR == 1 { dir = FILENAME; sub(/\/metrics\.tsv$/, "", dir); sub(/.*\//, "", dir)
             kind = dir; sub(/-seed[0-9]+$/, "", kind); seed = dir; sub(/.*-seed/, "", seed)
             if (NR == 1) print "kind", "seed", $0; next }
  { print kind, seed, $0 }' "${files[@]}" > "$all"

# Mean ± standard error (sample sd / √n) per kind, loss, epoch: study_means.tsv (means and SEs as columns).
awk -F'\t' -v OFS='\t' '
  NR == 1 { ncol = NF; for (i = 1; i <= NF; i++) name[i] = $i; next }
  { key = $1 SUBSEP $3 SUBSEP $4
    if (!(key in seen)) { seen[key] = 1; keys[++nkeys] = key }
    for (i = 6; i <= NF; i++) if ($i != "nan") { n[key, i]++; s[key, i] += $i; ss[key, i] += $i * $i } }
  END {
    printf "kind\tloss\tepoch"
    for (i = 6; i <= ncol; i++) printf "\t%s\t%s_se", name[i], name[i]
    printf "\tseeds\n"
    for (k = 1; k <= nkeys; k++) {
      split(keys[k], part, SUBSEP); printf "%s\t%s\t%s", part[1], part[2], part[3]
      for (i = 6; i <= ncol; i++) {
        c = n[keys[k], i]
        if (c == 0) { printf "\tnan\tnan"; continue }
        m = s[keys[k], i] / c; v = c > 1 ? (ss[keys[k], i] - c * m * m) / (c - 1) : 0
        printf "\t%.6g\t%.6g", m, (c > 1 && v > 0 ? sqrt(v / c) : 0)
      }
      printf "\t%d\n", n[keys[k], 6]
    }
  }' "$all" > "$out/study_means.tsv"

# Markdown tables of chosen columns: every epoch, or only 0, 1, 5 and the last.
last_epoch=$(awk -F'\t' 'NR > 1 && $3 > m { m = $3 } END { print m + 0 }' "$out/study_means.tsv")
table() {  # table all|summary
  awk -F'\t' -v filter="$1" -v last="$last_epoch" '
    function cell(i) { return $i == "nan" ? "–" : sprintf("%.3f ± %.3f", $i, $(i + 1)) }
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i
              nw = split("task_accuracy degeneration_rate sampled_entropy greedy_entropy distinct_2 eval/delta/p50 " \
                         "eval/z/mean eval/rewards/accuracies eval/logps/chosen", want, " ")
              printf "| kind | loss | epoch | seeds |"
              for (w = 1; w <= nw; w++) printf " %s |", want[w]
              printf "\n|---|---|---|---|"; for (w = 1; w <= nw; w++) printf "---|"; printf "\n"; next }
    filter == "all" || $3 == 0 || $3 == 1 || $3 == 5 || $3 == last {
      printf "| %s | %s | %s | %s |", $1, $2, $3, $NF
      for (w = 1; w <= nw; w++) printf " %s |", cell(col[want[w]]); printf "\n" }
  ' "$out/study_means.tsv"
}
table all > "$out/study_full.md"

# The protocol's verdicts (docs/stability.md): per kind and loss, stable at epoch 5 and at the last epoch?
#   (a) degeneration <= SFT's + 0.05   (b) sampled entropy within ±25% of SFT's
#   (c) median held-out Δ at e <= 1.1 × its value at e/2 + 0.1
verdicts() {
  awk -F'\t' '
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    { k = $1 FS $2; e = $3 + 0; if (!(k in seen)) { seen[k] = 1; order[++n] = k }
      if (e > last[k]) last[k] = e
      deg[k, e] = $(col["degeneration_rate"]); ent[k, e] = $(col["sampled_entropy"])
      dlt[k, e] = $(col["eval/delta/p50"]); acc[k, e] = $(col["task_accuracy"]); acc_se[k, e] = $(col["task_accuracy_se"]) }
    function check(k, e,   a, b, c, half) {
      half = int(e / 2)
      a = deg[k, e] <= deg[k, 0] + 0.05
      b = ent[k, e] >= 0.75 * ent[k, 0] && ent[k, e] <= 1.25 * ent[k, 0]
      c = dlt[k, e] <= 1.1 * dlt[k, half] + 0.1
      return (a ? "a" : "-") (b ? "b" : "-") (c ? "c" : "-")
    }
    END {
      print "| kind | loss | epoch 5: criteria met | stable | last epoch: criteria met | stable | best trained epoch (task acc) |"
      print "|---|---|---|---|---|---|---|"
      for (i = 1; i <= n; i++) {
        k = order[i]; split(k, p, FS); best = 1  # the best trained epoch (epoch 0 is the SFT model)
        for (e = 2; e <= last[k]; e++) if (acc[k, e] > acc[k, best]) best = e
        c5 = check(k, 5); cl = check(k, last[k])
        printf "| %s | %s | %s | %s | %s (epoch %d) | %s | %d (%.3f ± %.3f) |\n", p[1], p[2], c5,
          (c5 == "abc" ? "yes" : "no"), cl, last[k], (cl == "abc" ? "yes" : "no"), best, acc[k, best], acc_se[k, best]
      }
    }' "$out/study_means.tsv"
}

# Step-0 diagnostics of every run: share of training pairs above m_r, median Δ, and the warning.
step0() {
  echo "| run | loss | pairs | Δ 5% | Δ 50% | Δ 95% | above m_r | warning |"
  echo "|---|---|---|---|---|---|---|---|"
  for f in "$out"/*-seed*/*/log.jsonl; do
    run=$(basename "$(dirname "$(dirname "$f")")"); loss=$(basename "$(dirname "$f")")
    line=$(grep -m1 '"step0/pairs"' "$f" || true)
    [ -n "$line" ] || continue
    warned=no
    grep -q "^warning: .*right margin" "$(dirname "$(dirname "$f")")/$loss.train.log" && warned=yes
    printf '%s\n' "$line" | awk -v run="$run" -v loss="$loss" -v warned="$warned" '
      function field(key,   at, rest) { at = index($0, "\"" key "\":"); if (at == 0) return "nan"
        rest = substr($0, at + length(key) + 3); match(rest, /^[^,}]*/); return substr(rest, 1, RLENGTH) }
      { printf "| %s | %s | %s | %.3f | %.3f | %.3f | %.1f%% | %s |\n", run, loss, field("step0/pairs"),
          field("step0/delta/p05"), field("step0/delta/p50"), field("step0/delta/p95"),
          100 * field("step0/frac_above_right"), warned }'
  done
}

{
  echo "# Stability study: mean ± standard error over seeds"
  echo
  echo "Generated by dev/study_report.sh from $(ls -d "$out"/*-seed*/ | wc -l) runs in $out."
  echo "Epochs 0 (the SFT model), 1, 5 and the last; every epoch is in study_full.md."
  echo
  table summary
  echo
  echo "## The protocol's criteria (a: degeneration, b: entropy, c: Δ stopped growing) and the best epoch"
  echo
  verdicts
  echo
  echo "## Step-0 diagnostics (training pairs, initial weights)"
  echo
  step0
} > "$out/study.md"

# One plot per run kind: the per-epoch means of every metric, one curve per loss.
for kind in $(awk -F'\t' 'NR > 1 { print $1 }' "$out/study_means.tsv" | sort -u); do
  awk -F'\t' -v OFS='\t' -v kind="$kind" '
    NR == 1 { printf "loss\tepoch\tstep"; for (i = 4; i < NF; i += 2) printf "\t%s", $i; printf "\n"; next }
    $1 == kind { printf "%s\t%s\t0", $2, $3; for (i = 4; i < NF; i += 2) printf "\t%s", $i; printf "\n" }
  ' "$out/study_means.tsv" > "$out/study-$kind.tsv"
  awk -F'\t' -v first=4 -v xlabel=epoch -v generator=dev/study_report.sh -f "$here/svg_plot.awk" \
    "$out/study-$kind.tsv" > "$out/study-$kind.svg"
done
cat "$out/study.md"
