#!/usr/bin/env bash
# The demo's report from its per-epoch metrics (metrics.tsv written by dev/demo.sh: a header, then one row per
# loss and epoch, "nan" where a value is missing):
#   OUT/summary.md      a markdown table, one row per loss and epoch
#   OUT/stability.svg   one panel per metric, one curve per loss over the epochs
# Plain awk (POSIX; mawk and gawk), so it runs on a fresh machine without Python packages.
#   dev/demo_report.sh out/demo/metrics.tsv out/demo
set -euo pipefail
metrics=$1
out=$2

awk -F'\t' '
  NR == 1 { printf "| "; for (i = 1; i <= NF; i++) printf "%s | ", $i; printf "\n|"
            for (i = 1; i <= NF; i++) printf "---|"; printf "\n"; next }
  { printf "| %s | %s | %s |", $1, $2, $3
    for (i = 4; i <= NF; i++) printf " %s |", ($i == "nan" ? "–" : sprintf("%.3f", $i)); printf "\n" }
' "$metrics" > "$out/summary.md"

awk -F'\t' '
  function esc(s) { gsub(/&/, "\\&amp;", s); gsub(/</, "\\&lt;", s); return s }
  function num(v) { return sprintf("%.3g", v) }
  NR == 1 { ncol = NF; for (i = 1; i <= NF; i++) title[i] = $i; next }
  {
    if (!($1 in seen)) { seen[$1] = 1; losses[++nloss] = $1 }
    if ($2 + 0 > max_epoch) max_epoch = $2 + 0
    for (i = 4; i <= NF; i++) value[$1, $2 + 0, i] = $i
  }
  END {
    split("#1f77b4 #d62728 #2ca02c #9467bd #ff7f0e #8c564b #e377c2 #7f7f7f", color, " ")
    pw = 320; ph = 230; cols = 3; left = 58; right = 12; top = 28; bottom = 34
    npanel = ncol - 3; rows = int((npanel + cols - 1) / cols)
    width = cols * pw; height = rows * ph + 40
    printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n", width, height
    printf "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
    for (l = 1; l <= nloss; l++) {
      lx = 10 + (l - 1) * 110
      printf "<line x1=\"%d\" y1=\"18\" x2=\"%d\" y2=\"18\" stroke=\"%s\" stroke-width=\"3\"/>", lx, lx + 24, color[(l - 1) % 8 + 1]
      printf "<text x=\"%d\" y=\"22\">%s</text>\n", lx + 30, esc(losses[l])
    }
    for (p = 0; p < npanel; p++) {
      c = p + 4; ox = (p % cols) * pw; oy = 40 + int(p / cols) * ph
      w = pw - left - right; h = ph - top - bottom
      lo = ""; hi = ""
      for (l = 1; l <= nloss; l++) for (e = 0; e <= max_epoch; e++) {
        key = losses[l] SUBSEP e SUBSEP c
        if (!(key in value) || value[key] == "nan") continue
        v = value[key] + 0
        if (lo == "" || v < lo) lo = v
        if (hi == "" || v > hi) hi = v
      }
      printf "<text x=\"%d\" y=\"%d\" font-weight=\"bold\">%s</text>\n", ox + left, oy + 16, esc(title[c])
      printf "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#999\"/>\n", ox + left, oy + top, w, h
      if (lo == "") continue
      if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5 }
      for (t = 0; t <= 2; t++) {
        v = lo + t * (hi - lo) / 2; y = oy + top + h - t * h / 2
        printf "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>", ox + left - 4, y + 4, num(v)
        printf "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#eee\"/>\n", ox + left, y, ox + left + w, y
      }
      for (e = 0; e <= max_epoch; e++) {
        x = ox + left + (max_epoch > 0 ? e * w / max_epoch : w / 2)
        printf "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", x, oy + top + h + 14, e
      }
      printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">epoch</text>\n", ox + left + w / 2, oy + top + h + 28
      for (l = 1; l <= nloss; l++) {
        points = ""; dots = ""
        for (e = 0; e <= max_epoch; e++) {
          key = losses[l] SUBSEP e SUBSEP c
          if (!(key in value) || value[key] == "nan") continue
          x = ox + left + (max_epoch > 0 ? e * w / max_epoch : w / 2)
          y = oy + top + (hi - value[key]) / (hi - lo) * h
          points = points sprintf("%.1f,%.1f ", x, y)
          dots = dots sprintf("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>", x, y, color[(l - 1) % 8 + 1])
        }
        printf "<polyline points=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"/>%s\n", points, color[(l - 1) % 8 + 1], dots
      }
    }
    printf "</svg>\n"
  }
' "$metrics" > "$out/stability.svg"
