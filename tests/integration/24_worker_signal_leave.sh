#!/usr/bin/env bash
# SIGTERM to a training worker (here a standalone one, no cluster needed)
# lets it finish the step in progress, write its summary and leave: exit 0,
# the info line "leaving the job after step t (signal)", the summary's steps
# equal to t. A second signal during that wind-down ends it at once with
# 128 + the signal (SIGTERM and SIGINT sent together: two different signals
# are both delivered, whichever comes second ends the process).
source "$(dirname "$0")/lib/common.bash"

# start_worker NAME D: a standalone worker on synthetic:D in the background,
# waiting until it trains (its first progress line); sets WPID.
start_worker() {
    "$BIN/wren-worker" --standalone "model=synthetic:$2" steps=1000000 progress_every=20 eval=off \
        --summary "$T/$1.json" >"$T/$1.out" 2>&1 &
    WPID=$!
    STARTED+=("$WPID")
    for _ in $(seq 300); do
        grep -q 'progress epoch' "$T/$1.out" && return 0
        kill -0 "$WPID" 2>/dev/null || fail "worker $1 ended before training"
        sleep 0.1
    done
    fail "worker $1: no progress line within 30 s"
}

start_worker one 100000
kill -TERM "$WPID"
wait "$WPID"
rc=$?
[ "$rc" = "$WR_EXIT_OK" ] || fail "SIGTERM: exit $rc (expected $WR_EXIT_OK)"
line=$(grep -o 'leaving the job after step [0-9]* (signal)' "$T/one.out") ||
    fail "SIGTERM: no 'leaving the job after step t (signal)' line"
t=${line#leaving the job after step }
t=${t%% *}
steps=$(json_get "$T/one.json" steps)
[ "$steps" = "$t" ] || fail "summary steps $steps, the leaving line says step $t"

start_worker two 10000000  # steps of ~15 ms: both signals land in one
kill -TERM "$WPID"
kill -INT "$WPID"
wait "$WPID"
rc=$?
[ "$rc" = 130 ] || [ "$rc" = 143 ] || fail "SIGTERM + SIGINT: exit $rc (expected 130 or 143)"
grep -q 'leaving the job' "$T/two.out" && fail "SIGTERM + SIGINT: the worker left normally"
pass "SIGTERM: left after step $t with exit 0 and its summary; a second signal: exit $rc at once"
