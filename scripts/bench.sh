#!/usr/bin/env bash
# Runs issue 2's benchmarks against a fresh 3-member cluster on loopback, each
# RUNS times (default 3), and prints every run's Requests/sec and 99% line and
# the medians. Usage: scripts/bench.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
dir=$(mktemp -d /tmp/catalogd-bench.XXXXXX)
go build -o bin/catalogd ./cmd/catalogd
go build -o bin/catctl ./cmd/catctl
export CATALOG_ENDPOINTS=127.0.0.1:7400,127.0.0.1:7410,127.0.0.1:7420
trap 'scripts/local-cluster.sh stop "$dir"; rm -rf "$dir"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

bench() { # name, catctl bench args...
  local name=$1; shift
  local rps=() p99=()
  for i in $(seq 1 "$runs"); do
    scripts/local-cluster.sh stop "$dir" >/dev/null
    rm -rf "${dir:?}"/n*
    scripts/local-cluster.sh start "$dir" >/dev/null
    out=$(bin/catctl bench "$@" 2>/dev/null)
    r=$(awk '/Requests\/sec:/ {print $2}' <<<"$out")
    p=$(awk '/ 99% in/ {print $3}' <<<"$out")
    echo "$name run $i: Requests/sec $r, p99 $p s"
    rps+=("$r"); p99+=("$p")
  done
  echo "$name median: Requests/sec $(printf '%s\n' "${rps[@]}" | median), p99 $(printf '%s\n' "${p99[@]}" | median) s"
}

bench "put 100 clients" put --clients 100 --conns 10 --total 60000 --val-size 256
bench "put 1 client" put --clients 1 --conns 1 --total 5000 --val-size 256
bench "get l 100 clients" get --clients 100 --conns 10 --total 200000 --consistency l
bench "get s 100 clients" get --clients 100 --conns 10 --total 200000 --consistency s
