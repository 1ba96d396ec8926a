#!/usr/bin/env bash
# Scale measurements for docs/performance.md, in fresh network namespaces. Run as root from anywhere in
# the repository (needs cargo, ip, nft):
#
#   scripts/perf.sh                      # everything, about 10 minutes on 2 cores
#   PERF_COLD_SIZES=1000 PERF_CHANGE_SIZES=1000 PERF_RSS_SIZE=1000 PERF_DP_SIZE=1000 scripts/perf.sh  # smoke run
#
# What it measures, in one run:
#   1. cold apply: wall time of `proxier apply` of a generated N × 10 snapshot into an empty namespace
#      (N = PERF_COLD_SIZES, default 1000 10000 44000; PERF_REPEAT runs each, median), the kernel
#      objects it leaves, the same load through the library phase by phase (scale_probe sync), and the
#      same Services in kube-proxy's layout (scale_probe kube-proxy-layout) at the sizes also in
#      PERF_KUBE_PROXY_SIZES (default 1000 10000: at 10,000 it takes minutes, 44,000 was never tried);
#   2. one endpoint change end to end at N = PERF_CHANGE_SIZES (default 10000 44000): 20 changes, each
#      recompute + Transaction::between + JSON + nft, timed by phase, with the transaction's size; and
#      20 changes through the embeddable `Proxier` (scale_probe live), which recomputes only the changed
#      Service, as `proxier run` does;
#      with counters also `proxier stats` (every counter read), a replacement carrying a count for every
#      counted element, phase by phase (scale_probe reapply, cold.N.reapply.…), and in part 2 the same
#      changes while another thread reads every counter over and over (change_reads.…);
#   3. RSS of the embeddable `Proxier` holding a PERF_RSS_SIZE × 10 cluster (default 10000), and the
#      end-to-end time of each of PERF_CHURN_CHANGES (default 200) endpoint changes in a row;
#   4. the data plane: new TCP connections per second client → ClusterIP → pod, through a node namespace
#      doing the NAT, with 1 Service loaded, with PERF_DP_SIZE (default 30000) loaded (with and without
#      per-Service counters), and straight to the pod IP with no rules at all; PERF_DP_ROUNDS rounds
#      (default 3) of PERF_DP_SECONDS (default 5) each, interleaved, medians reported. The measured
#      Service has PERF_DP_ENDPOINTS endpoints (default 10, at most 30); with PERF_DP_MIXED=1 the loaded
#      Services have 1–20 endpoints (Service i keeps i mod 20 + 1) instead of 10 each; with
#      PERF_DP_BASELINE=/path/to/another/proxier the same full load by that binary is measured too
#      (mode full_baseline), interleaved with the others.
#
# Parts 1 and 2 run once with the per-Service counters and once without (--no-counters), recorded as
# cold.N.… / cold_nocount.N.… and change.N.… / change_nocount.N.…. PERF_PARTS (default "1 2 3 4") picks
# the parts to run.
#
# Every namespace it creates is named pf<pid>-…, and all of them are deleted on exit, failure or ^C.
# Traffic flows only between those namespaces. Raw key=value results go to target/perf/results.txt, with
# the load average before and after. The charts' data is written from them: target/perf/cold-load.csv
# (part 1), one-change.csv (part 2) and churn.csv (part 3); docs/perf/ holds copies, and
# `cargo run -p proxier-cli --example plots` redraws docs/img from docs/perf:
#
#   cp target/perf/*.csv docs/perf/ && cargo run -p proxier-cli --example plots
#
# or, to look at a run's charts without touching docs/ (they go to target/perf/*.svg):
#
#   cargo run -p proxier-cli --example plots -- --data target/perf --out target/perf
set -euo pipefail
cd "$(dirname "$0")/.."

COLD_SIZES=${PERF_COLD_SIZES:-"1000 10000 44000"}
CHANGE_SIZES=${PERF_CHANGE_SIZES:-"10000 44000"}
KUBE_PROXY_SIZES=${PERF_KUBE_PROXY_SIZES:-"1000 10000"}
RSS_SIZE=${PERF_RSS_SIZE:-10000}
DP_SIZE=${PERF_DP_SIZE:-30000}
REPEAT=${PERF_REPEAT:-3}
DP_ROUNDS=${PERF_DP_ROUNDS:-3}
DP_SECONDS=${PERF_DP_SECONDS:-5}
PARTS=${PERF_PARTS:-"1 2 3 4"}
part() { [[ " $PARTS " == *" $1 "* ]]; }
ENDPOINTS=10
CLUSTER_CIDR=10.128.0.0/9
NODE=node-1

PREFIX="pf$$-"
WORK=$(mktemp -d /tmp/proxier-perf.XXXXXX)
OUT_DIR=target/perf
RESULTS=$OUT_DIR/results.txt
NAMESPACES=()
PIDS=()

cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "perf: $*" >&2; }
record() { echo "$1" | tee -a "$RESULTS"; }
# Creates namespace pf<pid>-NAME, remembered for cleanup, and sets NS to its name.
new_ns() {
    NS="$PREFIX$1"
    ip netns add "$NS"
    NAMESPACES+=("$NS")
    ip -n "$NS" link set lo up
}
del_ns() {
    ip netns del "$1"
    local kept=()
    for ns in "${NAMESPACES[@]}"; do [[ $ns == "$1" ]] || kept+=("$ns"); done
    NAMESPACES=("${kept[@]}")
}
now_ns() { date +%s%N; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
value() { grep -m1 "^$1=" | cut -d= -f2; }
field() { tr ' ' '\n' <<<"$2" | value "$1"; }

[[ $(id -u) == 0 ]] || { say "run as root (network namespaces and nft)"; exit 2; }
command -v nft >/dev/null && command -v ip >/dev/null || { say "needs nft and ip"; exit 2; }

mkdir -p "$OUT_DIR"
: >"$RESULTS"
say "building (release)"
cargo build --release --locked -q -p proxier-cli --bin proxier --example scale_probe
# Built where cargo builds (CARGO_TARGET_DIR if set).
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
PROXIER=$TARGET_DIR/release/proxier
PROBE=$TARGET_DIR/release/examples/scale_probe

record "machine.nproc=$(nproc)"
record "machine.kernel=$(uname -r)"
record "machine.nft=$(nft --version)"
record "machine.cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
record "machine.loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"

snapshot() {
    local n=$1 file="$WORK/s$1.json"
    if [[ ! -f $file ]]; then
        say "generating $n services × $ENDPOINTS endpoints"
        "$PROXIER" gen --services "$n" --endpoints "$ENDPOINTS" --seed 1 --node-port-range 30000-65535 \
            --out "$file" 2>>"$OUT_DIR/gen.log"
    fi
    echo "$file"
}

# 1. Cold apply, kernel objects, and the library's phases; with counters (cold.…) and without.
for counters in on off; do
    suffix=$([[ $counters == on ]] && echo "" || echo _nocount)
    flag=$([[ $counters == on ]] && echo "" || echo --no-counters)
    part 1 || break
    for n in $COLD_SIZES; do
        file=$(snapshot "$n")
        times=()
        for ((i = 1; i <= REPEAT; i++)); do
            new_ns cold
            ns=$NS
            start=$(now_ns)
            ip netns exec "$ns" "$PROXIER" apply --snapshot "$file" --node "$NODE" --cluster-cidr "$CLUSTER_CIDR" \
                $flag 2>/dev/null
            times+=($((($(now_ns) - start) / 1000000)))
            if ((i == REPEAT)); then
                ip netns exec "$ns" "$PROBE" count | sed "s/^/cold$suffix.$n./" | tee -a "$RESULTS"
                if [[ $counters == on ]]; then
                    # Reading every counter (what a scrape costs), and re-applying (no counts to carry yet).
                    start=$(now_ns)
                    ip netns exec "$ns" "$PROXIER" stats -o json >/dev/null
                    record "cold.$n.stats_ms=$((($(now_ns) - start) / 1000000))"
                    start=$(now_ns)
                    ip netns exec "$ns" "$PROXIER" apply --snapshot "$file" --node "$NODE" \
                        --cluster-cidr "$CLUSTER_CIDR" 2>/dev/null
                    record "cold.$n.reapply_ms=$((($(now_ns) - start) / 1000000))"
                fi
            fi
            del_ns "$ns"
        done
        record "cold$suffix.$n.apply_ms=$(printf '%s\n' "${times[@]}" | median)"
        record "cold$suffix.$n.apply_ms_all=${times[*]}"

        new_ns sync
        ns=$NS
        ip netns exec "$ns" "$PROBE" sync --snapshot "$file" --node "$NODE" --cluster-cidr "$CLUSTER_CIDR" \
            --changes 0 --counters "$counters" | sed "s/^/sync$suffix.$n./" | tee -a "$RESULTS"
        del_ns "$ns"
        if [[ $counters == on ]]; then
            # A replacement carrying a count for every counted element (a re-apply, the first sync after
            # a restart), phase by phase.
            new_ns reapply
            ns=$NS
            ip netns exec "$ns" "$PROBE" reapply --snapshot "$file" --node "$NODE" --cluster-cidr "$CLUSTER_CIDR" \
                --repeat "$REPEAT" | grep '^reapply\.' | sed "s/^/cold.$n./" | tee -a "$RESULTS"
            del_ns "$ns"
        fi

        # The same Services in kube-proxy's layout, for comparison (loaded once: it is the slow one).
        if [[ $counters == on && " $KUBE_PROXY_SIZES " == *" $n "* ]]; then
            say "loading $n services in kube-proxy's layout"
            new_ns kubeproxy
            ns=$NS
            ip netns exec "$ns" "$PROBE" kube-proxy-layout --snapshot "$file" --node "$NODE" \
                --cluster-cidr "$CLUSTER_CIDR" | grep '^kube_proxy_layout\.' | sed "s/^kube_proxy_layout\./kube_proxy_layout.$n./" \
                | tee -a "$RESULTS"
            del_ns "$ns"
        fi
    done
done

# 2. One endpoint change, end to end; with counters (change.…) and without.
for counters in on off; do
    suffix=$([[ $counters == on ]] && echo "" || echo _nocount)
    part 2 || break
    for n in $CHANGE_SIZES; do
        file=$(snapshot "$n")
        new_ns change
        ns=$NS
        ip netns exec "$ns" "$PROBE" sync --snapshot "$file" --node "$NODE" --cluster-cidr "$CLUSTER_CIDR" \
            --changes 20 --counters "$counters" | grep '^change\.' | sed "s/^/change$suffix.$n./" | tee -a "$RESULTS"
        del_ns "$ns"
        if [[ $counters == on ]]; then
            # The same while another thread reads every counter, one read after another.
            new_ns change
            ns=$NS
            ip netns exec "$ns" "$PROBE" sync --snapshot "$file" --node "$NODE" --cluster-cidr "$CLUSTER_CIDR" \
                --changes 20 --concurrent-reads on | grep -E '^(change|reads)\.' | sed "s/^/change_reads.$n./" \
                | tee -a "$RESULTS"
            del_ns "$ns"
            # The same changes as `proxier run` makes them: only the changed Service recomputed.
            new_ns livechange
            ns=$NS
            ip netns exec "$ns" "$PROBE" live --snapshot "$file" --node "$NODE" --cluster-cidr "$CLUSTER_CIDR" \
                --changes 20 | tr ' ' '\n' | grep '^live\.change\.total' | sed "s/^live\./live.$n./" | tee -a "$RESULTS"
            del_ns "$ns"
        fi
    done
done

# 3. Live mode: the embeddable Proxier holding the cluster; its sync times and RSS.
if part 3; then
file=$(snapshot "$RSS_SIZE")
new_ns live
ns=$NS
ip netns exec "$ns" "$PROBE" live --snapshot "$file" --node "$NODE" --cluster-cidr "$CLUSTER_CIDR" \
    --changes "${PERF_CHURN_CHANGES:-200}" | grep '^live\.' | tr ' ' '\n' > "$WORK/live.txt"
grep -v '^live\.change\.each_ms=' "$WORK/live.txt" | sed "s/^/live.$RSS_SIZE./" | tee -a "$RESULTS"
del_ns "$ns"
fi

# 4. Data plane: client → node (NAT) → pod.
if part 4; then
file=$(snapshot "$DP_SIZE")
new_ns client
client=$NS
new_ns node
node=$NS
new_ns pod
pod=$NS
ip link add c0 netns "$client" type veth peer name n0 netns "$node"
ip link add p0 netns "$pod" type veth peer name n1 netns "$node"
ip -n "$client" addr add 10.255.1.2/24 dev c0
ip -n "$node" addr add 10.255.1.1/24 dev n0
ip -n "$node" addr add 10.255.2.1/24 dev n1
DP_ENDPOINTS=${PERF_DP_ENDPOINTS:-10}
((DP_ENDPOINTS >= 1 && DP_ENDPOINTS <= 30)) || { say "PERF_DP_ENDPOINTS is 1 to 30"; exit 2; }
for i in $(seq 2 $((DP_ENDPOINTS + 1))); do ip -n "$pod" addr add "10.255.2.$i/24" dev p0; done
for link in "$client c0" "$node n0" "$node n1" "$pod p0"; do read -r ns dev <<<"$link"; ip -n "$ns" link set "$dev" up; done
ip -n "$client" route add default via 10.255.1.1
ip -n "$pod" route add default via 10.255.2.1
ip netns exec "$node" sysctl -qw net.ipv4.ip_forward=1

if [[ ${PERF_DP_MIXED:-0} == 1 ]]; then
    # Many distinct endpoint counts: Service i of the generated cluster keeps i mod 20 + 1 endpoints.
    python3 - "$file" "$WORK/mixed.json" <<'PY'
import json, sys
cluster = json.load(open(sys.argv[1]))
order = {}
for item in cluster["items"]:
    if item["kind"] == "Service":
        order[(item["metadata"]["namespace"], item["metadata"]["name"])] = len(order)
for item in cluster["items"]:
    if item["kind"] == "EndpointSlice" and item.get("endpoints"):
        owner = (item["metadata"]["namespace"], item["metadata"]["labels"]["kubernetes.io/service-name"])
        item["endpoints"] = item["endpoints"][: order.get(owner, 0) % 20 + 1]
json.dump(cluster, open(sys.argv[2], "w"))
PY
    file=$WORK/mixed.json
fi
# One Service, default/echo, ClusterIP 10.96.0.10:80 (the generator never allocates 10.96.0.0-15),
# with PERF_DP_ENDPOINTS endpoints: the pod's addresses, port 8080.
endpoints=$(for i in $(seq 2 $((DP_ENDPOINTS + 1))); do
    printf '{"addresses":["10.255.2.%s"],"conditions":{"ready":true},"nodeName":"%s"},' "$i" "$NODE"
done)
cat >"$WORK/echo.json" <<EOF
{"apiVersion":"v1","kind":"List","items":[
 {"apiVersion":"v1","kind":"Service","metadata":{"name":"echo","namespace":"default"},
  "spec":{"clusterIP":"10.96.0.10","clusterIPs":["10.96.0.10"],"type":"ClusterIP",
          "ports":[{"name":"http","port":80,"protocol":"TCP","targetPort":8080}]}},
 {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","addressType":"IPv4",
  "metadata":{"name":"echo-abcde","namespace":"default","labels":{"kubernetes.io/service-name":"echo"}},
  "ports":[{"name":"http","port":8080,"protocol":"TCP"}],
  "endpoints":[${endpoints%,}]}]}
EOF

ip netns exec "$pod" "$PROBE" serve --listen 0.0.0.0:8080 &
PIDS+=($!)
sleep 0.5

load_rules() {
    local apply=(ip netns exec "$node" "$PROXIER")
    case $1 in
        direct) "${apply[@]}" delete >/dev/null 2>&1 ;;
        one) "${apply[@]}" apply --snapshot "$WORK/echo.json" --node "$NODE" --cluster-cidr "$CLUSTER_CIDR" 2>/dev/null ;;
        full) "${apply[@]}" apply --snapshot "$file" --snapshot "$WORK/echo.json" --node "$NODE" --cluster-cidr "$CLUSTER_CIDR" 2>/dev/null ;;
        full_nocount) "${apply[@]}" apply --snapshot "$file" --snapshot "$WORK/echo.json" --node "$NODE" \
            --cluster-cidr "$CLUSTER_CIDR" --no-counters 2>/dev/null ;;
        full_baseline) ip netns exec "$node" "$PERF_DP_BASELINE" apply --snapshot "$file" \
            --snapshot "$WORK/echo.json" --node "$NODE" --cluster-cidr "$CLUSTER_CIDR" 2>/dev/null ;;
    esac
}
target() { [[ $1 == direct ]] && echo 10.255.2.2:8080 || echo 10.96.0.10:80; }

modes=(direct one full full_nocount)
[[ -n ${PERF_DP_BASELINE:-} ]] && modes+=(full_baseline)
# Check every path works before timing anything.
for mode in "${modes[@]}"; do
    load_rules "$mode"
    check=$(ip netns exec "$client" "$PROBE" connect --to "$(target "$mode")" --seconds 0.5)
    if [[ $(field ok "$check") == 0 || $(field failed "$check") != 0 ]]; then
        say "data plane check failed for $mode: $check"
        exit 1
    fi
done
record "dataplane.services_loaded_full=$(ip netns exec "$node" "$PROBE" count | value kernel.elements) elements"

declare -A rates p50s
for ((r = 0; r < DP_ROUNDS; r++)); do
    for ((m = 0; m < ${#modes[@]}; m++)); do
        mode=${modes[$(((m + r) % ${#modes[@]}))]}
        load_rules "$mode"
        out=$(ip netns exec "$client" "$PROBE" connect --to "$(target "$mode")" --seconds "$DP_SECONDS")
        say "round $((r + 1)) $mode: $out"
        rates[$mode]+="$(field rate "$out") "
        p50s[$mode]+="$(field p50_us "$out") "
    done
done
for mode in "${modes[@]}"; do
    record "dataplane.$mode.rate=$(tr ' ' '\n' <<<"${rates[$mode]}" | grep . | median)"
    record "dataplane.$mode.rate_all=${rates[$mode]% }"
    record "dataplane.$mode.p50_us=$(tr ' ' '\n' <<<"${p50s[$mode]}" | grep . | median)"
done
direct=$(grep '^dataplane.direct.rate=' "$RESULTS" | cut -d= -f2)
one=$(grep '^dataplane.one.rate=' "$RESULTS" | cut -d= -f2)
full=$(grep '^dataplane.full.rate=' "$RESULTS" | cut -d= -f2)
record "dataplane.full_over_one=$(awk -v a="$full" -v b="$one" 'BEGIN { printf "%.3f", a / b }')"
record "dataplane.full_over_direct=$(awk -v a="$full" -v b="$direct" 'BEGIN { printf "%.3f", a / b }')"
record "dataplane.one_over_direct=$(awk -v a="$one" -v b="$direct" 'BEGIN { printf "%.3f", a / b }')"
nocount=$(grep '^dataplane.full_nocount.rate=' "$RESULTS" | cut -d= -f2)
record "dataplane.full_over_full_nocount=$(awk -v a="$full" -v b="$nocount" 'BEGIN { printf "%.3f", a / b }')"
if [[ -n ${PERF_DP_BASELINE:-} ]]; then
    baseline=$(grep '^dataplane.full_baseline.rate=' "$RESULTS" | cut -d= -f2)
    record "dataplane.full_over_full_baseline=$(awk -v a="$full" -v b="$baseline" 'BEGIN { printf "%.3f", a / b }')"
fi
fi

record "machine.loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"

# The charts' data, from the results above (a size not measured in this run is left out).
result() { grep -m1 "^$1=" "$RESULTS" | cut -d= -f2; }
seconds() { awk -v ms="$1" 'BEGIN { printf "%.3g", ms / 1000 }'; }
loads="load average $(result machine.loadavg_start) at the start, $(result machine.loadavg_end) at the end"
if part 1; then
    {
        echo "# scripts/perf.sh part 1, $(date -u +%F), $(nproc) cores, $loads: the whole ruleset loaded into"
        echo "# a fresh network namespace, N Services × $ENDPOINTS endpoints (proxier apply: median of $REPEAT)."
        echo "series,services,seconds"
        for n in $KUBE_PROXY_SIZES; do
            v=$(result "kube_proxy_layout.$n.nft_ms") && [[ -n $v ]] \
                && echo "kube-proxy's nftables layout (chain per Service and endpoint),$n,$(seconds "$v")"
        done
        for n in $COLD_SIZES; do
            v=$(result "sync.$n.cold.nft_ms") && [[ -n $v ]] && echo "proxier's layout (nft -j),$n,$(seconds "$v")"
        done
        for n in $COLD_SIZES; do
            v=$(result "cold.$n.apply_ms") && [[ -n $v ]] && echo "proxier apply (read + compute + nft),$n,$(seconds "$v")"
        done
    } >"$OUT_DIR/cold-load.csv"
fi
if part 2; then
    {
        echo "# scripts/perf.sh part 2, $(date -u +%F), $(nproc) cores, $loads: one endpoint change end to end,"
        echo "# including nft, median of 20, N Services × $ENDPOINTS endpoints."
        echo "series,services,milliseconds"
        for n in $CHANGE_SIZES; do
            v=$(result "live.$n.change.total_ms") && [[ -n $v ]] \
                && echo "proxier run (recomputes the changed Service),$n,$v"
        done
        for n in $CHANGE_SIZES; do
            v=$(result "change.$n.change.total_ms") && [[ -n $v ]] \
                && echo "recomputing the whole cluster (the offline path),$n,$v"
        done
    } >"$OUT_DIR/one-change.csv"
fi
if part 3; then
    {
        echo "# scripts/perf.sh part 3, $(date -u +%F), $(nproc) cores, $loads: $RSS_SIZE Services × $ENDPOINTS endpoints,"
        echo "# one endpoint change after another"
        echo "series,change,milliseconds"
        sed -n 's/^live\.change\.each_ms=//p' "$WORK/live.txt" | tr ',' '\n' \
            | awk -v label="$RSS_SIZE Services × $ENDPOINTS endpoints" '{ print label "," NR "," $1 }'
    } >"$OUT_DIR/churn.csv"
fi

say "done; raw results in $RESULTS, chart data in $OUT_DIR/*.csv"
