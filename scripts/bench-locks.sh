#!/usr/bin/env bash
# Runs issue 5's benchmarks against a fresh 3-member cluster on loopback, each
# RUNS times (default 3), and prints every run's figures and the medians:
# lock+unlock cycles of catctl bench lock (10 clients on 10 locks, 10 clients
# on one lock, 1 client) and the election failover of catctl bench
# election-failover. Usage: scripts/bench-locks.sh [RUNS]
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

# lockbench NAME catctl-bench-lock-args...: a fresh cluster per run, warmed by
# a short run of the same benchmark whose figures are dropped.
lockbench() {
  local name=$1; shift
  local rps=() p50=() p99=()
  for i in $(seq 1 "$runs"); do
    fresh
    bin/catctl bench lock "$@" --total 300 >/dev/null 2>&1 || true
    out=$(bin/catctl bench lock "$@" 2>/dev/null)
    r=$(awk '/Requests\/sec:/ {print $2}' <<<"$out")
    m=$(awk '/ 50% in/ {print $3}' <<<"$out")
    p=$(awk '/ 99% in/ {print $3}' <<<"$out")
    echo "$name run $i: cycles/s $r, p50 $m s, p99 $p s"
    rps+=("$r"); p50+=("$m"); p99+=("$p")
  done
  echo "$name median: cycles/s $(printf '%s\n' "${rps[@]}" | median), p50 $(printf '%s\n' "${p50[@]}" | median) s, p99 $(printf '%s\n' "${p99[@]}" | median) s"
}

lockbench "lock 10 clients, 10 locks" --clients 10 --conns 10 --locks 10 --total 10000
lockbench "lock 10 clients, 1 lock" --clients 10 --conns 10 --locks 1 --total 5000
lockbench "lock 1 client" --clients 1 --conns 1 --locks 1 --total 3000

for i in $(seq 1 "$runs"); do
  fresh
  echo "election failover run $i:"
  bin/catctl bench election-failover --runs 100 2>&1 | sed 's/^/  /'
done
