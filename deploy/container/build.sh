#!/usr/bin/env bash
# Builds wren's container image (deploy/container/Containerfile) with podman
# and tags it wren:VERSION and wren:latest. Run from anywhere, as root:
#   deploy/container/build.sh            # prints the image name at the end
# Environment:
#   WREN_VERSION  the tag (default: `git describe --always --dirty`, else dev)
#   WREN_BASE     the Debian 12 base image (default localhost/debian:12). A
#                 localhost/ name that does not exist is made offline: mmdebstrap
#                 bookworm from the host's apt sources, then `podman import`;
#                 another name is pulled by podman as usual.
#   WREN_STORAGE  podman's storage driver (default vfs: works inside containers
#                 and without fuse-overlayfs); every podman call here uses it.
# Exit status: 0 built; 1 a step failed (its output says which); 2 usage.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VERSION=${WREN_VERSION:-$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo dev)}
BASE=${WREN_BASE:-localhost/debian:12}
PODMAN=(podman --storage-driver "${WREN_STORAGE:-vfs}")

die() {
    echo "build.sh: $*" >&2
    exit "${2:-1}"
}
[ $# -eq 0 ] || die "no arguments (settings are WREN_* variables; see the header)" 2
command -v podman >/dev/null || die "podman is missing: apt-get install podman"

# make_base: BASE from Debian's own mirror, without any registry.
make_base() {
    command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (to make $BASE): apt-get install mmdebstrap"
    local tmp
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064  # expand tmp now
    trap "rm -rf '$tmp'" EXIT
    echo "build.sh: making $BASE with mmdebstrap (minbase bookworm)" >&2
    mmdebstrap --quiet --variant=minbase bookworm "$tmp/rootfs.tar" ||
        die "mmdebstrap bookworm failed: is deb.debian.org (or the host's apt mirror) reachable?"
    "${PODMAN[@]}" import --quiet "$tmp/rootfs.tar" "$BASE" >/dev/null ||
        die "podman import of the bookworm rootfs as $BASE failed"
    rm -rf "$tmp"
    trap - EXIT
}

if [[ $BASE == localhost/* ]] && ! "${PODMAN[@]}" image exists "$BASE"; then
    make_base
fi

# --format docker keeps HEALTHCHECK (the OCI format has no such field).
# --network=host: apt reaches the mirror as the host does.
"${PODMAN[@]}" build --format docker --network=host --isolation "${WREN_ISOLATION:-chroot}" \
    --build-arg "BASE=$BASE" \
    -f "$ROOT/deploy/container/Containerfile" \
    --ignorefile "$ROOT/deploy/container/containerignore" \
    -t "localhost/wren:$VERSION" -t localhost/wren:latest "$ROOT" ||
    die "podman build failed (its output above names the step)"
echo "localhost/wren:$VERSION"
