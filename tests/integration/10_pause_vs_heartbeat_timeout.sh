#!/usr/bin/env bash
# A node paused (SIGSTOP: a VM pause, swapping, a debugger) is judged by the
# job's heartbeat_timeout, not by the transport's own connection heartbeat.
# A job over tcp (1 shard, 2 workers, synthetic model) with
# heartbeat_interval = 0.5 and heartbeat_timeout = 8:
#  1. the shard is stopped for 4 s (half the timeout) and continued, 2 s later
#     the coordinator is stopped for 4 s and continued: the job finishes with
#     status 0 and the replica digests agree;
#  2. the shard is stopped for good (twice the timeout, ended by the job's
#     stop): the job stops with status 5 (node lost) naming shard 0, after
#     about heartbeat_timeout (bounds: more than timeout - 1 s, so the
#     transport's former 3 s connection timeout would fail here, and less
#     than timeout + 3 s).
source "$(dirname "$0")/lib/common.bash"

HB_INTERVAL=0.5
HB_TIMEOUT=8
SHORT_PAUSE=4
# digest_every: the coordinator keeps at most 8 digest checks open, and the
# DIGESTs of the steps done while it is paused reach it all at once.
JOB=(-S 1 -n 2 --transport tcp model=synthetic:200000 progress_every=500 digest_every=1000
    "heartbeat_interval=$HB_INTERVAL" "heartbeat_timeout=$HB_TIMEOUT" step_timeout=40)

# start_job NAME STEPS [key=value ...]: wren-local in the background (logs in $T/NAME), sets
# JOB_PID; waits until training runs and sets COORD_PID and SHARD_PID.
start_job() {
    local name=$1 steps=$2 addr
    shift 2
    mkdir -p "$T/$name"
    TMPDIR=$T "$ROOT/scripts/wren-local" --log-dir "$T/$name" "${JOB[@]}" steps="$steps" "$@" >"$T/$name.out" 2>&1 &
    JOB_PID=$!
    STARTED+=("$JOB_PID")
    for _ in $(seq 300); do
        grep -q 'progress epoch' "$T/$name.out" && break
        kill -0 "$JOB_PID" 2>/dev/null || fail "$name: wren-local ended before training"
        sleep 0.2
    done
    grep -q 'progress epoch' "$T/$name.out" || fail "$name: no progress within 60 s"
    addr=$(sed -nE 's/.*listening on (tcp:[^ ]*).*/\1/p' "$T/$name/coordinator.log" | head -n 1)
    [ -n "$addr" ] || fail "$name: no address in the coordinator's log"
    COORD_PID=$(pgrep -f -- "wren-server coordinator --bind $addr( |$)" | head -n 1)
    SHARD_PID=$(pgrep -f -- "wren-server shard --coordinator $addr( |$)" | head -n 1)
    [ -n "$COORD_PID" ] || fail "$name: cannot find the coordinator process"
    [ -n "$SHARD_PID" ] || fail "$name: cannot find the shard process"
    STARTED+=("$COORD_PID" "$SHARD_PID")
}

# pause PID SECONDS: SIGSTOP, wait, SIGCONT.
pause() {
    kill -STOP "$1" || fail "cannot stop pid $1"
    sleep "$2"
    kill -CONT "$1"
}

# wait_job SECONDS: waits for wren-local to end; sets RC.
wait_job() {
    for _ in $(seq $(($1 * 10))); do kill -0 "$JOB_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$JOB_PID" 2>/dev/null && fail "wren-local still running after $1 s"
    wait "$JOB_PID"
    RC=$?
}

# secs_of_day HH:MM:SS.mmm -> seconds since midnight
secs_of_day() { echo "$1" | awk -F: '{ printf "%.3f", $1 * 3600 + $2 * 60 + $3 }'; }

# ---- 1. pauses shorter than heartbeat_timeout ----------------------------------------
start_job short 8000
pause "$SHARD_PID" "$SHORT_PAUSE"
if ! kill -0 "$JOB_PID" 2>/dev/null; then
    wait_job 5
    fail "a ${SHORT_PAUSE} s pause of the shard (heartbeat_timeout $HB_TIMEOUT s) ended the job with status $RC"
fi
sleep 2  # the shard's heartbeats reach the coordinator again: the two silences do not add up
pause "$COORD_PID" "$SHORT_PAUSE"
kill -0 "$JOB_PID" 2>/dev/null || fail "the job ended before both pauses were over (raise steps)"
wait_job 60
[ "$RC" = "$WR_EXIT_OK" ] ||
    fail "a ${SHORT_PAUSE} s pause (heartbeat_timeout $HB_TIMEOUT s) ended the job with status $RC (expected $WR_EXIT_OK)"
line=$(grep -ho 'digest checks: [0-9]* passed, [0-9]* failed' "$T/short/coordinator.log" | tail -n 1)
[[ $line =~ ^digest\ checks:\ [1-9][0-9]*\ passed,\ 0\ failed$ ]] || fail "digests: '$line'"
echo "  shard and coordinator each paused ${SHORT_PAUSE} s: status 0, $line"

# ---- 2. a pause longer than heartbeat_timeout ----------------------------------------
# (a lost shard may be replaced: the job waits register_timeout for one, then stops)
start_job long 1000000 register_timeout=3
t_stop=$(date +%H:%M:%S.%N)
kill -STOP "$SHARD_PID" || fail "cannot stop the shard"
wait_job $((HB_TIMEOUT * 2 + 3))
[ "$RC" = "$WR_EXIT_NODE_LOST" ] || fail "the stopped shard ended the job with status $RC (expected $WR_EXIT_NODE_LOST)"
pat='\[(error|warn)\].*shard 0.*(dead|died|silent)'
dead=$(grep -Ei "$pat" "$T/long/coordinator.log" | head -n 1)
[ -n "$dead" ] || fail "the coordinator does not say that shard 0 died"
t_dead=$(echo "$dead" | cut -d' ' -f1)
dt=$(python3 -c 'import sys; d = float(sys.argv[2]) - float(sys.argv[1]); print("%.2f" % (d + 86400 if d < 0 else d))' \
    "$(secs_of_day "${t_stop:0:12}")" "$(secs_of_day "$t_dead")")
echo "  shard stopped: status $RC, detected after $dt s (heartbeat_timeout $HB_TIMEOUT, interval $HB_INTERVAL): $dead"
fge "$dt" $((HB_TIMEOUT - 1)) || fail "detected after $dt s: before heartbeat_timeout - 1 s (the connection's own timeout won)"
fge $((HB_TIMEOUT + 3)) "$dt" || fail "detected after $dt s: later than heartbeat_timeout + 3 s"
left=$(pgrep -f -- "wren-(server|worker) .*$(sed -nE 's/.*listening on (tcp:[^ ]*).*/\1/p' "$T/long/coordinator.log" | head -n 1)( |$)" || true)
[ -z "$left" ] || fail "processes left running: $left"
pass "a ${SHORT_PAUSE} s pause keeps the job; a longer one is detected after $dt s (heartbeat_timeout $HB_TIMEOUT s)"
