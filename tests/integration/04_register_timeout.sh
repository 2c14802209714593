#!/usr/bin/env bash
# A coordinator that never sees its last worker (workers=3, only 2 started)
# gives up after register_timeout with status 3 (WR_EXIT_REGISTER_TIMEOUT) and a message naming what is
# missing (the role and the counts); wren-local exits with that status.
source "$(dirname "$0")/lib/common.bash"

t0=$(date +%s)
run_local run -S 1 -n 3 --start-workers 2 model=mlp batch=96 steps=10 register_timeout=4
t1=$(date +%s)
[ "$RC" = "$WR_EXIT_REGISTER_TIMEOUT" ] ||
    fail "wren-local exited with $RC (expected $WR_EXIT_REGISTER_TIMEOUT, registration timeout)"
grep -i 'missing' "$T/logs/coordinator.log" | grep -qi 'worker' ||
    fail "the coordinator's log does not say a worker is missing"
grep -i 'missing' "$T/logs/coordinator.log" | grep -q '3' ||
    fail "the coordinator's message does not give the expected count (3 workers)"
[ $((t1 - t0)) -lt 40 ] || fail "took $((t1 - t0)) s for a 4 s registration timeout"
msg=$(grep -i 'missing' "$T/logs/coordinator.log" | head -n 1)
pass "status $RC after $((t1 - t0)) s: $msg"
