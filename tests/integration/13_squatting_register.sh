#!/usr/bin/env bash
# Registration against outsiders (docs/ARCHITECTURE.md "Registration"), over
# tcp on loopback; the outsider connects from 127.0.0.2 (loopback too on
# Linux) with tests/tools/wren_fake_worker --source:
#  1. expect_hosts = 127.0.0.1: the outsider is refused with no config and no
#     job id, logged with its address; the real job completes (status 0).
#  2. no expect_hosts, 3 workers: an outsider reporting a wrong model size
#     first is refused as the odd one out (majority); the job completes.
#  3. no expect_hosts, 2 workers: outsider and one real worker disagree with
#     no majority: the job stops with status 2 naming the outsider's address.
#  4. expect_hosts naming a host that does not resolve: config error (2).
#  5. ipc: a peer is refused unless expect_hosts lists "localhost".
source "$(dirname "$0")/lib/common.bash"
FAKE=$BIN/wren_fake_worker
[ -x "$FAKE" ] || fail "$FAKE is missing (make -j2 build-all)"
JOB=918273645  # distinctive: it must not appear in what the outsider gets
D=20000
JOBKEYS=("job_id=$JOB" "model=synthetic:$D" batch=120 steps=20 digest_every=5 register_timeout=20)

# start_coord NAME SHARDS WORKERS overrides...: sets CA (address) and CP (pid).
start_coord() {
    local name=$1 ns=$2 nw=$3
    shift 3
    CA="tcp://127.0.0.1:$(free_port)"
    "$BIN/wren-server" coordinator --bind "$CA" --log-level debug "shards=$ns" "workers=$nw" \
        "${JOBKEYS[@]}" "$@" >"$T/$name.coord.err" 2>&1 &
    CP=$!
    STARTED+=("$CP")
}

start_shard() {  # start_shard NAME
    "$BIN/wren-server" shard --coordinator "$CA" --bind tcp://127.0.0.1:0 --connect-timeout 10 \
        >"$T/$1.shard.err" 2>&1 &
    STARTED+=("$!")
}

# wait_pid PID -> its exit status in RC (fails the test after 60 s)
wait_pid() {
    local i
    for i in $(seq 600); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$1" 2>/dev/null && fail "process $1 still running after 60 s (iteration $i)"
    wait "$1"
    RC=$?
}

# wait_log FILE TEXT: until TEXT is in FILE (fails after 20 s)
wait_log() {
    local _
    for _ in $(seq 200); do
        grep -qF -- "$2" "$1" 2>/dev/null && return 0
        kill -0 "$CP" 2>/dev/null || fail "the coordinator ended before '$2' was in $1"
        sleep 0.1
    done
    fail "no '$2' in $1 after 20 s"
}

# ---- 1. expect_hosts refuses the outsider ----------------------------------------------
start_coord hosts 1 2 expect_hosts=127.0.0.1
"$FAKE" --coordinator "$CA" --source 127.0.0.2 --d "$D" --host intruder >"$T/hosts.outsider.err" 2>&1
ORC=$?
[ "$ORC" = "$WR_EXIT_FAILURE" ] || fail "1: the outsider exited $ORC, expected $WR_EXIT_FAILURE (refused)"
grep -q "coordinator refused registration: ERROR [0-9]*, job id field 0:" "$T/hosts.outsider.err" ||
    fail "1: the outsider's ERROR is not a refusal with job id field 0"
grep -q "$JOB" "$T/hosts.outsider.err" && fail "1: the outsider learned the job id $JOB"
grep -q "model=synthetic\|job formed\|CLUSTER_MAP" "$T/hosts.outsider.err" && fail "1: the outsider got the job config"
grep -q "refused a worker registering from 127.0.0.2 (host intruder)" "$T/hosts.coord.err" ||
    fail "1: the coordinator did not log the refusal with the outsider's address"
start_shard hosts
"$FAKE" --coordinator "$CA" --d "$D" --host a >"$T/hosts.w0.err" 2>&1 &
STARTED+=("$!")
"$FAKE" --coordinator "$CA" --d "$D" --host b >"$T/hosts.w1.err" 2>&1 &
STARTED+=("$!")
wait_pid "$CP"
[ "$RC" = "$WR_EXIT_OK" ] || fail "1: the job with expect_hosts exited $RC, expected 0"
grep -q "digest checks: [1-9][0-9]* passed, 0 failed" "$T/hosts.coord.err" || fail "1: no passing digest checks"
grep -q "worker 0 registered from 127.0.0.1" "$T/hosts.coord.err" || fail "1: worker 0 not logged with its address"

# ---- 2. a squatter with a wrong model size loses to the majority -------------------------
start_coord major 1 3
"$FAKE" --coordinator "$CA" --source 127.0.0.2 --d 5 --host squatter >"$T/major.squatter.err" 2>&1 &
SQ=$!
STARTED+=("$SQ")
wait_log "$T/major.coord.err" "worker from 127.0.0.2 (host squatter) reports d = 5"
start_shard major
for h in a b c; do
    "$FAKE" --coordinator "$CA" --d "$D" --host "$h" >"$T/major.w$h.err" 2>&1 &
    STARTED+=("$!")
done
wait_pid "$CP"
[ "$RC" = "$WR_EXIT_OK" ] || fail "2: the job with a squatter exited $RC, expected 0 (majority)"
grep -q "digest checks: [1-9][0-9]* passed, 0 failed" "$T/major.coord.err" || fail "2: no passing digest checks"
grep -q "refused worker (127.0.0.2, host squatter): its model differs from the majority's; reports: .*(127.0.0.2, host squatter) reports 5 parameters.*(127.0.0.1, host [abc]) reports $D parameters" \
    "$T/major.coord.err" || fail "2: the refusal does not name the squatter by address"
wait_pid "$SQ"
[ "$RC" = "$WR_EXIT_CONFIG" ] || fail "2: the squatter exited $RC, expected $WR_EXIT_CONFIG (refused, config)"
grep -q "worker [0-2] registered from 127.0.0.2" "$T/major.coord.err" && fail "2: the squatter got a rank"

# ---- 3. no majority: the job stops naming the outsider ------------------------------------
start_coord split 1 2
"$FAKE" --coordinator "$CA" --source 127.0.0.2 --d 5 --host squatter >"$T/split.squatter.err" 2>&1 &
STARTED+=("$!")
wait_log "$T/split.coord.err" "worker from 127.0.0.2 (host squatter) reports d = 5"
"$FAKE" --coordinator "$CA" --d "$D" --host a >"$T/split.w0.err" 2>&1 &
STARTED+=("$!")
wait_pid "$CP"
[ "$RC" = "$WR_EXIT_CONFIG" ] || fail "3: a 1-1 split exited $RC, expected $WR_EXIT_CONFIG"
grep -q "no majority of the 2 workers.*(127.0.0.2, host squatter) reports 5 parameters" "$T/split.coord.err" ||
    fail "3: the stop does not name the squatter's address"
grep -q "(127.0.0.1, host a) reports $D parameters" "$T/split.coord.err" ||
    fail "3: the stop does not name the real worker's address"

# ---- 4. a name that does not resolve is a config error ------------------------------------
start_coord badname 1 1 expect_hosts=127.0.0.1,no-such-host.invalid
wait_pid "$CP"
[ "$RC" = "$WR_EXIT_CONFIG" ] || fail "4: unresolvable expect_hosts exited $RC, expected $WR_EXIT_CONFIG"
grep -q "'no-such-host.invalid' does not resolve" "$T/badname.coord.err" || fail "4: the error does not name the host"

# ---- 5. ipc peers: accepted only when "localhost" is listed ---------------------------------
CA="ipc://$T/coord.ipc"
"$BIN/wren-server" coordinator --bind "$CA" shards=1 workers=1 "${JOBKEYS[@]}" expect_hosts=127.0.0.1 \
    >"$T/ipc.coord.err" 2>&1 &
CP=$!
STARTED+=("$CP")
"$FAKE" --coordinator "$CA" --d "$D" --host local >"$T/ipc.outsider.err" 2>&1
ORC=$?
[ "$ORC" = "$WR_EXIT_FAILURE" ] || fail "5: an ipc peer without 'localhost' listed exited $ORC, expected refusal"
grep -q "refused a worker registering from localhost:[0-9]*:[0-9]*:[0-9]* (host local)" "$T/ipc.coord.err" ||
    fail "5: the ipc refusal is not logged with the peer's ipc address"
kill "$CP"
wait "$CP" 2>/dev/null
CA="ipc://$T/coord2.ipc"
"$BIN/wren-server" coordinator --bind "$CA" shards=1 workers=1 "${JOBKEYS[@]}" expect_hosts=localhost \
    >"$T/ipc2.coord.err" 2>&1 &
CP=$!
STARTED+=("$CP")
"$BIN/wren-server" shard --coordinator "$CA" --bind "ipc://$T/s0.ipc" --connect-timeout 10 >"$T/ipc2.shard.err" 2>&1 &
STARTED+=("$!")
"$FAKE" --coordinator "$CA" --d "$D" --host local >"$T/ipc2.w0.err" 2>&1 &
STARTED+=("$!")
wait_pid "$CP"
[ "$RC" = "$WR_EXIT_OK" ] || fail "5: the ipc job with expect_hosts = localhost exited $RC, expected 0"

pass "outsider refused by expect_hosts without job id or config; squatter refused by the majority; no majority stops naming it; bad host name is a config error; ipc only with localhost"
