#!/usr/bin/env bash
# Install one Atoll role on a real host (root, systemd): the binary in /usr/local/bin, its
# configuration in /etc/atoll/ROLE.env (0600), its systemd unit, enabled and started.
#
#   deploy/install.sh cloud-core --etcd-servers URL[,URL...] [--listen ADDR] [--sync-listen ADDR]
#                                [--tls-san NAME] [--etcd-cafile F --etcd-certfile F --etcd-keyfile F]
#   deploy/install.sh edge-core  --cloud HOST:PORT[,HOST:PORT...] --site NAME --join-token TOKEN
#                                [--listen ADDR]
#   deploy/install.sh edge-agent --kubeconfig FILE --node-name NAME [--node-ip IP]
#                                [--pod-cidr CIDR] [--insecure-registry HOST:PORT]
#
# Binaries come from target/release (target/agent for the agent), built here when missing.
# Without --etcd-servers, cloud-core runs on its embedded store under /var/lib/atoll/cloud-core.
set -euo pipefail
cd "$(dirname "$0")/.."
role=${1:-}
shift || true
case "$role" in
  cloud-core|edge-core|edge-agent) ;;
  *) echo "usage: deploy/install.sh cloud-core|edge-core|edge-agent [flags]" >&2; exit 64 ;;
esac
if [ "$(id -u)" != 0 ]; then echo "deploy/install.sh: run as root" >&2; exit 1; fi

# FLAG VALUE pairs into ATOLL_* lines (every flag has its variable).
env_lines=()
while [ $# -gt 0 ]; do
  flag=$1; value=${2:-}
  case "$flag" in
    --*) ;;
    *) echo "deploy/install.sh: expected a --flag, got $flag" >&2; exit 64 ;;
  esac
  [ $# -ge 2 ] || { echo "deploy/install.sh: $flag needs a value" >&2; exit 64; }
  name=${flag#--}
  case "$name" in
    insecure-registry) var=ATOLL_INSECURE_REGISTRIES ;;
    tls-san) var=ATOLL_TLS_SANS ;;
    *) var=ATOLL_$(echo "$name" | tr 'a-z-' 'A-Z_') ;;
  esac
  env_lines+=("$var=$value")
  shift 2
done
has() { printf '%s\n' "${env_lines[@]}" | grep -q "^$1="; }

need=()
pkgs=(ca-certificates protobuf-compiler)
if [ "$role" = edge-agent ]; then pkgs+=(runc containernetworking-plugins iproute2 nftables); fi
for pkg in "${pkgs[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi

case "$role" in
  edge-agent)
    [ -x target/agent/edge-agent ] || cargo build --profile agent --locked -p edge-agent
    bin=target/agent/edge-agent
    has ATOLL_ROOT_DIR || env_lines+=("ATOLL_ROOT_DIR=/var/lib/atoll/edge-agent")
    has ATOLL_KUBECONFIG || { echo "edge-agent needs --kubeconfig" >&2; exit 64; }
    has ATOLL_NODE_NAME || { echo "edge-agent needs --node-name" >&2; exit 64; }
    ;;
  *)
    [ -x "target/release/$role" ] || cargo build --release --locked -p "$role"
    bin=target/release/$role
    has ATOLL_DATA_DIR || env_lines+=("ATOLL_DATA_DIR=/var/lib/atoll/$role")
    if [ "$role" = edge-core ]; then
      for v in ATOLL_CLOUD ATOLL_SITE; do
        has "$v" || { echo "edge-core needs --${v#ATOLL_}" | tr 'A-Z_' 'a-z-' >&2; exit 64; }
      done
    fi
    ;;
esac

install -m 0755 "$bin" "/usr/local/bin/$role"
install -d -m 0700 /etc/atoll /var/lib/atoll
umask 077
printf '%s\n' "${env_lines[@]}" >"/etc/atoll/$role.env"
install -m 0644 "deploy/systemd/atoll-$role.service" "/etc/systemd/system/atoll-$role.service"
install -d /usr/local/share/doc/atoll
install -m 0644 README.md /usr/local/share/doc/atoll/README.md
systemctl daemon-reload
systemctl enable --now "atoll-$role.service"
echo "installed $role: /usr/local/bin/$role, /etc/atoll/$role.env, atoll-$role.service"
case "$role" in
  cloud-core) echo "admin kubeconfig: $(grep '^ATOLL_DATA_DIR=' "/etc/atoll/$role.env" | cut -d= -f2-)/admin.kubeconfig (once it serves)"
              echo "a site's join token: cloud-core join-token --kubeconfig ADMIN_KUBECONFIG --site NAME --ttl 1h" ;;
  edge-core)  echo "site kubeconfig: $(grep '^ATOLL_DATA_DIR=' "/etc/atoll/$role.env" | cut -d= -f2-)/admin.kubeconfig (once joined)" ;;
esac
