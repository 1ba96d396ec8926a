#!/usr/bin/env bash
# Times two commands side by side: run in turn (A B A B …), RUNS times each after one warm-up run of
# each, whole processes (their children included) timed by bash's `time`. Prints, for each, the median
# wall, user and system seconds (with min and max of wall), and the median of the per-pair ratios
# A/B of wall and of CPU (user + system): pairing keeps the ratio meaningful when the machine's speed
# drifts. Output of the commands is discarded; a command is one string, run by `bash -c`.
#
# usage: scripts/ab.sh RUNS 'COMMAND A' 'COMMAND B'
# e.g.:  scripts/ab.sh 5 'unshare -n new/proxier apply -f /tmp/gen.json --node node-1' \
#                        'unshare -n old/proxier apply -f /tmp/gen.json --node node-1'
set -euo pipefail
if [ $# -ne 3 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 RUNS 'COMMAND A' 'COMMAND B'" >&2
    exit 2
fi
runs=$1
commands=("$2" "$3")
times=$(mktemp)
trap 'rm -f "$times"' EXIT
TIMEFORMAT='%R %U %S'
for round in $(seq 0 "$runs"); do
    for which in 0 1; do
        measured=$({ time bash -c "${commands[$which]}" >/dev/null 2>&1; } 2>&1) || true
        # Round 0 is the warm-up.
        if [ "$round" -gt 0 ]; then
            echo "$round $which $measured" >>"$times"
        fi
    done
done
awk -v runs="$runs" '
function median(values, n,    i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && values[j - 1] > values[j]; j--) {
        t = values[j]; values[j] = values[j - 1]; values[j - 1] = t
    }
    return n % 2 ? values[(n + 1) / 2] : (values[n / 2] + values[n / 2 + 1]) / 2
}
{ wall[$2, $1] = $3; user[$2, $1] = $4; sys[$2, $1] = $5 }
END {
    for (w = 0; w <= 1; w++) {
        lo = hi = wall[w, 1]
        for (r = 1; r <= runs; r++) {
            a[r] = wall[w, r]; b[r] = user[w, r]; c[r] = sys[w, r]
            if (a[r] < lo) lo = a[r]; if (a[r] > hi) hi = a[r]
        }
        printf "%s: wall %.3f s (min %.3f, max %.3f), user %.3f s, system %.3f s, runs %d\n",
            w ? "B" : "A", median(a, runs), lo, hi, median(b, runs), median(c, runs), runs
    }
    for (r = 1; r <= runs; r++) {
        rw[r] = wall[1, r] > 0 ? wall[0, r] / wall[1, r] : 0
        cb = user[1, r] + sys[1, r]
        rc[r] = cb > 0 ? (user[0, r] + sys[0, r]) / cb : 0
    }
    printf "A/B: wall %.3f, cpu %.3f (medians of the per-pair ratios)\n", median(rw, runs), median(rc, runs)
}' "$times"
