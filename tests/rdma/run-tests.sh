#!/usr/bin/env bash
# run-tests.sh — `make test-rdma`: the RDMA transport tested for real on
# Soft-RoCE, in ONE boot of the VM (tests/rdma/vm.sh):
#   1. build/tests/test_transport_rdma (cmocka): every device test must run
#      and pass (none skipped: WR_RDMA_ADDR is set in the VM)
#   2. tests/rdma/cluster.sh ps: coordinator on tcp, 2 shards bound to
#      rdma://10.0.0.1, 2 workers, Birder, digest checks agree
#   3. tests/rdma/cluster.sh allreduce: the workers' data endpoints on rdma://
# Exit status 0 when all passed, else vm.sh's (the failing step's code).
# BUILD as for vm.sh; the binaries must be built (make all).
set -eu -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
for f in tests/test_transport_rdma bin/wren-server bin/wren-worker; do
    [ -x "$BUILD/$f" ] || { echo "test-rdma: $BUILD/$f is missing (make all; RDMA on?)" >&2; exit 3; }
done
t0=$(date +%s)
# Inside: cmocka prints SKIPPED for a device test that did not run; that is a failure here.
cmd="export WREN_RDMA_GID_INDEX=\$WR_RDMA_GID_INDEX
$BUILD/tests/test_transport_rdma >/tmp/unit.log 2>&1; rc=\$?; cat /tmp/unit.log
[ \$rc -eq 0 ] || { echo 'test-rdma: FAILED: test_transport_rdma'; exit 10; }
if grep 'SKIPPED \]' /tmp/unit.log | grep -v test_no_device | grep -q 'test_'; then
    echo 'test-rdma: FAILED: device tests were skipped'; exit 11
fi
echo \"test-rdma: unit passed (\$(grep -c '^\[       OK \]' /tmp/unit.log) tests)\"
sh $HERE/cluster.sh $BUILD/bin ps 30 curve || exit 12
sh $HERE/cluster.sh $BUILD/bin allreduce 30 || exit 13
exit 0"
"$HERE/vm.sh" --timeout "${WR_VM_TIMEOUT:-300}" --add "$BUILD/tests/test_transport_rdma" \
    --add "$BUILD/bin/wren-server" --add "$BUILD/bin/wren-worker" --add "$HERE/cluster.sh" --run "$cmd"
echo "test-rdma: passed in $(($(date +%s) - t0)) s (unit tests, a ps job and an all-reduce job over rdma://)"
