#!/usr/bin/env bash
# Makes the CURVE keys of a wren job on Kubernetes (docs/SECURITY.md) and
# prints the kubectl commands that put them into the three Secrets the
# manifests mount:
#   deploy/k8s/make-keys.sh DIR      # DIR must not exist; keep it private
# One key pair per process: the coordinator, shard0 .. shard(S-1) and
# worker0 .. worker(W-1), with S = `shards` and W = the larger of `workers`
# and `max_workers` in configmap.yaml (so a scaled-up worker Job finds its
# key), or --shards S / --workers W. Each Secret holds only its role's keys:
#   DIR/coordinator -> wren-coordinator-key: coordinator.key, allow.txt
#   DIR/shard       -> wren-shard-keys:      shardN.key, coordinator.pub, allow.txt
#   DIR/worker      -> wren-worker-keys:     workerN.key, coordinator.pub
# Environment: WREN_SERVER, the wren-server to run keygen with (default:
# build/bin/wren-server of this repository, else wren-server on PATH).
# Exit status: 0 done; 1 keygen failed; 2 usage.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
die() {
    echo "make-keys.sh: $*" >&2
    exit "${2:-1}"
}
usage() { die "usage: make-keys.sh [--shards S] [--workers W] DIR (DIR must not exist)" 2; }

# conf_key KEY: KEY's value in configmap.yaml's job.conf, or nothing.
conf_key() {
    sed -n "s/#.*//; s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\([0-9]*\)[[:space:]]*$/\1/p" \
        "$HERE/configmap.yaml" | head -n 1
}

shards=$(conf_key shards) workers=$(conf_key workers) maxw=$(conf_key max_workers)
[ -n "$maxw" ] && [ "$maxw" -gt "${workers:-0}" ] && workers=$maxw
dir=""
while [ $# -gt 0 ]; do
    case $1 in
        --shards) [ $# -ge 2 ] || usage; shards=$2; shift 2 ;;
        --workers) [ $# -ge 2 ] || usage; workers=$2; shift 2 ;;
        -*) usage ;;
        *) [ -z "$dir" ] || usage; dir=$1; shift ;;
    esac
done
[ -n "$dir" ] || usage
for v in "shards=$shards" "workers=$workers"; do
    [[ ${v#*=} =~ ^[1-9][0-9]*$ ]] || die "${v%%=*} '${v#*=}': want a whole number >= 1 (--${v%%=*})" 2
done
[ ! -e "$dir" ] || die "$dir exists: give a new directory (keys are never overwritten)" 2

server=${WREN_SERVER:-$HERE/../../build/bin/wren-server}
[ -x "$server" ] || server=$(command -v wren-server) ||
    die "no wren-server: run make, or set WREN_SERVER"

umask 077
mkdir -p "$dir/all" "$dir/coordinator" "$dir/shard" "$dir/worker"
keygen() {
    "$server" keygen --dir "$dir/all" "$@" 2>"$dir/keygen.err" ||
        die "wren-server keygen $* failed: $(cat "$dir/keygen.err")"
}
keygen coordinator >/dev/null
: >"$dir/all/allow.txt"
for ((i = 0; i < shards; i++)); do keygen "shard$i" >>"$dir/all/allow.txt"; done
for ((i = 0; i < workers; i++)); do keygen "worker$i" >>"$dir/all/allow.txt"; done

cp -p "$dir/all/coordinator.key" "$dir/all/allow.txt" "$dir/coordinator/"
cp -p "$dir"/all/shard*.key "$dir/all/coordinator.pub" "$dir/all/allow.txt" "$dir/shard/"
cp -p "$dir"/all/worker*.key "$dir/all/coordinator.pub" "$dir/worker/"
rm -r "$dir/all" "$dir/keygen.err"
echo "# $shards shard and $workers worker keys in $dir; create the Secrets with:"
echo "kubectl create secret generic wren-coordinator-key --from-file=$dir/coordinator"
echo "kubectl create secret generic wren-shard-keys --from-file=$dir/shard"
echo "kubectl create secret generic wren-worker-keys --from-file=$dir/worker"
