#!/usr/bin/env bash
# An outsider cannot keep a hung node looking alive: a job over tcp (1 shard,
# 2 workers on 127.0.0.1, heartbeat_timeout 3 s) has a worker stopped
# (SIGSTOP) while an outside client on another address (127.0.0.2) sends
# HEARTBEATs as worker 0 and worker 1 every 100 ms (tests/tools/wren-flood
# --attack heartbeat). The coordinator accepts a node's heartbeats only from
# the address and key the node registered with, so it still declares the
# worker dead: status 5 (node lost) within heartbeat_timeout + register_timeout
# (the job waits that long for a replacement: min_workers = workers) + wren-local's
# 5 s for the others to exit + a few s,
# the forged heartbeats counted as refused. (Without the check the job would wait
# for its step_timeout of 60 s.)
source "$(dirname "$0")/lib/common.bash"

[ -x "$BIN/wren-flood" ] || fail "$BIN/wren-flood is missing (make -j2 build-all)"
mkdir -p "$T/logs"
TMPDIR=$T "$ROOT/scripts/wren-local" --transport tcp --log-dir "$T/logs" -S 1 -n 2 model=synthetic:100000 \
    steps=1000000 progress_every=200 heartbeat_interval=0.5 heartbeat_timeout=3 step_timeout=60 register_timeout=4 \
    >"$T/job.out" 2>&1 &
job=$!
STARTED+=("$job")
for _ in $(seq 300); do
    grep -q 'progress epoch' "$T/job.out" && break
    kill -0 "$job" 2>/dev/null || fail "wren-local ended before training"
    sleep 0.2
done
grep -q 'progress epoch' "$T/job.out" || fail "no progress within 60 s"
addr=$(sed -nE 's/.*listening on (tcp:[^ ]*).*/\1/p' "$T/logs/coordinator.log" | head -n 1)
[ -n "$addr" ] || fail "no address in the coordinator's log"
victim=$(pgrep -f -- "wren-worker --coordinator $addr( |$)" | head -n 1)
[ -n "$victim" ] || fail "cannot find a worker process"
STARTED+=("$victim")

for r in 0 1; do
    "$BIN/wren-flood" --target "tcp://127.0.0.2:0;${addr#tcp://}" --attack heartbeat --n "$r" --seconds 30 \
        >"$T/spoof$r.out" 2>&1 &
    STARTED+=("$!")
done
sleep 1  # the forged heartbeats flow before the worker stops
t0=$(date +%s.%N)
kill -STOP "$victim"
# wren-local then gives the hung worker 5 s to exit before it stops it.
for _ in $(seq 250); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
kill -0 "$job" 2>/dev/null && fail "the job still runs 25 s after a worker hung: forged heartbeats kept it alive"
wait "$job"
rc=$?
dt=$(python3 -c 'import sys, time; print("%.1f" % (time.time() - float(sys.argv[1])))' "$t0")
[ "$rc" = "$WR_EXIT_NODE_LOST" ] || fail "the job ended with status $rc (expected $WR_EXIT_NODE_LOST, a node died)"
grep -Eq '\[(error|warn)\].*worker [01].*(dead|silent|died)' "$T/logs/coordinator.log" ||
    fail "the coordinator does not name the hung worker as dead"
grep -q 'HEARTBEAT for worker [01] from another address or key' "$T/logs/coordinator.log" ||
    fail "the coordinator did not log the forged heartbeats as refused"
pass "forged heartbeats from 127.0.0.2 refused; the hung worker was declared dead after ${dt} s (status $rc)"
