#!/usr/bin/env bash
# Across simulated hosts (scripts/netsim: network namespaces, 1gbit links),
# the addresses an operator gets by default, and the ones that cannot work:
# 1. The coordinator on h0, a shard and two workers on each of h1 and h2, the
#    shards bound to tcp://*:PORT with no --advertise: the coordinator puts in
#    the address it sees each shard connect from; the Birder job completes and
#    the digests agree.
# 2. A shard on h1 advertising a loopback address is refused (exit 2) with a
#    message naming its address, the address it came from and --advertise.
# 3. A shard on h2 advertising the address a shard on h1 registered with is
#    refused (exit 2) naming the address and the shard that has it.
# 4. A shard advertising an address no host has: the workers cannot reach
#    it, and the job stops at once (well before step_timeout) with status 2 in
#    the coordinator and the workers, naming the shard and its address.
# Needs root: skipped (with a line saying so) otherwise.
source "$(dirname "$0")/lib/common.bash"

source "$(dirname "$0")/lib/netsim.bash"
netsim_test_init wt29x
mkdir -p "$T/logs"

# in_host I NAME cmd...: runs cmd in host I in the background, output in $T/logs/NAME.log.
in_host() {
    local h=$1 name=$2
    shift 2
    ip netns exec "$N-h$h" "$@" >"$T/logs/$name.log" 2>&1 &
    STARTED+=($!)
}
# wait_pid PID SECONDS: its exit status, or 124 (and killed) after SECONDS.
wait_pid() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$1" 2>/dev/null || { wait "$1"; return; }
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    return 124
}
# wait_log FILE TEXT SECONDS
wait_log() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
COORD=tcp://198.18.0.1:7000
coordinator() {  # coordinator NAME key=value...: on h0; sets CPID
    in_host 0 "$1" "$BIN/wren-server" coordinator --bind "$COORD" --allow-insecure allow_insecure=on "${@:2}"
    CPID=$!
    wait_log "$T/logs/$1.log" "listening on" 5 || fail "coordinator $1 did not start"
}
shard() {  # shard HOST NAME options...: sets SPID
    in_host "$1" "$2" "$BIN/wren-server" shard --coordinator "$COORD" --allow-insecure --host "h$1" "${@:3}"
    SPID=$!
}
worker() {  # worker HOST NAME options...
    in_host "$1" "$2" "$BIN/wren-worker" --coordinator "$COORD" --host "h$1" --allow-insecure "${@:3}"
}

# ---- 1. the default advertised address across hosts -----------------------------------
timeout 90 "$NETSIM" run --hosts 3 --rate 1gbit --name "$N" --coordinator-host 0 --shards 1,2 \
    --workers 1,1,2,2 --default-advertise --out "$T/job" --timeout 60 codec=birder \
    model=synthetic:200000 steps=12 digest_every=4 eval=off >"$T/job.out" 2>&1
rc=$?
[ "$rc" = "$WR_EXIT_OK" ] || fail "the job with default advertised addresses exited with $rc: $(cat "$T/job/status" 2>/dev/null)"
grep -q 'digest checks: [1-9][0-9]* passed, 0 failed' "$T/job/logs/coordinator.log" ||
    fail "default advertise: no agreeing digest checks"
grep -q 'at tcp://198.18.0.2:7100, range' "$T/job/logs/shard0.log" ||
    fail "shard 0 (h1) did not get 198.18.0.2:7100 from the coordinator: $(grep -m1 'range' "$T/job/logs/shard0.log")"
grep -q 'at tcp://198.18.0.3:7101, range' "$T/job/logs/shard1.log" ||
    fail "shard 1 (h2) did not get 198.18.0.3:7101 from the coordinator: $(grep -m1 'range' "$T/job/logs/shard1.log")"

"$NETSIM" up --hosts 4 --rate 1gbit --name "$N" >"$T/up.out" 2>&1 || fail "netsim up: $(cat "$T/up.out")"

# ---- 2. a loopback advertise from another host ------------------------------------------
coordinator c2 shards=2 workers=1 register_timeout=20
shard 1 s_loop --bind tcp://*:7100 --advertise tcp://127.0.0.1:7100
wait_pid "$SPID" 10
rc=$?
[ "$rc" = "$WR_EXIT_CONFIG" ] || fail "a shard advertising loopback from h1 exited with $rc (expected $WR_EXIT_CONFIG)"
for want in "advertises tcp://127.0.0.1:7100, loopback" "from 198.18.0.2" "--advertise"; do
    grep -qF -- "$want" "$T/logs/s_loop.log" || fail "loopback refusal does not say '$want': $(cat "$T/logs/s_loop.log")"
done
grep -qF "advertises tcp://127.0.0.1:7100" "$T/logs/c2.log" || fail "the coordinator did not log the loopback refusal"

# ---- 3. a duplicate address from another host --------------------------------------------
shard 1 s_ok --bind tcp://*:7100
wait_log "$T/logs/c2.log" "shard 0 registered from 198.18.0.2" 10 || fail "the healthy shard on h1 did not register"
shard 2 s_dup --bind tcp://*:7100 --advertise tcp://198.18.0.2:7100
wait_pid "$SPID" 10
rc=$?
[ "$rc" = "$WR_EXIT_CONFIG" ] || fail "a shard claiming h1's address from h2 exited with $rc (expected $WR_EXIT_CONFIG)"
grep -qF "shard address tcp://198.18.0.2:7100 is taken by shard 0" "$T/logs/s_dup.log" ||
    fail "duplicate refusal does not name the address and the shard: $(cat "$T/logs/s_dup.log")"
kill -TERM "$CPID" 2>/dev/null
wait_pid "$CPID" 10 >/dev/null

# ---- 4. an advertised address nobody can reach -----------------------------------------
coordinator c4 shards=1 workers=2 codec=birder model=synthetic:100000 steps=5 step_timeout=120 eval=off
shard 1 s_far --bind tcp://*:7100 --advertise tcp://198.18.0.99:7100
worker 2 w0 --connect-timeout 3
worker 3 w1 --connect-timeout 3
t0=$(date +%s)
wait_pid "$CPID" 60
rc=$?
took=$(($(date +%s) - t0))
[ "$rc" = "$WR_EXIT_CONFIG" ] || fail "unreachable shard: the coordinator exited with $rc (expected $WR_EXIT_CONFIG)"
[ "$took" -lt 60 ] || fail "unreachable shard: the job took $took s to stop"
grep -qF "cannot reach shard 0 at tcp://198.18.0.99:7100" "$T/logs/c4.log" ||
    fail "the coordinator does not name the unreachable shard: $(tail -n 5 "$T/logs/c4.log")"
for w in w0 w1; do
    wpid=${STARTED[-1]}
    [ "$w" = w0 ] && wpid=${STARTED[-2]}
    wait_pid "$wpid" 15
    rc=$?
    [ "$rc" = "$WR_EXIT_CONFIG" ] || fail "unreachable shard: worker $w exited with $rc (expected $WR_EXIT_CONFIG)"
done
"$NETSIM" down --name "$N" >/dev/null 2>&1
pass "default advertise across 3 hosts: job ok, shards at their hosts' addresses; loopback and duplicate addresses refused; an unreachable shard stops the job in ${took} s (status 2)"
