#!/usr/bin/env bash
# A worker that dies in the middle of training stops the job with status 5
# (WR_EXIT_NODE_LOST):
#  - SIGKILL (its connections close): the coordinator notices at once;
#  - SIGSTOP (hung: connections stay open, heartbeats stop): the coordinator
#    declares it dead after heartbeat_timeout (3 s here).
# With the default min_workers (= workers) a lost worker leaves the job below
# min_workers: the coordinator waits register_timeout (5 s here) for a joiner
# that never comes, then stops the job with the lost node's status and
# message. Each time the coordinator names the dead worker, the surviving
# workers stop on the coordinator's SHUTDOWN (not on their own step_timeout of
# 120 s), and wren-local exits with that status and nothing left running.
source "$(dirname "$0")/lib/common.bash"

pat='\[(error|warn)\].*(dead|died|silent)'
for sig in KILL STOP; do
    L=$T/logs-$sig
    mkdir -p "$L"
    TMPDIR=$T "$ROOT/scripts/wren-local" --transport ipc --log-dir "$L" -S 2 -n 3 model=mlp batch=96 \
        steps=100000 progress_every=20 heartbeat_interval=0.5 heartbeat_timeout=3 step_timeout=120 \
        register_timeout=5 >"$T/$sig.out" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    for _ in $(seq 300); do
        grep -q 'progress epoch' "$T/$sig.out" && break
        kill -0 "$pid" 2>/dev/null || fail "wren-local ended before training ($sig)"
        sleep 0.2
    done
    grep -q 'progress epoch' "$T/$sig.out" || fail "no progress within 60 s ($sig)"
    # One of the cluster's workers: our ipc path and wren-worker on its command line.
    victim=$(pgrep -f -- "wren-worker --coordinator ipc://$T/" | head -n 1)
    [ -n "$victim" ] || fail "cannot find a worker process to stop ($sig)"
    STARTED+=("$victim")
    t0=$(date +%s)
    kill -"$sig" "$victim"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && fail "wren-local still running 30 s after SIG$sig of a worker"
    wait "$pid"
    rc=$?
    t1=$(date +%s)
    [ "$rc" = "$WR_EXIT_NODE_LOST" ] ||
        fail "SIG$sig: wren-local exited with $rc (expected $WR_EXIT_NODE_LOST, a node died)"
    grep -Eqi "$pat" "$L/coordinator.log" || fail "SIG$sig: the coordinator does not say (as an error) that a node died"
    grep -Ei "$pat" "$L/coordinator.log" | grep -Eq 'worker [0-9]' ||
        fail "SIG$sig: the coordinator's message does not name the worker"
    grep -q 'step_timeout' "$L/"worker*.log && fail "SIG$sig: a surviving worker waited for its step_timeout instead of the SHUTDOWN"
    left=$(pgrep -f -- "ipc://$T/" || true)
    [ -z "$left" ] || fail "SIG$sig: processes left running: $left"
    echo "  SIG$sig: status $rc after $((t1 - t0)) s: $(grep -Ei "$pat" "$L/coordinator.log" | head -n 1)"
done
pass "a killed or hung worker stops the job with status $WR_EXIT_NODE_LOST, named"
