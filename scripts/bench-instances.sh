#!/usr/bin/env bash
# Issue 4's large-scale run: a fresh 3-member cluster on loopback holds COUNT
# instances (default 100000), each with its own 10 s lease kept alive by
# `catctl bench instances`. KILL_AFTER seconds into the hold (default 20) the
# leader is killed with SIGKILL and restarted 5 s later. Prints the bench's
# report, and each server's CPU (seconds of user+system over the hold) and RSS.
# Usage: scripts/bench-instances.sh [COUNT] [HOLD_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-100000}
hold=${2:-60}
kill_after=${KILL_AFTER:-20}
dir=$(mktemp -d /tmp/catalogd-instances.XXXXXX)
go build -o bin/catalogd ./cmd/catalogd
go build -o bin/catctl ./cmd/catctl
export CATALOG_ENDPOINTS=127.0.0.1:7400,127.0.0.1:7410,127.0.0.1:7420
# On failure the members' logs stay in $dir.
trap 'st=$?; scripts/local-cluster.sh stop "$dir"; if [ $st -eq 0 ]; then rm -rf "$dir"; else echo "logs kept in $dir" >&2; fi' EXIT
scripts/local-cluster.sh start "$dir"

cpu() { # pid -> user+system seconds
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14+$15)/hz}' "/proc/$1/stat"
}
rss() { awk '/VmRSS/ {printf "%.0f MB", $2/1024}' "/proc/$1/status"; }
report() { # label
  for i in 1 2 3; do
    pid=$(cat "$dir/n$i.pid")
    if kill -0 "$pid" 2>/dev/null; then echo "$1 n$i: cpu $(cpu "$pid") s, rss $(rss "$pid")"; fi
  done
}

bin/catctl bench instances --count "$count" --hold "${hold}s" --ttl 10s >"$dir/bench.out" 2>"$dir/bench.err" &
bench=$!
until grep -q '^registered' "$dir/bench.out" 2>/dev/null; do
  kill -0 $bench 2>/dev/null || { cat "$dir/bench.out" "$dir/bench.err"; exit 1; }
  sleep 1
done
grep '^registered' "$dir/bench.out"
report "hold start"
declare -A start
for i in 1 2 3; do start[$i]=$(cpu "$(cat "$dir/n$i.pid")"); done
sleep "$kill_after"
leader=$(bin/catctl member list | awk '$5 == "true" {print $2}')
echo "killing the leader $leader with SIGKILL"
report "before the kill"
kill -9 "$(cat "$dir/$leader.pid")"
sleep 5
cluster="n1=127.0.0.1:7401,n2=127.0.0.1:7411,n3=127.0.0.1:7421"
i=${leader#n}
base=$((7400 + (i - 1) * 10))
bin/catalogd --name "$leader" --data-dir "$dir/$leader" --initial-cluster "$cluster" \
  --client-addr "127.0.0.1:$base" --peer-addr "127.0.0.1:$((base + 1))" \
  --http-addr "127.0.0.1:$((base + 80))" --log-level warn >>"$dir/$leader.log" 2>&1 &
echo $! >"$dir/$leader.pid"
echo "restarted $leader"
wait $bench || status=$?
report "hold end"
for i in 1 2 3; do
  [ "n$i" = "$leader" ] && continue
  pid=$(cat "$dir/n$i.pid")
  echo "n$i: $(awk -v a="${start[$i]}" -v b="$(cpu "$pid")" -v h="$hold" 'BEGIN {printf "%.2f cores", (b-a)/h}') over the hold"
done
cat "$dir/bench.out"
tail -5 "$dir/bench.err"
exit ${status:-0}
