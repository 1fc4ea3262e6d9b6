#!/usr/bin/env bash
# Starts (or stops) a 3-member catalogd cluster on loopback from ./bin/catalogd,
# for benchmarks and trying things out by hand.
#   scripts/local-cluster.sh start [DIR]   # data and logs in DIR (default /tmp/catalogd-local)
#   scripts/local-cluster.sh stop  [DIR]
# Members: n1 client 127.0.0.1:7400, n2 :7410, n3 :7420 (peer = client+1, http = client+80).
set -euo pipefail
cmd=${1:-start}
dir=${2:-/tmp/catalogd-local}
bin=${CATALOGD_BIN:-$(dirname "$0")/../bin/catalogd}
cluster="n1=127.0.0.1:7401,n2=127.0.0.1:7411,n3=127.0.0.1:7421"
case "$cmd" in
start)
  mkdir -p "$dir"
  for port in 7400 7401 7410 7411 7420 7421 7480 7490 7500; do
    if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port is in use (another cluster still running?): stop it first" >&2
      exit 1
    fi
  done
  for i in 1 2 3; do
    base=$((7400 + (i - 1) * 10))
    "$bin" --name "n$i" --data-dir "$dir/n$i" --initial-cluster "$cluster" \
      --client-addr "127.0.0.1:$base" --peer-addr "127.0.0.1:$((base + 1))" \
      --http-addr "127.0.0.1:$((base + 80))" --log-level "${LOG_LEVEL:-warn}" ${CATALOGD_FLAGS:-} \
      >"$dir/n$i.log" 2>&1 &
    echo $! >"$dir/n$i.pid"
  done
  for _ in $(seq 1 100); do
    for i in 1 2 3; do
      if ! kill -0 "$(cat "$dir/n$i.pid")" 2>/dev/null; then
        echo "n$i exited; its log: $dir/n$i.log" >&2
        tail -5 "$dir/n$i.log" >&2
        exit 1
      fi
    done
    if curl -sf http://127.0.0.1:7480/readyz >/dev/null && curl -sf http://127.0.0.1:7490/readyz >/dev/null &&
      curl -sf http://127.0.0.1:7500/readyz >/dev/null; then
      echo "cluster ready: endpoints 127.0.0.1:7400,127.0.0.1:7410,127.0.0.1:7420"
      exit 0
    fi
    sleep 0.1
  done
  echo "cluster did not become ready; logs in $dir" >&2
  exit 1
  ;;
stop)
  for i in 1 2 3; do
    [ -f "$dir/n$i.pid" ] && kill "$(cat "$dir/n$i.pid")" 2>/dev/null || true
  done
  for i in 1 2 3; do
    [ -f "$dir/n$i.pid" ] || continue
    pid=$(cat "$dir/n$i.pid")
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/n$i.pid"
  done
  ;;
*)
  echo "usage: $0 start|stop [DIR]" >&2
  exit 2
  ;;
esac
