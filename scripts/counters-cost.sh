#!/usr/bin/env bash
# What the per-Service counters cost the control plane, side by side with --no-counters: the full sync
# (a cold load into an empty namespace) and one endpoint change after it, through the embeddable `Proxier`
# as `proxier run` holds it (`scale_probe live`), at N × 10 for each N in COST_SIZES (default
# "10000 44000"). COST_ROUNDS rounds (default 3) per size, counters on and off interleaved (on first in
# odd rounds, off first in even ones), each run in a fresh network namespace; the load average is
# recorded with every run. Run as root from anywhere in the repository (needs cargo, ip, nft):
#
#   scripts/counters-cost.sh                                   # about 15 minutes on an idle 2-core machine
#   COST_SIZES=1000 COST_ROUNDS=1 scripts/counters-cost.sh     # smoke run
#
# Raw lines go to target/perf/counters-cost.txt (or COST_OUT); the summary (medians, and on/off ratios) to stdout.
# Namespaces are named cc<pid>-… and deleted on exit, failure or ^C.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${COST_SIZES:-"10000 44000"}
ROUNDS=${COST_ROUNDS:-3}
CHANGES=${COST_CHANGES:-20}
NODE=node-1
CLUSTER_CIDR=10.128.0.0/9
OUT=${COST_OUT:-target/perf/counters-cost.txt}
WORK=$(mktemp -d /tmp/proxier-cost.XXXXXX)
NS=""

cleanup() {
    local status=$?
    [[ -n $NS ]] && ip netns del "$NS" 2>/dev/null
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) == 0 ]] || { echo "counters-cost: run as root (network namespaces and nft)" >&2; exit 2; }
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
cargo build --release --locked -q -p proxier-cli --bin proxier --example scale_probe
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
PROXIER=$TARGET_DIR/release/proxier
PROBE=$TARGET_DIR/release/examples/scale_probe

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

for n in $SIZES; do
    file=$WORK/s$n.json
    "$PROXIER" gen --services "$n" --endpoints 10 --seed 1 --node-port-range 30000-65535 --out "$file" 2>/dev/null
    for ((r = 1; r <= ROUNDS; r++)); do
        order=$( ((r % 2 == 1)) && echo "on off" || echo "off on")
        for counters in $order; do
            NS="cc$$-$n-$r-$counters"
            ip netns add "$NS"
            ip -n "$NS" link set lo up
            load=$(cut -d' ' -f1 /proc/loadavg)
            ip netns exec "$NS" "$PROBE" live --snapshot "$file" --node "$NODE" --cluster-cidr "$CLUSTER_CIDR" \
                --changes "$CHANGES" --counters "$counters" | tr ' ' '\n' \
                | grep -E '^live\.(full_sync_ms|full_sync_cpu_ms|change\.total_ms|change\.total_cpu_ms)=' \
                | sed "s/^live\./$n.$counters.round$r./; s/\$/ load=$load/" | tee -a "$OUT"
            ip netns del "$NS"
            NS=""
        done
    done
done

echo "# medians over $ROUNDS rounds (ms); ratio = with counters / without"
for n in $SIZES; do
    for key in full_sync_ms full_sync_cpu_ms change.total_ms change.total_cpu_ms; do
        on=$(grep "^$n\.on\.round[0-9]*\.$key=" "$OUT" | cut -d= -f2 | cut -d' ' -f1 | median)
        off=$(grep "^$n\.off\.round[0-9]*\.$key=" "$OUT" | cut -d= -f2 | cut -d' ' -f1 | median)
        loads=$(grep "^$n\.[a-z]*\.round[0-9]*\.$key=" "$OUT" | sed 's/.*load=//' | sort -n | sed -n '1p;$p' | paste -sd-)
        echo "$n $key on=$on off=$off ratio=$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.3f", a / b }') load=$loads"
    done
done
