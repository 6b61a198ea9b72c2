#!/usr/bin/env bash
# Starts or stops a local single-member etcd, kind-style: free loopback port, data in a temp
# dir. `start` prints `export DCTL_ETCD=http://127.0.0.1:PORT` so that
#   eval "$(hack/etcd.sh start)"
# points the dctl CLI at it; `stop` kills it and removes its data.
set -euo pipefail

state="${DCTL_HACK_STATE:-${TMPDIR:-/tmp}/dctl-hack-etcd}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

case "${1:-}" in
  start)
    if [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
      echo "export DCTL_ETCD=$(cat "$state/endpoint")"
      exit 0
    fi
    rm -rf "$state" && mkdir -p "$state"
    client=$(free_port); peer=$(free_port)
    endpoint="http://127.0.0.1:$client"
    nohup etcd --name dctl --data-dir "$state/data" \
      --listen-client-urls "$endpoint" --advertise-client-urls "$endpoint" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "dctl=http://127.0.0.1:$peer" >"$state/etcd.log" 2>&1 &
    echo $! >"$state/pid"
    echo "$endpoint" >"$state/endpoint"
    for _ in $(seq 1 100); do
      if curl -fsS "$endpoint/health" >/dev/null 2>&1; then
        echo "export DCTL_ETCD=$endpoint"
        exit 0
      fi
      sleep 0.1
    done
    echo "hack/etcd.sh: etcd did not become healthy; see $state/etcd.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$state/pid" ]; then kill "$(cat "$state/pid")" 2>/dev/null || true; fi
    rm -rf "$state"
    ;;
  *)
    echo "usage: hack/etcd.sh start|stop" >&2
    exit 2
    ;;
esac
