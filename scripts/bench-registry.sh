#!/usr/bin/env bash
# Runs issue 4's benchmarks against a fresh 3-member cluster on loopback, each
# RUNS times (default 3), and prints every run's figures and the medians:
# lease keep-alives, registration-to-watcher latency, and discovery of a
# service of 1,000 instances. Usage: scripts/bench-registry.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
dir=$(mktemp -d /tmp/catalogd-bench.XXXXXX)
go build -o bin/catalogd ./cmd/catalogd
go build -o bin/catctl ./cmd/catctl
export CATALOG_ENDPOINTS=127.0.0.1:7400,127.0.0.1:7410,127.0.0.1:7420
trap 'scripts/local-cluster.sh stop "$dir"; rm -rf "$dir"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
fresh() {
  scripts/local-cluster.sh stop "$dir" >/dev/null
  rm -rf "${dir:?}"/n*
  scripts/local-cluster.sh start "$dir" >/dev/null
}

# bench NAME SECTION catctl-bench-args...: SECTION picks which report of the
# output to read (1 = the first, 2 = the second). Each run starts a fresh
# cluster and warms it with a short run of the same benchmark (--total
# $warmup), whose figures are dropped: the first seconds of a new cluster's
# processes (heap growth, connections) are not what is measured.
warmup=${WARMUP:-200}
bench() {
  local name=$1 section=$2; shift 2
  local rps=() p50=() p99=()
  for i in $(seq 1 "$runs"); do
    fresh
    bin/catctl bench "$@" --total "$warmup" >/dev/null 2>&1 || true
    out=$(bin/catctl bench "$@" 2>/dev/null | awk -v s="$section" '/^Summary:/ {n++} n == s')
    r=$(awk '/Requests\/sec:/ {print $2}' <<<"$out")
    m=$(awk '/ 50% in/ {print $3}' <<<"$out")
    p=$(awk '/ 99% in/ {print $3}' <<<"$out")
    echo "$name run $i: Requests/sec $r, p50 $m s, p99 $p s"
    rps+=("$r"); p50+=("$m"); p99+=("$p")
  done
  echo "$name median: Requests/sec $(printf '%s\n' "${rps[@]}" | median), p50 $(printf '%s\n' "${p50[@]}" | median) s, p99 $(printf '%s\n' "${p99[@]}" | median) s"
}

bench "keepalive 100 clients, all members" 1 keepalive --clients 100 --conns 10 --total 300000
bench "keepalive 100 clients, leader" 1 keepalive --clients 100 --conns 10 --total 300000 --target-leader
bench "keepalive 100 clients, KeepAliveOnce (etcd's method)" 1 keepalive --clients 100 --conns 10 --total 100000 --once
bench "watch 100 watchers 200/s, from ack" 1 watch --watchers 100 --conns 10 --total 2000 --rate 200
bench "watch 100 watchers 200/s, from call" 2 watch --watchers 100 --conns 10 --total 2000 --rate 200
bench "discover 1000, linearizable" 1 discover --instances 1000 --mode l --clients 1 --total 5000
bench "discover 1000, serializable" 1 discover --instances 1000 --mode s --clients 1 --total 5000
bench "discover 1000, sdk cache" 1 discover --instances 1000 --mode cache --clients 1 --total 100000
