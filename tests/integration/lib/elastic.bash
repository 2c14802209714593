# elastic.bash — helpers for the elastic-membership tests (16-19; sourced
# after common.bash). Each job runs under scripts/wren-local with its run
# directory in $RUN (pids, statuses), logs in $T/logs and summaries in
# $T/sum. The log lines the tests depend on are matched here only, in the
# functions marked WORDING, so a change of wording is one edit.

RUN=$T/run
JOB_PID=""

# Kills whatever the run directory still names (a test that failed half-way),
# then the usual clean-up.
cleanup_elastic() {
    local f pid
    [ -n "$JOB_PID" ] && kill -TERM "$JOB_PID" 2>/dev/null && sleep 1
    for f in "$RUN"/*.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        grep -qa 'wren-' "/proc/$pid/cmdline" 2>/dev/null && kill -CONT "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    done
    cleanup_test
}
trap cleanup_elastic EXIT

# start_job NAME args...: wren-local in the background (output in $T/NAME.out)
# with every process at debug level (all workers log their progress lines);
# waits for its run directory and sets JOB_PID.
start_job() {
    local name=$1
    shift
    mkdir -p "$T/logs" "$T/sum"
    TMPDIR=$T "$ROOT/scripts/wren-local" --run-dir "$RUN" --log-dir "$T/logs" --summary-dir "$T/sum" \
        --log-level debug "$@" >"$T/$name.out" 2>&1 &
    JOB_PID=$!
    STARTED+=("$JOB_PID")
    wait_for 30 "wren-local's run directory" test -f "$RUN/launcher.pid"
}

job_running() { kill -0 "$JOB_PID" 2>/dev/null; }

# wait_for SECONDS WHAT cmd...: polls cmd every 0.1 s until it succeeds; fails
# naming WHAT after SECONDS, or at once when wren-local ended first (then the
# job was too short for the event: raise its steps).
wait_for() {
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        "$@" && return 0
        if ! job_running; then
            "$@" && return 0
            wait "$JOB_PID"
            i=$?
            [ "$i" = "$WR_EXIT_OK" ] && fail "the job ended (status 0) before $what: too few steps?"
            fail "the job ended with status $i before $what"
        fi
        sleep 0.1
    done
    fail "no $what within $secs s"
}

# wait_job SECONDS: waits for wren-local to end; sets RC.
wait_job() {
    local i
    for ((i = 0; i < $1 * 10; i++)); do job_running || break; sleep 0.1; done
    job_running && fail "wren-local still running after $1 s"
    wait "$JOB_PID"
    # shellcheck disable=SC2034  # RC is read by the test that sourced this file
    RC=$?
}

pid_of() { cat "$RUN/$1.pid" 2>/dev/null; }      # pid_of NAME (coordinator, shard<s>, worker<i>)
status_of() { cat "$RUN/$1.status" 2>/dev/null; } # status_of NAME: its exit status, once ended

# WORDING (today's): worker_rank NAME -> the rank that worker NAME logged in
# "rank R (position P of N workers, epoch E), ..." (its first map).
worker_rank() { sed -nE 's/.*\[info\] rank ([0-9]+) \(position [0-9]+ of [0-9]+ workers.*/\1/p' "$T/logs/$1.log" | head -n 1; }

has_rank() { [ -n "$(worker_rank "$1")" ]; }  # has_rank NAME: NAME logged its rank

# worker_of_rank R -> the name (worker<i>) of the worker that logged rank R.
worker_of_rank() {
    local f
    for f in "$T"/logs/worker*.log; do
        [ "$(worker_rank "$(basename "$f" .log)")" = "$1" ] && basename "$f" .log && return 0
    done
    return 1
}

# WORDING (today's): last_step NAME -> the highest step t of NAME's progress
# lines "progress epoch E step t/N" (info at position 0, debug elsewhere), or 0.
last_step() {
    { sed -nE 's/.*progress epoch [0-9]+ step ([0-9]+)\/[0-9]+.*/\1/p' "$T/logs/$1.log"; echo 0; } | sort -n | tail -n 1
}
# reached NAME STEP: true when NAME logged progress at STEP or later.
reached() { [ "$(last_step "$1")" -ge "$2" ]; }

# WORDING (new, coordinator): epoch_line RANK [AFTER] -> "lineno:text" of the
# first coordinator line after line AFTER (default 0) that announces an epoch
# >= 2 and names worker RANK, e.g. "epoch 2: worker 1 lost ..." or "cluster
# map epoch 3 ... workers 0, 2, 3". Empty when there is none.
epoch_line() {
    local rank=$1 after=${2:-0}
    grep -nE '\bepoch ([2-9]|[1-9][0-9]+)\b' "$T/logs/coordinator.log" |
        grep -E "\\b(worker|rank)s? ([0-9]+(, | and ))*$rank\\b" |
        awk -F: -v a="$after" '$1 > a' | head -n 1
}
has_epoch_line() { [ -n "$(epoch_line "$@")" ]; }

# WORDING (today's, liveness): loss_line RANK -> a coordinator line saying
# worker RANK is dead / lost / silent.
loss_line() {
    grep -Ei "\\bworker $1\\b.*\\b(dead|died|lost|silent|gone)\\b" "$T/logs/coordinator.log" | head -n 1
}

# WORDING (new, worker): the worker's line when it leaves on SIGTERM
# ("leaving the job after step t (signal)") and when the coordinator told it
# it was removed (ERROR reason "removed from the job ...", logged by it).
leaving_line() { grep -E 'leaving the job after step [0-9]+' "$T/logs/$1.log" | head -n 1; }
removed_line() { grep -Ei 'removed from the job' "$T/logs/$1.log" | head -n 1; }
was_removed() { [ -n "$(removed_line "$1")" ]; }

# WORDING (new, shard): shard_completed FILE -> the N of the shard's end line
# "completed steps 1..N" (also accepted: "completed N steps", "N steps
# completed"), empty when there is none.
shard_completed() {
    sed -nE -e 's/.*completed steps 1\.\.([0-9]+).*/\1/p' -e 's/.*completed ([0-9]+) steps.*/\1/p' \
        -e 's/.*\b([0-9]+) steps completed.*/\1/p' "$1" | tail -n 1
}

# check_no_step_lost S TOTAL: every shard completed every step 1..TOTAL.
check_no_step_lost() {
    local s n
    for ((s = 0; s < $1; s++)); do
        n=$(shard_completed "$T/logs/shard$s.log")
        [ -n "$n" ] || fail "shard $s logged no 'completed steps 1..N' line"
        [ "$n" = "$2" ] || fail "shard $s completed steps 1..$n, not 1..$2: steps lost"
    done
}

# check_all_digests S TOTAL EVERY: the coordinator's end line shows every
# scheduled check (one per shard and multiple of EVERY) passed and none
# failed. A check completes only with the digest of every member of the
# epoch in force at its step, so this also says a joiner took part from its
# first step on. Sets DIGESTS_PASSED.
check_all_digests() {
    local want=$(($1 * ($2 / $3))) line
    check_digests
    [ "$DIGESTS_PASSED" -ge "$want" ] ||
        fail "only $DIGESTS_PASSED digest checks passed, $want scheduled ($1 shards x every $3 of $2 steps)"
    line=$(grep -Ei '\[(warn|error)\].*digest' "$T/logs/coordinator.log" | head -n 1)
    [ -z "$line" ] || fail "the coordinator warned about digests: $line"
}

# check_summary_steps NAME TOTAL: NAME's summary says it did all TOTAL steps.
check_summary_steps() {
    local i=${1#worker} steps
    [ -f "$T/sum/worker-$i.json" ] || fail "$1 wrote no summary"
    steps=$(json_get "$T/sum/worker-$i.json" steps)
    [ "$steps" = "$2" ] || fail "$1's summary: steps $steps, expected $2 (all of them)"
}

# check_no_leftovers: no process the run directory names is still running.
check_no_leftovers() {
    local f pid
    for f in "$RUN"/*.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        grep -qa 'wren-' "/proc/$pid/cmdline" 2>/dev/null && fail "$(basename "$f" .pid) (pid $pid) left running"
    done
    return 0
}
