#!/usr/bin/env bash
# Memory under abuse (docs/ARCHITECTURE.md "Hardening", reply floods): an
# outside party opens 1,000 tcp connections (tests/tools/wren-flood.c), sends
# bad messages on each as fast as the server takes them (undecodable headers,
# REGISTER for another job, DIGEST from nobody) and never reads a reply.
#  1. the coordinator alone: its VmRSS before (idle), during (peak, sampled
#     and VmHWM) and after the connections closed;
#  2. a job (1 shard, 2 fake workers) forms and finishes with exit 0 and
#     passing digests while 1,000 such connections flood the coordinator;
#  3. a shard of a running job: the same flood on its data socket; the job
#     goes on stepping.
# Bounds: peak - idle < PEAK_MIB (see below); after <= idle * 1.10 + 2 MiB
# (the slack: glibc keeps the top of the heap and fragments pinned by
# allocations libzmq keeps for the life of the socket; measured < 1 MiB).
# PEAK_MIB is 64: each open connection to a ZeroMQ 4.3.4 ROUTER costs about
# 65 KiB while it sends (libzmq's pipe chunks and decoder buffers), so the
# servers refuse connections past max_connections (default 512 for these
# small jobs) at the handshake.
# Prints FIGURE lines with the measured values.
source "$(dirname "$0")/lib/common.bash"

CONNS=${FLOOD_CONNS:-1000}
PEAK_MIB=64
for b in wren-flood wren_fake_worker; do
    [ -x "$BIN/$b" ] || fail "$BIN/$b is missing (build the tools first: make -j2 build-all)"
done

rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kib() { awk '/^VmHWM:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k / 1024}'; }

# flood_and_measure NAME PID TARGET SECONDS: floods TARGET, samples PID's RSS;
# sets PEAK (KiB, the larger of the samples and VmHWM).
flood_and_measure() {
    local name=$1 pid=$2 target=$3 secs=$4 fp r
    "$BIN/wren-flood" --target "$target" --conns "$CONNS" --seconds "$secs" >"$T/flood-$name.out" 2>&1 &
    fp=$!
    STARTED+=("$fp")
    PEAK=0
    while kill -0 "$fp" 2>/dev/null; do
        r=$(rss_kib "$pid")
        [ "$r" -gt "$PEAK" ] && PEAK=$r
        sleep 0.2
    done
    wait "$fp" || fail "wren-flood against the $name failed: $(cat "$T/flood-$name.out")"
    r=$(hwm_kib "$pid")
    [ "$r" -gt "$PEAK" ] && PEAK=$r
    grep -q "flood: $CONNS connections" "$T/flood-$name.out" || fail "wren-flood did not report its connections"
}

# settle NAME PID IDLE: waits up to 15 s for PID's RSS to be back within the
# bound; sets AFTER (KiB).
settle() {
    for _ in $(seq 60); do
        AFTER=$(rss_kib "$2")
        awk -v a="$AFTER" -v i="$3" 'BEGIN{exit !(a <= i * 1.10 + 2048)}' && return
        sleep 0.25
    done
}

# check NAME IDLE PEAK AFTER: the bounds, and the FIGURE lines.
check() {
    echo "FIGURE $1_rss_idle_mib $(mib "$2") MiB"
    echo "FIGURE $1_rss_flood_peak_mib $(mib "$3") MiB"
    echo "FIGURE $1_rss_flood_above_idle_mib $(mib $(($3 - $2))) MiB"
    echo "FIGURE $1_rss_after_flood_mib $(mib "$4") MiB"
    [ $(($3 - $2)) -lt $((PEAK_MIB * 1024)) ] ||
        fail "$1: RSS rose $(mib $(($3 - $2))) MiB under the flood (bound $PEAK_MIB MiB)"
    awk -v a="$4" -v i="$2" 'BEGIN{exit !(a <= i * 1.10 + 2048)}' ||
        fail "$1: RSS $(mib "$4") MiB after the flood, idle was $(mib "$2") MiB"
}

mkdir -p "$T/logs"
start_coord() { # start_coord LOG overrides... -> COORD, CADDR
    CADDR="tcp://127.0.0.1:$(free_port)"
    "$BIN/wren-server" coordinator --bind "$CADDR" shards=1 workers=2 model=synthetic:100000 \
        register_timeout=60 "${@:2}" >"$1" 2>&1 &
    COORD=$!
    STARTED+=("$COORD")
    sleep 1
    kill -0 "$COORD" 2>/dev/null || fail "the coordinator did not start"
}
start_nodes() { # start_nodes TAG: a shard and two fake workers for $CADDR
    "$BIN/wren-server" shard --coordinator "$CADDR" --bind tcp://127.0.0.1:0 --connect-timeout 30 \
        >"$T/logs/$1-shard.log" 2>&1 &
    SHARD=$!
    STARTED+=("$SHARD")
    local w
    for w in 0 1; do
        "$BIN/wren_fake_worker" --coordinator "$CADDR" --d 100000 >"$T/logs/$1-w$w.log" 2>&1 &
        STARTED+=("$!")
    done
}

# 1. The coordinator alone.
start_coord "$T/logs/c1.log" digest_every=5 steps=100
idle=$(rss_kib "$COORD")
flood_and_measure coordinator "$COORD" "$CADDR" 5
settle coordinator "$COORD" "$idle"
check coord "$idle" "$PEAK" "$AFTER"
grep -q "connections to the coordinator open" "$T/logs/c1.log" || fail "the coordinator did not warn of the flood"
[ "$(grep -c 'further refusals of it' "$T/logs/c1.log")" = 1 ] || fail "expected one warn line for withheld replies"

# 2. A job forms and finishes while the coordinator is flooded (same
# coordinator): the flood comes first, from another address (127.0.0.2), and
# holds every connection it can; the per-address cap (docs/SECURITY.md) keeps
# room for the job's nodes, which then connect from 127.0.0.1.
cport=${CADDR##*:}
"$BIN/wren-flood" --target "tcp://127.0.0.2:0;127.0.0.1:$cport" --conns "$CONNS" --seconds 120 \
    >"$T/flood-job.out" 2>&1 &
fp=$!
STARTED+=("$fp")
sleep 2
start_nodes job
for _ in $(seq 400); do kill -0 "$COORD" 2>/dev/null || break; sleep 0.1; done
kill -0 "$COORD" 2>/dev/null && fail "the job did not finish within 40 s under the flood"
wait "$COORD"
rc=$?
kill -TERM "$fp" 2>/dev/null
[ "$rc" = "$WR_EXIT_OK" ] || fail "the job under the flood ended with status $rc"
grep -q "digest checks: [1-9][0-9]* passed, 0 failed" "$T/logs/c1.log" || fail "no passing digest checks under the flood"
grep -q "refused a connection over its connection cap" "$T/logs/c1.log" ||
    fail "the coordinator did not report refusing the flood's connections over the per-address cap"
echo "ok   a job formed and finished (exit 0, digests passed) while $CONNS connections from 127.0.0.2, started first, flooded the coordinator"

# 3. A shard of a running job.
start_coord "$T/logs/c2.log" digest_every=0 steps=100000000
start_nodes run
for _ in $(seq 150); do grep -q "listening on" "$T/logs/run-shard.log" && grep -q "job formed" "$T/logs/c2.log" && break; sleep 0.2; done
saddr=$(grep -o "listening on tcp://[0-9.:]*" "$T/logs/run-shard.log" | awk '{print $3}')
[ -n "$saddr" ] || fail "the shard did not report its data address"
sleep 1
idle=$(rss_kib "$SHARD")
flood_and_measure shard "$SHARD" "$saddr" 5
settle shard "$SHARD" "$idle"
check shard "$idle" "$PEAK" "$AFTER"
for p in "$COORD" "$SHARD"; do
    kill -0 "$p" 2>/dev/null || fail "the job stopped under the shard flood"
done
kill -TERM "$COORD"
wait "$COORD"
pass "$CONNS flooding connections: coordinator and shard memory bounded and returned, a job formed and finished"
