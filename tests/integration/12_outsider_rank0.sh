#!/usr/bin/env bash
# An outsider against a running job's shard (docs/PROTOCOL.md, "Rank
# credentials"): a job (coordinator, 1 shard on a known tcp port, 2 real
# workers, synthetic model, 60 steps, digests every 10) runs twice, once
# alone and once while tests/tools/wren-flood.c attacks the shard's port:
# PARAMS of NaNs as rank 0 from before the shard is up (to beat the real rank
# 0), then PUSH as rank 0 for the step guesses 1..80, round after round,
# each with a random token. The attacked job must end with status 0, its
# digest checks must pass, the shard's master copy must end with the same
# digest as the clean run's, the attacker must get refusals only (none
# accepted, none naming the job or a step), and the shard log must show them.
source "$(dirname "$0")/lib/common.bash"

[ -x "$BIN/wren-flood" ] || fail "$BIN/wren-flood is missing (build the tools first: make -j2 build-all)"
D=1000000
JOB=(shards=1 workers=2 "model=synthetic:$D" codec=birder broadcast=1bit steps=60 batch=64
    digest_every=10 progress_every=0 register_timeout=30 step_timeout=20)
mkdir -p "$T/logs"

# wait_exit PID SECONDS: waits for PID to end; sets EXIT (its status).
wait_exit() {
    for _ in $(seq $(($2 * 10))); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$1" 2>/dev/null && fail "process $1 did not end within $2 s"
    wait "$1"
    EXIT=$?
}

# run_job NAME ATTACK(0|1): one job; sets DIGEST (the shard's final master
# copy digest).
run_job() {
    local name=$1 attack=$2 caddr sport coord shard w pe pp
    caddr="tcp://127.0.0.1:$(free_port)"
    sport=$(free_port)
    "$BIN/wren-server" coordinator --bind "$caddr" "${JOB[@]}" >"$T/logs/$name-coordinator.log" 2>&1 &
    coord=$!
    STARTED+=("$coord")
    "$BIN/wren-server" shard --coordinator "$caddr" --bind "tcp://127.0.0.1:$sport" --connect-timeout 30 \
        >"$T/logs/$name-shard.log" 2>&1 &
    shard=$!
    STARTED+=("$shard")
    if [ "$attack" = 1 ]; then
        "$BIN/wren-flood" --target "tcp://127.0.0.1:$sport" --attack params-early --n "$D" --seconds 8 \
            >"$T/$name-params-early.out" 2>&1 &
        pe=$!
        STARTED+=("$pe")
        "$BIN/wren-flood" --target "tcp://127.0.0.1:$sport" --attack push-rank0 --n "$D" --steps 80 \
            --seconds 8 >"$T/$name-push-rank0.out" 2>&1 &
        pp=$!
        STARTED+=("$pp")
        sleep 1  # the attackers' messages wait in their queues before the workers start
    fi
    for w in 0 1; do
        "$BIN/wren-worker" --coordinator "$caddr" --host "w$w" >"$T/logs/$name-w$w.log" 2>&1 &
        STARTED+=("$!")
    done
    wait_exit "$coord" 60
    [ "$EXIT" = "$WR_EXIT_OK" ] || fail "$name: the job ended with status $EXIT (expected $WR_EXIT_OK)"
    wait_exit "$shard" 20
    [ "$EXIT" = "$WR_EXIT_OK" ] || fail "$name: the shard ended with status $EXIT"
    grep -q "digest checks: [1-9][0-9]* passed, 0 failed" "$T/logs/$name-coordinator.log" ||
        fail "$name: no passing digest checks"
    grep -q "range \[0, $D)" "$T/logs/$name-shard.log" || fail "$name: the shard's range is not [0, $D)"
    DIGEST=$(grep -o 'master copy digest [0-9a-f]*' "$T/logs/$name-shard.log" | awk '{print $4}')
    [ -n "$DIGEST" ] || fail "$name: the shard logged no final digest"
    if [ "$attack" = 1 ]; then
        wait_exit "$pe" 20
        wait_exit "$pp" 20
    fi
}

# check_attack MODE KIND: the attacker's tally and the shard's log lines.
check_attack() {
    local out=$T/attacked-$1.out line
    line=$(grep "^attack $1: [0-9]* sent" "$out") || fail "wren-flood --attack $1 printed no tally"
    echo "$line"
    grep -q "attack $1: [1-9][0-9]* sent, [1-9][0-9]* refusals, 0 accepted, 0 leaking" "$out" ||
        fail "attack $1: expected refusals only, none accepted or leaking ($line)"
    grep -q "first refusal: not authorized for rank 0" "$out" || fail "attack $1: unexpected refusal text"
    grep -q "refused $2 claiming rank 0 from 127.0.0.1" "$T/logs/attacked-shard.log" ||
        fail "the shard log shows no refused $2 claiming rank 0"
}

run_job clean 0
clean=$DIGEST
run_job attacked 1
[ "$DIGEST" = "$clean" ] || fail "the attacked job's master copy digest $DIGEST differs from the clean run's $clean"
check_attack params-early PARAMS
check_attack push-rank0 PUSH
n=$(grep -o 'messages refused ([0-9]* unauthenticated)' "$T/logs/attacked-shard.log" | grep -o '[0-9]*' | tail -n 1)
[ "${n:-0}" -ge 2 ] || fail "the shard counted ${n:-0} unauthenticated messages"
grep -q "not authorized" "$T/logs/attacked-w0.log" "$T/logs/attacked-w1.log" &&
    fail "a real worker was refused"
echo "FIGURE outsider_refused_at_shard $n messages"
pass "status 0, digest $DIGEST as without the attack, $n outsider messages refused at the shard"
