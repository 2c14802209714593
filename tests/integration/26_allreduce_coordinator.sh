#!/usr/bin/env bash
# The coordinator in mode=allreduce (docs/ARCHITECTURE.md "mode=allreduce:
# the coordinator"), driven by tests/tools/wren_fake_worker over loopback tcp
# (its all-reduce path registers a wildcard data endpoint and a group, sends
# digests and leaves; no CHUNK is exchanged):
#  1. 2 groups x 2 workers, hierarchical: the job forms without shards, the
#     wildcard data addresses become 127.0.0.1, a shard that registers is
#     refused (it exits 2), the workers' digests are compared, status 0.
#  2. hierarchical with groups of 2 and 1: status 2 naming every group.
#  3. a worker that dies: status 5, "mode=allreduce cannot go on without it".
#  4. a replica whose digests differ: status 4.
source "$(dirname "$0")/lib/common.bash"
FAKE=$BIN/wren_fake_worker
[ -x "$FAKE" ] || fail "$FAKE is missing (make -j2 build-all)"
D=4096
JOBKEYS=(mode=allreduce "model=synthetic:$D" batch=120 steps=40 digest_every=10 register_timeout=20
    heartbeat_interval=0.2 heartbeat_timeout=5)

# start_coord NAME WORKERS overrides...: sets CA (address) and CP (pid).
start_coord() {
    local name=$1 nw=$2
    shift 2
    CA="tcp://127.0.0.1:$(free_port)"
    "$BIN/wren-server" coordinator --bind "$CA" "workers=$nw" "${JOBKEYS[@]}" "$@" \
        >"$T/$name.coord.err" 2>&1 &
    CP=$!
    STARTED+=("$CP")
}

# fake NAME GROUP args...: a fake worker in the background; its pid in FP.
fake() {
    local name=$1 group=$2
    shift 2
    "$FAKE" --coordinator "$CA" --d "$D" --nt 0 --host "h-$group" --group "$group" "$@" \
        >"$T/$name.err" 2>&1 &
    FP=$!
    STARTED+=("$FP")
}

# wait_pid PID -> its exit status in RC (fails the test after 60 s)
wait_pid() {
    local i
    for i in $(seq 600); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$1" 2>/dev/null && fail "process $1 still running after 60 s (iteration $i)"
    wait "$1"
    RC=$?
}

# ---- 1. 2 x 2 hierarchical: forms, refuses a shard, digests pass ----------------------
start_coord hier 4
"$BIN/wren-server" shard --coordinator "$CA" --bind tcp://127.0.0.1:0 --connect-timeout 10 \
    >"$T/hier.shard.err" 2>&1 &
SP=$!
STARTED+=("$SP")
wait_pid "$SP"
[ "$RC" = "$WR_EXIT_CONFIG" ] || fail "1: the shard exited with $RC, expected $WR_EXIT_CONFIG (refused)"
grep -q 'mode=allreduce runs without shards' "$T/hier.shard.err" ||
    fail "1: the shard was not told why it was refused"
pids=()
for g in node-b node-a node-b node-a; do
    fake "hier.w${#pids[@]}" "$g"
    pids+=("$FP")
done
wait_pid "$CP"
[ "$RC" = 0 ] || fail "1: the coordinator exited with $RC, expected 0"
for p in "${pids[@]}"; do
    wait_pid "$p"
    [ "$RC" = 0 ] || fail "1: a fake worker exited with $RC"
done
C=$T/hier.coord.err
grep -q 'job formed: mode=allreduce (hierarchical), 2 groups x 2 workers' "$C" || fail "1: no formation line"
[ "$(grep -cE 'worker [0-9]: group node-(a \(0\)|b \(1\)), host h-node-., data tcp://127\.0\.0\.1:[0-9]+' "$C")" = 4 ] ||
    fail "1: the coordinator does not list 4 workers with their group and a 127.0.0.1 data address"
grep -q 'digest checks: 4 passed, 0 failed' "$C" || fail "1: expected 4 digest checks to pass"
[ "$(grep -cE 'member rank [0-3]: group (0, host h-node-a|1, host h-node-b), data tcp://127\.0\.0\.1:[0-9]+' \
    "$T/hier.w0.err")" = 4 ] || fail "1: a worker's map does not show 4 members with group index and data address"
echo "  1: $(grep -o 'job formed.*' "$C" | head -n 1)"

# ---- 2. unequal groups with hierarchical ---------------------------------------------
start_coord uneq 3
for g in a a b; do fake "uneq.$g$RANDOM" "$g"; done
wait_pid "$CP"
[ "$RC" = "$WR_EXIT_CONFIG" ] || fail "2: the coordinator exited with $RC, expected $WR_EXIT_CONFIG"
grep -q 'groups of unequal size: a 2, b 1; start the same number of workers' "$T/uneq.coord.err" ||
    fail "2: the refusal does not list the groups"
echo "  2: $(grep -o 'mode=allreduce, hierarchical: groups.*' "$T/uneq.coord.err" | head -n 1)"

# ---- 3. a worker dies ------------------------------------------------------------------
start_coord die 2 allreduce_algo=flat steps=100000
fake die.w0 n
fake die.w1 n --die-at 20
wait_pid "$CP"
[ "$RC" = "$WR_EXIT_NODE_LOST" ] || fail "3: the coordinator exited with $RC, expected $WR_EXIT_NODE_LOST"
grep -qE 'worker [01] on host h-n is dead.*mode=allreduce cannot go on without it' "$T/die.coord.err" ||
    fail "3: the coordinator does not name the dead worker"
echo "  3: $(grep -o 'worker [01] on host h-n is dead.*' "$T/die.coord.err" | head -n 1)"

# ---- 4. a replica differs --------------------------------------------------------------
start_coord corrupt 2 allreduce_algo=flat
fake corrupt.w0 n
fake corrupt.w1 n --corrupt-at 15
wait_pid "$CP"
[ "$RC" = "$WR_EXIT_DIVERGED" ] || fail "4: the coordinator exited with $RC, expected $WR_EXIT_DIVERGED"
grep -q 'replica digest mismatch at step 20, shard 0: reference' "$T/corrupt.coord.err" ||
    fail "4: no mismatch report for step 20"

pass "mode=allreduce: forms without shards (wildcards replaced), refuses shards and unequal groups, stops on a lost worker (5) and differing replicas (4)"
