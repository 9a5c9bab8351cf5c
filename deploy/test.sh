#!/usr/bin/env bash
# Installs what the test suite needs, then runs it: formatting, lints, unit tests and the
# end-to-end tests (which spawn the real binaries and drive them with stock kubectl).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use; installed only when missing.
need=()
# runc, CNI plugins, busybox (the test image), a registry and skopeo/umoci (to build and push it),
# iproute2 (network namespaces) and nftables (tenant isolation) for the node agent's tests;
# etcd (server and etcdctl) for the region on etcd; protoc to build the etcd client.
for pkg in ca-certificates runc containernetworking-plugins busybox-static docker-registry skopeo umoci iproute2 nftables etcd-server etcd-client protobuf-compiler; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# VM pods: qemu (without its Recommends, which clash with backported qemu-utils on some
# machines), qemu-img, and the cloud kernel and cpio the test VM image is built from.
vm_need=()
for pkg in qemu-system-x86 qemu-utils linux-image-cloud-amd64 cpio; do
  dpkg -s "$pkg" >/dev/null 2>&1 || vm_need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ] || [ ${#vm_need[@]} -gt 0 ]; then
  apt-get update
fi
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi
if [ ${#vm_need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${vm_need[@]}"
fi
# The Kubernetes Python client: a real client users run (its watch sends `watch=True`).
if ! python3 -c 'import kubernetes' 2>/dev/null; then
  python3 -m pip install --quiet kubernetes
fi
if ! command -v kubectl >/dev/null; then
  echo "deploy/test.sh: kubectl (v1.32) is required on PATH: the end-to-end tests drive stock kubectl" >&2
  exit 1
fi

export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
if cargo nextest --version >/dev/null 2>&1; then
  # Each end-to-end test starts its own servers; keep concurrency modest on small machines.
  cargo nextest run --workspace --locked --no-fail-fast --test-threads 4
  # The API end-to-end tests once more with the region on etcd (one etcd per server).
  ATOLL_TEST_STORAGE=etcd cargo nextest run -p tests --test api --locked --no-fail-fast --test-threads 4
else
  cargo test --workspace --locked --no-fail-fast -- --test-threads 4
  ATOLL_TEST_STORAGE=etcd cargo test -p tests --test api --locked --no-fail-fast -- --test-threads 4
fi
