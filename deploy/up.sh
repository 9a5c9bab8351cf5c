#!/usr/bin/env bash
# Builds Atoll and starts a local region on loopback: cloud-core on the embedded store.
#   deploy/up.sh          start (data in $ATOLL_HOME, default ./.atoll)
#   deploy/up.sh down     stop
set -euo pipefail
cd "$(dirname "$0")/.."
ATOLL_HOME=${ATOLL_HOME:-$PWD/.atoll}
API=${ATOLL_LISTEN:-127.0.0.1:6443}
mkdir -p "$ATOLL_HOME"

stop() {
  if [ -f "$ATOLL_HOME/cloud-core.pid" ]; then
    kill "$(cat "$ATOLL_HOME/cloud-core.pid")" 2>/dev/null || true
    rm -f "$ATOLL_HOME/cloud-core.pid"
    echo "stopped cloud-core"
  fi
}
if [ "${1:-}" = down ]; then stop; exit 0; fi

if ! command -v kubectl >/dev/null; then
  echo "deploy/up.sh: kubectl is required on PATH to drive the region" >&2
  exit 1
fi
cargo build --release --locked -p cloud-core
stop
BIN=$PWD/target/release
nohup "$BIN/cloud-core" serve --data-dir "$ATOLL_HOME/cloud" --listen "$API" \
  >"$ATOLL_HOME/cloud-core.log" 2>&1 &
echo $! >"$ATOLL_HOME/cloud-core.pid"

# Ready once the admin kubeconfig is written and /readyz answers.
KC=$ATOLL_HOME/cloud/admin.kubeconfig
ready=""
for _ in $(seq 1 300); do
  if [ -f "$KC" ] && kubectl --kubeconfig "$KC" get --raw /readyz >/dev/null 2>&1; then ready=1; break; fi
  if ! kill -0 "$(cat "$ATOLL_HOME/cloud-core.pid")" 2>/dev/null; then
    echo "cloud-core exited; log:" >&2; cat "$ATOLL_HOME/cloud-core.log" >&2; exit 1
  fi
  sleep 0.1
done
if [ -z "$ready" ]; then echo "cloud-core did not become ready; see $ATOLL_HOME/cloud-core.log" >&2; exit 1; fi

cat <<MSG
Atoll region is up: cloud-core on https://$API (log: $ATOLL_HOME/cloud-core.log)

Try:
  export KUBECONFIG=$KC
  kubectl get namespaces
  kubectl api-resources
  kubectl run web --image=busybox:1.36 -- sleep 3600
  kubectl get pods -o wide
  printf 'apiVersion: v1\nkind: Tenant\nmetadata: {name: acme}\n' | kubectl apply -f -
  $BIN/cloud-core kubeconfig --kubeconfig $KC --tenant acme > acme.kubeconfig
  kubectl --kubeconfig acme.kubeconfig get namespaces

Stop with: deploy/up.sh down
MSG
