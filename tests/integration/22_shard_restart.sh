#!/usr/bin/env bash
# A shard killed (kill -9) mid-job and started again: it takes the lost one's
# index, rebuilds its range from the workers' replicas (Birder: every worker
# holds a bit-identical copy; the replicas of the newest step must agree), the
# workers that missed its last broadcast take it from the rebuilt shard, the
# others push their step again, and the job ends with exactly the digests of
# an uninterrupted run: no update lost. Protocol-only workers
# (tests/tools/wren_fake_worker) make the steps fast and the gradients a
# function of x alone. With the fp32 codec (optimizer state only on the shard)
# the loss stops the job with status 5 and says why.
source "$(dirname "$0")/lib/common.bash"

# job DIR codec [key=value ...]: coordinator, 2 shards (pids in DIR/s*.pid), 3 fake workers
job() {
    local d=$1 codec=$2
    shift 2
    mkdir -p "$d"
    "$BIN/wren-server" coordinator --bind "ipc://$d/c" shards=2 workers=3 model=synthetic:100000 \
        codec="$codec" steps=3000 digest_every=50 heartbeat_interval=0.2 heartbeat_timeout=1 \
        register_timeout=20 "$@" >"$d/coord.log" 2>&1 &
    COORD=$!
    STARTED+=("$COORD")
    local s w
    for s in 0 1; do
        "$BIN/wren-server" shard --coordinator "ipc://$d/c" --bind "ipc://$d/s$s" >"$d/s$s.log" 2>&1 &
        echo $! >"$d/s$s.pid"
        STARTED+=("$!")
    done
    for w in 0 1 2; do
        "$BIN/wren_fake_worker" --coordinator "ipc://$d/c" --d 100000 >"$d/w$w.log" 2>&1 &
        STARTED+=("$!")
    done
}

# kill_shard1 DIR: kill -9 the shard bound at s1 once the job ran a while.
kill_shard1() {
    local d=$1
    for _ in $(seq 200); do grep -q "job formed" "$d/coord.log" && break; sleep 0.05; done
    sleep 1
    kill -KILL "$(cat "$d/s1.pid")"
}

job "$T/ref" birder
wait "$COORD" || fail "the uninterrupted run failed: $(tail -n 3 "$T/ref/coord.log")"
wait
ref=$(shard_digests "$T/ref")

job "$T/kill" birder
kill_shard1 "$T/kill"
for _ in $(seq 100); do grep -q "waiting up to 20 s .* for a shard to take its place" "$T/kill/coord.log" && break; sleep 0.05; done
grep -q "for a shard to take its place" "$T/kill/coord.log" || fail "the coordinator did not wait for a new shard"
"$BIN/wren-server" shard --coordinator "ipc://$T/kill/c" --bind "ipc://$T/kill/s1" >"$T/kill/s1-new.log" 2>&1 &
STARTED+=("$!")
rc=0
wait "$COORD" || rc=$?
wait 2>/dev/null
[ "$rc" = "$WR_EXIT_OK" ] ||
    fail "coordinator exited with $rc after the shard restart: $(grep -E "\[(error|warn)\]" "$T/kill/coord.log" | tail -n 8)"
grep -q "replaced after" "$T/kill/coord.log" || fail "no replacement in the coordinator's log"
line=$(grep -o "rebuilt at step [0-9]* from 3 replicas ([0-9]* of that step, identical" "$T/kill/s1-new.log") ||
    fail "the new shard did not rebuild from the 3 workers' replicas: $(tail -n 3 "$T/kill/s1-new.log")"
grep -q "completed steps 1..3000 of 3000" "$T/kill/s1-new.log" || fail "the new shard did not complete every step"
grep -q "digest checks: [1-9][0-9]* passed, 0 failed" "$T/kill/coord.log" || fail "digest checks did not all pass"
got=$(grep -ho "master copy digest [0-9a-f]*" "$T/kill/s0.log" "$T/kill/s1-new.log" | sort | tr '\n' ' ')
[ "$got" = "$ref" ] || fail "digests after the restart '$got' differ from the uninterrupted run's '$ref' (an update was lost)"

job "$T/fp32" fp32
kill_shard1 "$T/fp32"
rc=0
wait "$COORD" || rc=$?
wait 2>/dev/null
[ "$rc" = "$WR_EXIT_NODE_LOST" ] || fail "fp32: coordinator exited with $rc, expected $WR_EXIT_NODE_LOST"
grep -q "cannot be replaced: the fp32 codec's optimizer state was on it" "$T/fp32/coord.log" ||
    fail "fp32: the stop does not say why the shard cannot be replaced"
pass "a killed shard replaced: $line; final digests equal the uninterrupted run's; fp32: status 5, explained"
