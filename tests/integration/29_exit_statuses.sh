#!/usr/bin/env bash
# One exit status per cause, the same in every process (issue 13 item 3):
#  1. mode=ps: a shard killed (-9) and not replaced within register_timeout:
#     the coordinator, the other shard and every worker exit 5
#     (WR_EXIT_NODE_LOST), each logging the coordinator's reason; wren-local 5.
#  2. ps_node_aggregate (2 groups of 2): the same for a killed shard.
#  3. mode=allreduce (3 workers): a worker killed: the coordinator and the
#     other workers exit 5.
#     In 2 and 3 the coordinator is held (SIGSTOP) for 1.5 s across the
#     kill: a node leader or worker whose send to the dead node fails waits
#     for the coordinator's word (status 5), it does not exit 1 on its own.
#  4. The coordinator killed (-9) and never restarted: the shard and the
#     worker exit 6 (WR_EXIT_NO_COORDINATOR) once register_timeout +
#     connect_timeout have passed, each saying so.
#  5. SIGTERM to a worker that is not training yet: a log line naming the
#     signal, exit 143 (128 + SIGTERM).
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/elastic.bash"

SYN=(model=synthetic:200000 steps=10000000 progress_every=200 eval=off register_timeout=3
    heartbeat_interval=0.5 heartbeat_timeout=3)

# expect_all STATUS WHY NAME...: each NAME exited STATUS and its log has the
# coordinator's reason (WHY, a fixed string).
expect_all() {
    local want=$1 why=$2 n
    shift 2
    for n in "$@"; do
        [ "$(status_of "$n")" = "$want" ] || fail "$n exited $(status_of "$n") (expected $want)"
        grep -qF -- "$why" "$T/logs/$n.log" || fail "$n's log does not give the coordinator's reason '$why'"
    done
}

# kill_and_wait CASE VICTIM [held]: SIGKILL to the run's VICTIM once
# training runs, then the job's end; wren-local must exit 5 too. With
# "held", the coordinator is stopped (SIGSTOP) across the kill and 1.5 s
# after (less than heartbeat_timeout): the workers see the loss first (a send
# to the dead node fails, or its data never comes) and must wait for the
# coordinator's word, not fail on their own: a race that a fast coordinator
# usually wins.
kill_and_wait() {
    local case=$1 victim=$2 held=${3:-}
    wait_for 60 "progress in $case" grep -q 'progress epoch' "$T/logs/worker0.log"
    [ -z "$held" ] || kill -STOP "$(pid_of coordinator)"
    kill -KILL "$(pid_of "$victim")"
    if [ -n "$held" ]; then
        sleep 1.5
        kill -CONT "$(pid_of coordinator)"
    fi
    wait_job 60
    [ "$RC" = "$WR_EXIT_NODE_LOST" ] || fail "$case: wren-local exited $RC (expected $WR_EXIT_NODE_LOST)"
    [ "$(status_of "$victim")" = 137 ] || fail "$case: $victim exited $(status_of "$victim"), not SIGKILL's 137"
    check_no_leftovers
}

# 1. mode=ps
start_job ps -S 2 -n 2 "${SYN[@]}"
kill_and_wait "mode=ps" shard1
expect_all "$WR_EXIT_NODE_LOST" "no shard took its place" coordinator shard0 worker0 worker1
echo "  mode=ps, shard1 killed: coordinator, shard0, worker0, worker1 exit $WR_EXIT_NODE_LOST"

# 2. ps_node_aggregate
start_job agg -S 2 -n 4 --groups 2 ps_node_aggregate=on "${SYN[@]}"
kill_and_wait "ps_node_aggregate" shard0 held
expect_all "$WR_EXIT_NODE_LOST" "is dead" coordinator shard1 worker0 worker1 worker2 worker3
echo "  ps_node_aggregate, shard0 killed: coordinator, shard1, 4 workers exit $WR_EXIT_NODE_LOST"

# 3. mode=allreduce
start_job ar -n 3 mode=allreduce "${SYN[@]}"
kill_and_wait "mode=allreduce" worker2 held
expect_all "$WR_EXIT_NODE_LOST" "cannot go on without it" coordinator worker0 worker1
echo "  mode=allreduce, worker2 killed: coordinator, worker0, worker1 exit $WR_EXIT_NODE_LOST"

# 4. The coordinator lost for good (by hand: wren-local stops a job whose
# coordinator ended). The bound is register_timeout + --connect-timeout.
D=$T/lost
mkdir -p "$D"
C=tcp://127.0.0.1:$(free_port)
"$BIN/wren-server" coordinator --bind "$C" shards=1 workers=1 "${SYN[@]}" 2>"$D/coord.log" &
COORD=$!
STARTED+=("$COORD")
"$BIN/wren-server" shard --coordinator "$C" --bind tcp://127.0.0.1:0 --connect-timeout 2 2>"$D/s0.log" &
SHARD=$!
STARTED+=("$SHARD")
"$BIN/wren-worker" --coordinator "$C" --connect-timeout 2 2>"$D/w0.log" &
WORKER=$!
STARTED+=("$WORKER")
for _ in $(seq 300); do grep -q 'progress epoch' "$D/w0.log" && break; sleep 0.1; done
grep -q 'progress epoch' "$D/w0.log" || fail "lost coordinator: no progress within 30 s"
kill -KILL "$COORD"
wait "$COORD" 2>/dev/null
for who in SHARD WORKER; do
    for _ in $(seq 300); do kill -0 "${!who}" 2>/dev/null || break; sleep 0.1; done
    kill -0 "${!who}" 2>/dev/null && fail "lost coordinator: the $who still runs 30 s later"
    wait "${!who}"
    rc=$?
    [ "$rc" = "$WR_EXIT_NO_COORDINATOR" ] || fail "lost coordinator: the $who exited $rc (expected 6)"
done
for f in s0 w0; do
    grep -q 'did not take this .* back within' "$D/$f.log" || fail "lost coordinator: $f.log does not say why"
done
echo "  coordinator killed: the shard and the worker exit $WR_EXIT_NO_COORDINATOR"

# 5. SIGTERM before training: an unreachable coordinator, so it waits.
"$BIN/wren-worker" --coordinator "tcp://127.0.0.1:$(free_port)" --connect-timeout 20 2>"$D/early.log" &
pid=$!
STARTED+=("$pid")
sleep 0.5
kill -TERM "$pid"
wait "$pid"
rc=$?
[ "$rc" = 143 ] || fail "SIGTERM before training: exit $rc (expected 143)"
grep -q 'signal 15 (SIGTERM): not training yet' "$D/early.log" ||
    fail "SIGTERM before training: no log line naming the signal: $(cat "$D/early.log")"
echo "  SIGTERM before training: exit 143, '$(grep -o 'signal 15.*' "$D/early.log")'"
pass "every process exits with the coordinator's status; a lost coordinator is 6; signals are logged"
