#!/usr/bin/env bash
# vm.sh — boots Debian's own kernel under qemu (TCG, no KVM needed) with an
# initramfs root that has Soft-RoCE (rdma_rxe) set up, and runs a test there.
#
#   tests/rdma/vm.sh [--run 'CMD'] [--add FILE]... [--timeout SEC] [--cpus N]
#
# Without --run the test is tests/rdma/verbs-test.sh (ibv_devices/ibv_devinfo
# show rxe0, ibv_rc_pingpong and rping between two processes succeed). --run
# runs CMD with sh inside instead, after the same set-up (environment:
# WR_RDMA_DEV, WR_RDMA_GID_INDEX, WR_RDMA_ADDR). --add copies a host file into
# the image at the same absolute path, with the shared libraries it needs
# (its ldd closure), so a host-built binary runs there as it is.
#
# The image is built from Debian packages fetched with `apt-get download`
# (linux-image of the running release, busybox-static, rdma-core,
# ibverbs-providers, ibverbs-utils, rdmacm-utils, iproute2 and the libraries)
# and cached under $BUILD/rdma-vm/<key>, the key a hash of the package
# versions, the module and binary lists and the image scripts, so a second
# run only boots (docs/RDMA.md, "How the Soft-RoCE test works").
# Exit status: the test's (0 passed), 124 the timeout, 2 no result from the
# VM, 3 a host-side problem (named on stderr).
# Host needs: apt-get, dpkg-deb, objcopy, ldd, gzip, timeout,
# qemu-system-x86_64 (apt-get install qemu-system-x86).
set -eu -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
VMDIR=$BUILD/rdma-vm
TIMEOUT=${WR_VM_TIMEOUT:-240}
CPUS=${WR_VM_CPUS:-1}
# rdma_ucm (with rdma_cm, iw_cm) is what rdma_cm programs (rping) open.
# inet_diag, tcp_diag: sock_diag, which a coordinator's and shard's per-address cap reads.
MODULES="crc32_generic udp_tunnel ip6_udp_tunnel ib_core ib_uverbs rdma_rxe dummy rdma_ucm inet_diag tcp_diag"
# Packages whose files go into the image (the kernel package is added below).
PKGS="busybox-static rdma-core ibverbs-providers libibverbs1 librdmacm1
ibverbs-utils rdmacm-utils libnl-3-200 libnl-route-3-200 iproute2 libmnl0
libelf1 libbpf1 libcap2 libbsd0 libmd0 zlib1g libgcc-s1 libc6 perftest
libpci3 libudev1 libibumad3"
# Binaries of the image besides busybox (paths inside the packages).
BINS="usr/bin/ibv_devices usr/bin/ibv_devinfo usr/bin/ibv_rc_pingpong
usr/bin/rping usr/bin/rdma usr/bin/ib_write_bw"

die() {
    echo "vm.sh: $*" >&2
    exit 3
}

usage() {
    sed -n '5,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 3
}

RUN_CMD=
ADD_FILES=()
while [ $# -gt 0 ]; do
    case $1 in
    --run) RUN_CMD=${2:?--run needs a command}; shift 2 ;;
    --add) ADD_FILES+=("${2:?--add needs a file}"); shift 2 ;;
    --timeout) TIMEOUT=${2:?--timeout needs seconds}; shift 2 ;;
    --cpus) CPUS=${2:?--cpus needs a count}; shift 2 ;;
    -h | --help) usage ;;
    *) echo "vm.sh: unknown argument '$1'" >&2; usage ;;
    esac
done

check_host() {
    local t
    for t in apt-get apt-cache dpkg-deb objcopy ldd gzip timeout sha256sum; do
        command -v "$t" >/dev/null || die "'$t' is missing on the host"
    done
    command -v qemu-system-x86_64 >/dev/null ||
        die "qemu-system-x86_64 is missing: apt-get install qemu-system-x86"
}

# kernel_pkg: the linux-image package the running release's linux-image-amd64
# depends on (the kernel whose modules go into the image).
kernel_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n 1
}

# pkg_versions PKG...: "name=version" per package, the candidate apt installs
# (one apt-cache call: each costs most of a second).
pkg_versions() {
    local out p v
    out=$(apt-cache policy "$@" | awk '/^[^ ].*:$/ { sub(/:$/, ""); n = $0 }
        /^ *Candidate: / { print n "=" $2 }')
    for p in "$@"; do
        v=$(sed -n "s/^$p=//p" <<<"$out" | head -n 1)
        if [ -z "$v" ] || [ "$v" = "(none)" ]; then
            die "apt has no candidate for package '$p' (apt-get update?)"
        fi
        echo "$p=$v"
    done
}

# deb_of PKG=VER: the downloaded .deb of that version in $VMDIR/debs, or "".
deb_of() {
    local name=${1%%=*} ver=${1#*=}
    find "$VMDIR/debs" -name "${name}_*.deb" | grep -F "_${ver//:/%3a}_" | head -n 1
}

# fetch_and_extract DIR PKG=VER...: apt-get download the packages not yet in
# $VMDIR/debs (kept across images), and dpkg-deb -x each into DIR.
fetch_and_extract() {
    local dir=$1 pv deb missing=()
    shift
    mkdir -p "$VMDIR/debs" "$dir"
    for pv in "$@"; do
        [ -n "$(deb_of "$pv")" ] || missing+=("$pv")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        (cd "$VMDIR/debs" && apt-get download -q "${missing[@]}" >/dev/null 2>"$VMDIR/apt.log") ||
            die "apt-get download failed (see $VMDIR/apt.log)"
    fi
    for pv in "$@"; do
        deb=$(deb_of "$pv")
        [ -n "$deb" ] || die "downloaded .deb of $pv not found in $VMDIR/debs"
        dpkg-deb -x "$deb" "$dir"
    done
}

source "$HERE/vm-image.bash"

check_host
mkdir -p "$VMDIR"
KPKG=$(kernel_pkg)
[ -n "$KPKG" ] || die "no linux-image package behind linux-image-amd64 (apt-get update?)"
KVER=${KPKG#linux-image-}
# shellcheck disable=SC2086 # PKGS is a list of names
VERSIONS=$(pkg_versions "$KPKG" $PKGS)
KEY=$( {
    echo "$VERSIONS" "$MODULES" "$BINS"
    cat "$HERE/init.sh" "$HERE/verbs-test.sh" "$HERE/ib-write-bw.sh" "$HERE/vm-image.bash"
} | sha256sum | cut -c1-16)
IMG=$VMDIR/$KEY
if [ ! -f "$IMG/base.cpio.gz" ]; then
    echo "vm.sh: building the image $IMG (kernel $KVER)"
    # Images of other package versions or scripts are stale: drop them.
    find "$VMDIR" -mindepth 1 -maxdepth 1 -type d -regextype posix-extended -regex '.*/[0-9a-f]{16}' -exec rm -rf {} +
    # shellcheck disable=SC2086 # one package=version per word
    build_image "$IMG" $VERSIONS
fi
run_vm "$IMG"
