#!/usr/bin/env bash
# Measures how long a new member takes from `catalogd --join` to being a voter,
# then times a backup (catctl snapshot save) and a restore of it, against a
# cluster started by scripts/local-cluster.sh and already loaded with data, e.g.
#   scripts/local-cluster.sh start /tmp/cd-join
#   bin/catctl bench put --total 1000000 --clients 100 --conns 10 --val-size 256 \
#     --endpoints 127.0.0.1:7400,127.0.0.1:7410,127.0.0.1:7420
#   scripts/bench-join.sh /tmp/cd-join
# The joiner is n4 (client 127.0.0.1:7430, peer :7431, http :7510). Binaries
# come from ./bin (go build -o bin/ ./cmd/...).
set -euo pipefail
dir=${1:-/tmp/catalogd-local}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CATALOGD_BIN:-$root/bin/catalogd}
ctl=${CATCTL_BIN:-$root/bin/catctl}
eps=127.0.0.1:7400,127.0.0.1:7410,127.0.0.1:7420

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

keys=$("$ctl" --endpoints "$eps" kv get 0 --prefix --count-only 2>/dev/null | tail -1 || true)
echo "cluster: $keys"

rm -rf "$dir/n4"
start=$(now)
"$bin" --name n4 --data-dir "$dir/n4" --join 127.0.0.1:7400 \
  --client-addr 127.0.0.1:7430 --peer-addr 127.0.0.1:7431 --http-addr 127.0.0.1:7510 \
  --log-level "${LOG_LEVEL:-info}" >"$dir/n4.log" 2>&1 &
echo $! >"$dir/n4.pid"
promoted=""
for _ in $(seq 1 1200); do
  out=$("$ctl" --endpoints "$eps" -o json member list 2>/dev/null || true)
  if grep -q '"n4"' <<<"$out"; then
    # protojson leaves isLearner out once it is false.
    n4=$(tr -d '\n ' <<<"$out" | grep -o '{[^{}]*"name":"n4"[^{}]*}' || true)
    if [ -n "$n4" ] && ! grep -q '"isLearner":true' <<<"$n4"; then
      promoted=$(now)
      break
    fi
  fi
  sleep 0.1
done
if [ -z "$promoted" ]; then
  echo "n4 was not promoted within 120 s; log: $dir/n4.log" >&2
  exit 1
fi
echo "join: n4 promoted to voter $(secs "$start" "$promoted") s after it started"
grep -E 'received snapshot|restored snapshot' "$dir/n4.log" | head -3 || true

snap="$dir/backup.db"
rm -f "$snap"
start=$(now)
"$ctl" --endpoints 127.0.0.1:7400 snapshot save "$snap"
end=$(now)
size=$(stat -c %s "$snap")
echo "snapshot save: $size bytes in $(secs "$start" "$end") s ($(awk -v s="$size" -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", s / (b - a) / 1e6 }') MB/s)"

rm -rf "$dir/restored"
start=$(now)
"$bin" restore --snapshot "$snap" --data-dir "$dir/restored" --name r1 \
  --initial-cluster r1=127.0.0.1:7441 --peer-addr 127.0.0.1:7441
end=$(now)
echo "restore: $size bytes in $(secs "$start" "$end") s ($(awk -v s="$size" -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", s / (b - a) / 1e6 }') MB/s)"
start=$(now)
"$bin" --name r1 --data-dir "$dir/restored" --initial-cluster r1=127.0.0.1:7441 \
  --client-addr 127.0.0.1:7440 --peer-addr 127.0.0.1:7441 --http-addr 127.0.0.1:7520 \
  --log-level warn >"$dir/r1.log" 2>&1 &
r1=$!
for _ in $(seq 1 600); do
  if "$ctl" --endpoints 127.0.0.1:7440 kv get 0 --prefix --count-only >/dev/null 2>&1; then break; fi
  sleep 0.1
done
end=$(now)
echo "restored member serving after $(secs "$start" "$end") s: $("$ctl" --endpoints 127.0.0.1:7440 kv get 0 --prefix --count-only | tail -1)"
kill "$r1" 2>/dev/null || true
wait "$r1" 2>/dev/null || true
