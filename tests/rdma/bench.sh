#!/usr/bin/env bash
# bench.sh — `make bench-rdma`: in ONE boot of the Soft-RoCE VM
# (tests/rdma/vm.sh), ib_write_bw at 1 MiB, wren's rdma:// transport and
# wren's ZeroMQ transport (tcp:// on the same dummy0 address) at 1 MiB
# messages (build/bin/wren-perf thr-recv/thr-send), and 64 B round trips of
# both; prints FIGURE rdma_vs_ib_write_bw and FIGURE rdma_vs_zmq_in_vm
# (throughput ratios: the CPU is emulated, only ratios mean anything).
#   tests/rdma/bench.sh [COUNT]   (messages per throughput run, default 200)
set -eu -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
[ -x "$BUILD/bin/wren-perf" ] || { echo "bench-rdma: $BUILD/bin/wren-perf is missing (make all)" >&2; exit 3; }
"$HERE/vm.sh" --timeout "${WR_VM_TIMEOUT:-300}" --add "$BUILD/bin/wren-perf" --add "$HERE/bench-vm.sh" \
    --run "sh $HERE/bench-vm.sh $BUILD/bin/wren-perf ${1:-200}"
grep '^FIGURE' "$BUILD/rdma-vm/console.log"
