#!/usr/bin/env bash
# Installs every Debian package wren needs to build, test, benchmark and run.
# (ThreadSanitizer's runtime, libtsan2, comes with gcc through libgcc-12-dev;
# build-essential pulls it in.)
# Idempotent: prints nothing and exits 0 when everything is present.
# Usage: scripts/install-deps.sh [--check]   (--check: only report, exit 1 if missing)
set -euo pipefail

PACKAGES=(
  build-essential pkg-config
  libzmq3-dev libmsgpack-dev libopenblas-dev
  libibverbs-dev librdmacm-dev
  qemu-system-x86  # the Soft-RoCE VM of make test-rdma (tests/rdma/vm.sh)
  libcmocka-dev zlib1g-dev
  libmicrohttpd-dev prometheus curl
  clang libclang-rt-dev
  shellcheck clang-format
  dataset-fashion-mnist
  iproute2 python3 gnuplot-nox
  systemd  # systemd-analyze: tests/integration/31_systemd_units.sh
  python3-kubernetes python3-yaml  # deploy/k8s schemas: tests/integration/35_k8s_manifests.sh
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "${1:-}" = "--check" ]; then
  echo "missing Debian packages: ${missing[*]}" >&2
  exit 1
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing Debian packages: ${missing[*]}" >&2
  echo "install-deps: run as root:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  echo "install-deps: (or: sudo scripts/install-deps.sh)" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
