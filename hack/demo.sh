#!/usr/bin/env bash
# The README's first command: builds dctl and the demo image, starts `dctl up` (etcd, the
# controller-manager and an agent on the local Docker engine) in the background, applies
# manifests/ and shows the services converge. `hack/demo.sh down` stops it again.
set -euo pipefail
cd "$(dirname "$0")/.."

state="${XDG_STATE_HOME:-$HOME/.local/state}/dctl"
dctl=target/debug/dctl

if [ "${1:-}" = "down" ]; then
  if [ -f "$state/up.pid" ]; then kill -INT "$(cat "$state/up.pid")" 2>/dev/null || true; fi
  for _ in $(seq 1 100); do [ -f "$state/endpoint" ] || break; sleep 0.1; done
  docker ps -aq --filter label=dctl.managed=true --filter label=dctl.namespace=demo | xargs -r docker rm -f >/dev/null
  docker network ls --filter label=dctl.managed=true --format '{{.Name}}' | grep '^demo_' | xargs -r docker network rm >/dev/null
  echo "dctl stopped; demo containers and networks removed"
  exit 0
fi

cargo build -q -p dctl
bash hack/images.sh >/dev/null
mkdir -p "$state"
if ! [ -f "$state/up.pid" ] || ! kill -0 "$(cat "$state/up.pid")" 2>/dev/null; then
  nohup "$dctl" up >"$state/up.log" 2>&1 &
  echo $! >"$state/up.pid"
fi
for _ in $(seq 1 200); do
  [ -f "$state/endpoint" ] && "$dctl" get nodes >/dev/null 2>&1 && break
  sleep 0.1
done
"$dctl" apply -f manifests/
echo "waiting for the demo services to be ready…"
for _ in $(seq 1 120); do
  ready=$("$dctl" get svc -n demo -o json | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
print(all((s.get("status") or {}).get("readyReplicas", 0) >= s["spec"].get("replicas", 1) for s in items))')
  [ "$ready" = "True" ] && break
  sleep 1
done
"$dctl" get svc -n demo
"$dctl" get tasks -n demo
echo
echo "web is published on port 8080 through dctl's proxy, round-robin over its Ready tasks:"
for _ in 1 2 3; do curl -s -m 2 localhost:8080/ || true; done
curl -s -m 3 localhost:8080/upstream || true
echo
echo "dctl is running in the background (log: $state/up.log); 'bash hack/demo.sh down' stops it"
