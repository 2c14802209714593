#!/usr/bin/env bash
# check.sh — `make test-rdma-vm`: the Soft-RoCE VM harness checked both ways.
#   1. tests/rdma/vm.sh (the verbs test: rxe0 listed and active,
#      ibv_rc_pingpong and rping between two processes) must pass
#   2. vm.sh --run 'exit 7' must exit 7: a failing test inside the VM fails
#      on the host with its own code (the harness can fail)
# Exit status 0 when both hold. BUILD as for vm.sh.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if ! "$HERE/vm.sh"; then
    echo "test-rdma-vm: FAILED: the verbs test in the VM did not pass" >&2
    exit 1
fi
"$HERE/vm.sh" --run 'echo "failing on purpose"; exit 7'
rc=$?
if [ "$rc" -ne 7 ]; then
    echo "test-rdma-vm: FAILED: --run 'exit 7' gave status $rc, not 7" >&2
    exit 1
fi
echo "test-rdma-vm: passed (verbs test passed, a failing command failed with its code)"
