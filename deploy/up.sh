#!/usr/bin/env bash
# Builds Atoll and starts a local region on loopback: cloud-core on the embedded store, one edge
# site (edge-core "site1") joined to it over QUIC, and a node agent ("node1") at that site.
#   deploy/up.sh                 start (data in $ATOLL_HOME, default ./.atoll)
#   ATOLL_ETCD=3 deploy/up.sh    the region on a 3-member etcd cluster with 2 cloud-core
#                                replicas (ATOLL_REPLICAS=N for another count); the site is
#                                given every replica
#   deploy/up.sh down            stop
set -euo pipefail
cd "$(dirname "$0")/.."
ATOLL_HOME=${ATOLL_HOME:-$PWD/.atoll}
API=${ATOLL_LISTEN:-127.0.0.1:6443}
SYNC=${ATOLL_SYNC_LISTEN:-127.0.0.1:7443}
EDGE_API=${ATOLL_EDGE_LISTEN:-127.0.0.1:6444}
SITE=${ATOLL_SITE:-site1}
NODE=${ATOLL_NODE:-node1}
ETCD_MEMBERS=${ATOLL_ETCD:-0}
REPLICAS=${ATOLL_REPLICAS:-2}
if [ "$ETCD_MEMBERS" = 0 ]; then REPLICAS=1; fi
mkdir -p "$ATOLL_HOME"

# wait_ready NAME CHECK: poll CHECK (a shell function) for up to 30 s; fail with NAME's log if the
# process exits or never becomes ready.
wait_ready() {
  local name=$1 check=$2
  for _ in $(seq 1 300); do
    if "$check"; then return 0; fi
    if ! kill -0 "$(cat "$ATOLL_HOME/$name.pid")" 2>/dev/null; then
      echo "$name exited; log:" >&2; cat "$ATOLL_HOME/$name.log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "$name did not become ready; see $ATOLL_HOME/$name.log" >&2; exit 1
}
cloud_ready() { [ -f "$KC" ] && kubectl --kubeconfig "$KC" get --raw /readyz >/dev/null 2>&1; }
edge_ready() { [ -f "$EKC" ] && kubectl --kubeconfig "$EKC" get --raw /readyz >/dev/null 2>&1; }
node_ready() {
  kubectl --kubeconfig "$EKC" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True
}

stop() {
  if [ -f "$ATOLL_HOME/edge-agent.pid" ] && [ -x "$PWD/target/agent/edge-agent" ]; then
    kill "$(cat "$ATOLL_HOME/edge-agent.pid")" 2>/dev/null || true
    rm -f "$ATOLL_HOME/edge-agent.pid"
    # Containers outlive the agent by design (it re-adopts them); stopping the region stops them.
    "$PWD/target/agent/edge-agent" reset --root-dir "$ATOLL_HOME/$NODE" || true
    echo "stopped edge-agent and its containers"
  fi
  for f in "$ATOLL_HOME"/cloud-core-*.pid "$ATOLL_HOME"/etcd-*.pid; do
    [ -f "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
    echo "stopped $(basename "$f" .pid)"
  done
  for p in edge-agent edge-core cloud-core; do
    if [ -f "$ATOLL_HOME/$p.pid" ]; then
      kill "$(cat "$ATOLL_HOME/$p.pid")" 2>/dev/null || true
      rm -f "$ATOLL_HOME/$p.pid"
      echo "stopped $p"
    fi
  done
}
if [ "${1:-}" = down ]; then stop; exit 0; fi

if ! command -v kubectl >/dev/null; then
  echo "deploy/up.sh: kubectl is required on PATH to drive the region" >&2
  exit 1
fi
# The node agent runs containers with runc, networks them with the CNI plugins, and the first
# image is built here from busybox-static with umoci and skopeo. Installed only when missing.
need=()
# protoc builds the etcd client cloud-core links.
pkgs=(ca-certificates runc containernetworking-plugins busybox-static skopeo umoci iproute2 nftables protobuf-compiler)
if [ "$ETCD_MEMBERS" != 0 ]; then pkgs+=(etcd-server); fi
for pkg in "${pkgs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi
cargo build --release --locked -p cloud-core -p edge-core
cargo build --profile agent --locked -p edge-agent
stop
BIN=$PWD/target/release
AGENT=$PWD/target/agent/edge-agent
STORE=()
CLOUDS=$SYNC
if [ "$ETCD_MEMBERS" != 0 ]; then
  # etcd members m0..mN-1 on loopback: clients on 2379+10000*i, peers on 2380+10000*i.
  cluster=""; urls=""
  for i in $(seq 0 $((ETCD_MEMBERS - 1))); do
    cluster="$cluster${cluster:+,}m$i=http://127.0.0.1:$((2380 + 10000 * i))"
    urls="$urls${urls:+,}http://127.0.0.1:$((2379 + 10000 * i))"
  done
  for i in $(seq 0 $((ETCD_MEMBERS - 1))); do
    state=new; [ -d "$ATOLL_HOME/etcd/m$i/member" ] && state=existing
    nohup etcd --name "m$i" --data-dir "$ATOLL_HOME/etcd/m$i" \
      --listen-client-urls "http://127.0.0.1:$((2379 + 10000 * i))" \
      --advertise-client-urls "http://127.0.0.1:$((2379 + 10000 * i))" \
      --listen-peer-urls "http://127.0.0.1:$((2380 + 10000 * i))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((2380 + 10000 * i))" \
      --initial-cluster "$cluster" --initial-cluster-state "$state" \
      >"$ATOLL_HOME/etcd-m$i.log" 2>&1 &
    echo $! >"$ATOLL_HOME/etcd-m$i.pid"
  done
  STORE=(--etcd-servers "$urls")
fi
nohup "$BIN/cloud-core" serve --data-dir "$ATOLL_HOME/cloud" --listen "$API" --sync-listen "$SYNC" "${STORE[@]}" \
  >"$ATOLL_HOME/cloud-core.log" 2>&1 &
echo $! >"$ATOLL_HOME/cloud-core.pid"

# Ready once the admin kubeconfig is written and /readyz answers.
KC=$ATOLL_HOME/cloud/admin.kubeconfig
wait_ready cloud-core cloud_ready

# Further replicas on the same etcd: API and sync ports counting up from 6445 and 7445.
for r in $(seq 2 "$REPLICAS"); do
  api_r=127.0.0.1:$((6443 + 2 * (r - 1))); sync_r=127.0.0.1:$((7443 + 2 * (r - 1)))
  nohup "$BIN/cloud-core" serve --data-dir "$ATOLL_HOME/cloud-$r" --listen "$api_r" --sync-listen "$sync_r" "${STORE[@]}" \
    >"$ATOLL_HOME/cloud-core-$r.log" 2>&1 &
  echo $! >"$ATOLL_HOME/cloud-core-$r.pid"
  CLOUDS="$CLOUDS,$sync_r"
  replica_ready() { [ -f "$ATOLL_HOME/cloud-$r/admin.kubeconfig" ] && kubectl --kubeconfig "$ATOLL_HOME/cloud-$r/admin.kubeconfig" get --raw /readyz >/dev/null 2>&1; }
  wait_ready "cloud-core-$r" replica_ready
done

# The edge site: joins once with a single-use token, then restarts with its own certificate.
EDGE_DIR=$ATOLL_HOME/$SITE
JOIN=()
if [ ! -f "$EDGE_DIR/pki/client.crt" ]; then
  JOIN=(--join-token "$("$BIN/cloud-core" join-token --kubeconfig "$KC" --site "$SITE" --ttl 10m)")
fi
nohup "$BIN/edge-core" serve --data-dir "$EDGE_DIR" --cloud "$CLOUDS" --site "$SITE" --listen "$EDGE_API" "${JOIN[@]}" \
  >"$ATOLL_HOME/edge-core.log" 2>&1 &
echo $! >"$ATOLL_HOME/edge-core.pid"
EKC=$EDGE_DIR/admin.kubeconfig
wait_ready edge-core edge_ready

# A first image for sites with no registry: a busybox rootfs as an OCI archive, imported into the
# node's image store (edge-agent image import).
IMAGE=localhost/busybox:v1
ARCHIVE=$ATOLL_HOME/busybox.tar
if [ ! -f "$ARCHIVE" ]; then
  work=$(mktemp -d)
  umoci init --layout "$work/oci" >/dev/null
  umoci new --image "$work/oci:v1" >/dev/null
  umoci unpack --image "$work/oci:v1" "$work/bundle" >/dev/null
  mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/etc" "$work/bundle/rootfs/tmp"
  cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
  for a in sh ls cat echo sleep env id ps ping wget nc httpd hostname ip; do ln -sf busybox "$work/bundle/rootfs/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$work/bundle/rootfs/etc/passwd"
  echo 'root:x:0:' >"$work/bundle/rootfs/etc/group"
  umoci repack --image "$work/oci:v1" "$work/bundle" >/dev/null
  umoci config --image "$work/oci:v1" --config.cmd sh --config.env PATH=/bin >/dev/null
  skopeo copy --quiet "oci:$work/oci:v1" "oci-archive:$ARCHIVE:$IMAGE"
  rm -rf "$work"
fi
"$AGENT" image import --root-dir "$ATOLL_HOME/$NODE" "$ARCHIVE" >/dev/null

# The node agent registers $NODE at the site and keeps it Ready.
nohup "$AGENT" --kubeconfig "$EKC" --node-name "$NODE" --root-dir "$ATOLL_HOME/$NODE" \
  --listen 127.0.0.1:10250 --node-ip 127.0.0.1 \
  >"$ATOLL_HOME/edge-agent.log" 2>&1 &
echo $! >"$ATOLL_HOME/edge-agent.pid"
wait_ready edge-agent node_ready

# A first pod, created at the cloud and placed on $NODE: it runs at the edge under runc.
if ! kubectl --kubeconfig "$KC" get pod hello >/dev/null 2>&1; then
  kubectl --kubeconfig "$KC" run hello --image="$IMAGE" --restart=Never \
    --overrides="{\"apiVersion\":\"v1\",\"spec\":{\"nodeName\":\"$NODE\"}}" \
    -- sh -c 'echo hello from $(hostname) at the edge; exec sleep 3600' >/dev/null
fi
hello_running() {
  [ "$(kubectl --kubeconfig "$KC" get pod hello -o jsonpath='{.status.phase}' 2>/dev/null)" = Running ]
}
wait_ready edge-agent hello_running

if [ "$ETCD_MEMBERS" != 0 ]; then
  echo "etcd: $ETCD_MEMBERS members ($urls); cloud-core replicas: $REPLICAS (sync $CLOUDS); logs in $ATOLL_HOME"
fi
cat <<MSG
Atoll region is up on loopback:
  cloud-core  https://$API  (sync $SYNC)   log: $ATOLL_HOME/cloud-core.log
  edge-core   https://$EDGE_API  site $SITE       log: $ATOLL_HOME/edge-core.log
  edge-agent  node $NODE at $SITE                 log: $ATOLL_HOME/edge-agent.log

Try, at the cloud:
  export KUBECONFIG=$KC
  kubectl get edgesites
  kubectl get nodes -o wide                      # $NODE, Ready, labelled atoll.io/site=$SITE
  kubectl get namespaces
  kubectl api-resources
  kubectl get pods -o wide                       # hello: Running on $NODE, with its pod IP
  kubectl logs hello                             # tunnelled from the site over its sync link
  kubectl run web --image=$IMAGE --overrides='{"apiVersion":"v1","spec":{"nodeName":"$NODE"}}' -- httpd -f -p 8080
  kubectl delete pod web                         # SIGTERM, grace period, then gone at both tiers
  printf 'apiVersion: v1\nkind: Tenant\nmetadata: {name: acme}\n' | kubectl apply -f -
  $BIN/cloud-core kubeconfig --kubeconfig $KC --tenant acme > acme.kubeconfig
  kubectl --kubeconfig acme.kubeconfig get namespaces
and at the edge site (works while the cloud is down too):
  kubectl --kubeconfig $EKC get nodes,pods
  kubectl --kubeconfig $EKC create configmap hello --from-literal=from=edge
  kubectl get configmap hello -o yaml            # at the cloud, marked edge.atoll.io/origin: $SITE
  kubectl --kubeconfig $EKC logs hello
  kubectl create deployment web --image=localhost/busybox:v1 --replicas=2 -- httpd -f -p 8080
  kubectl get deploy,rs,pods -o wide             # placed on site1 by the cloud, bound by the site

Stop with: deploy/up.sh down
MSG
