#!/usr/bin/env bash
# rdma:// on a machine without an RDMA device: a shard bound to rdma:// and an
# all-reduce worker with --data-bind rdma:// exit at once (well before any
# timeout) with a message that says there is no device, what to load, and
# names tcp://HOST:PORT as the alternative. (With a device, or in a build
# without the RDMA transport, this test has nothing to check: SKIP. The
# device paths run in the Soft-RoCE VM: make test-rdma.)
source "$(dirname "$0")/lib/common.bash"

devs=$(find /sys/class/infiniband -mindepth 1 -maxdepth 1 -printf '%f ' 2>/dev/null)
if [ -n "$devs" ]; then
    echo "SKIP $TEST_NAME: this machine has an RDMA device ($devs)"
    exit 0
fi
P=$(free_port)
C=$(free_port)
timeout 20 "$BIN/wren-server" shard --coordinator "tcp://127.0.0.1:$C" --bind "rdma://127.0.0.1:$P" \
    >"$T/shard.out" 2>&1
rc=$?
if grep -q "this build has no RDMA transport" "$T/shard.out"; then
    echo "SKIP $TEST_NAME: built without the RDMA transport (RDMA=0)"
    exit 0
fi
[ "$rc" != 124 ] || fail "the shard did not exit within 20 s on rdma:// without a device"
[ "$rc" != "$WR_EXIT_OK" ] || fail "the shard exited 0 on rdma:// without a device"
grep -q "rdma://127.0.0.1:$P: no RDMA device" "$T/shard.out" ||
    fail "the shard's message does not say 'no RDMA device': $(cat "$T/shard.out")"
grep -q "use tcp://127.0.0.1:$P instead" "$T/shard.out" ||
    fail "the shard's message does not name tcp://127.0.0.1:$P: $(cat "$T/shard.out")"

# A worker's all-reduce data endpoint (bound once the job has formed): the same message.
mkdir -p "$T/logs"
"$BIN/wren-server" coordinator --bind "tcp://127.0.0.1:$C" mode=allreduce workers=1 model=synthetic:1000 \
    steps=2 register_timeout=15 >"$T/logs/coordinator.log" 2>&1 &
STARTED+=("$!")
Q=$(free_port)
timeout 30 "$BIN/wren-worker" --coordinator "tcp://127.0.0.1:$C" --data-bind "rdma://127.0.0.1:$Q" \
    >"$T/worker.out" 2>&1
rc=$?
[ "$rc" != 124 ] || fail "the worker did not exit within 30 s on --data-bind rdma:// without a device"
[ "$rc" != "$WR_EXIT_OK" ] || fail "the worker exited 0 on --data-bind rdma:// without a device"
grep -q "use tcp://127.0.0.1:$Q instead" "$T/worker.out" ||
    fail "the worker's message does not name tcp://127.0.0.1:$Q: $(cat "$T/worker.out")"
pass "rdma:// without a device: the shard and the worker (status $rc) stop at once naming tcp://"
