#!/usr/bin/env bash
# A job with CURVE keys over tcp on 127.0.0.1: keygen for the coordinator, one
# shard and two workers, an allow-list built from keygen's output. Before the
# real nodes come, three intruders try the coordinator: a worker whose key is
# not on the allow-list (no welcome: exit 6), a worker without keys (the same)
# and a shard presenting a worker's key (refused: its key's role is worker,
# exit 2). Then the job must still form and end with status 0 and passing
# replica digest checks, the shard and the workers talking over CURVE with the
# keys the cluster map carries. Then the same keys run a mode=allreduce job:
# the workers' data endpoints are CURVE servers with their own keys, admit
# only the map's members, and the job ends with status 0 and agreeing digests.
source "$(dirname "$0")/lib/common.bash"

S=$BIN/wren-server
K=$T/keys
mkdir -p "$K" "$T/logs"
chmod 700 "$K"
"$S" keygen --dir "$K" coordinator >/dev/null 2>&1 || fail "keygen coordinator failed"
: >"$K/allow.txt"
for n in s0:shard w0:worker w1:worker; do
    "$S" keygen --dir "$K" --role "${n#*:}" "${n%:*}" >>"$K/allow.txt" 2>/dev/null || fail "keygen $n failed"
done
"$S" keygen --dir "$K" --role worker rogue >/dev/null 2>&1 || fail "keygen rogue failed"
[ "$(wc -l <"$K/allow.txt")" = 3 ] || fail "the allow-list should have 3 lines: $(cat "$K/allow.txt")"
[ "$(stat -c %a "$K/w0.key")" = 600 ] || fail "w0.key is not mode 600"

CADDR="tcp://127.0.0.1:$(free_port)"
CK=(--coordinator-key "$K/coordinator.pub")
"$S" coordinator --bind "$CADDR" --key "$K/coordinator.key" --allow "$K/allow.txt" \
    shards=1 workers=2 model=synthetic:100000 steps=120 digest_every=10 progress_every=0 \
    register_timeout=60 >"$T/logs/coordinator.log" 2>&1 &
COORD=$!
STARTED+=("$COORD")
for _ in $(seq 50); do grep -q 'listening on' "$T/logs/coordinator.log" && break; sleep 0.1; done
grep -q "listening on $CADDR" "$T/logs/coordinator.log" || fail "the coordinator is not listening on $CADDR"

# 1. A worker with a key that is not on the allow-list: the handshake fails,
#    so no welcome ever comes.
"$BIN/wren-worker" --coordinator "$CADDR" --key "$K/rogue.key" "${CK[@]}" --connect-timeout 3 \
    >"$T/logs/rogue.log" 2>&1
rc=$?
[ "$rc" = "$WR_EXIT_NO_COORDINATOR" ] || fail "the worker with a key off the list exited $rc (expected $WR_EXIT_NO_COORDINATOR)"
echo "ok   a worker with a key off the allow-list got no welcome (exit $rc)"

# 2. A worker without keys at a coordinator with keys: the same.
"$BIN/wren-worker" --coordinator "$CADDR" --connect-timeout 3 >"$T/logs/plain.log" 2>&1
rc=$?
[ "$rc" = "$WR_EXIT_NO_COORDINATOR" ] || fail "the worker without keys exited $rc (expected $WR_EXIT_NO_COORDINATOR)"
echo "ok   a worker without keys got no welcome (exit $rc)"

# 3. A worker's key presented by a shard: admitted by the transport (the
#    coordinator takes shard and worker keys), refused at REGISTER because the
#    key's role is worker.
"$S" shard --coordinator "$CADDR" --key "$K/w0.key" "${CK[@]}" --allow "$K/allow.txt" \
    --bind tcp://127.0.0.1:0 --connect-timeout 5 >"$T/logs/fake-shard.log" 2>&1
rc=$?
[ "$rc" = "$WR_EXIT_CONFIG" ] || fail "the shard with a worker's key exited $rc (expected $WR_EXIT_CONFIG)"
echo "ok   a shard with a worker's key was refused (exit $rc)"
kill -0 "$COORD" 2>/dev/null || fail "the coordinator stopped after the intruders"

# 4. The real nodes: the job forms and finishes.
"$S" shard --coordinator "$CADDR" --key "$K/s0.key" "${CK[@]}" --allow "$K/allow.txt" \
    --bind tcp://127.0.0.1:0 --connect-timeout 30 >"$T/logs/shard0.log" 2>&1 &
STARTED+=("$!")
for w in 0 1; do
    "$BIN/wren-worker" --coordinator "$CADDR" --key "$K/w$w.key" "${CK[@]}" --connect-timeout 30 \
        >"$T/logs/worker$w.log" 2>&1 &
    STARTED+=("$!")
done
await_coordinator "the job"
check_digests
grep -q 'CURVE keys: only the 3 keys of the allow-list' "$T/logs/coordinator.log" ||
    fail "the coordinator did not say it runs with keys"
grep -q 'connections refused: key not on the allow-list' "$T/logs/coordinator.log" ||
    fail "the coordinator did not count the refused key"
grep -q 'shard 0' "$T/logs/coordinator.log" || fail "the coordinator never named shard 0"
ps_digests=$DIGESTS_PASSED

# 5. mode=allreduce with the same keys: worker-to-worker data over CURVE.
mv "$T/logs/coordinator.log" "$T/logs/coordinator-ps.log"
CADDR="tcp://127.0.0.1:$(free_port)"
"$S" coordinator --bind "$CADDR" --key "$K/coordinator.key" --allow "$K/allow.txt" mode=allreduce \
    workers=2 model=synthetic:100000 steps=60 digest_every=10 progress_every=0 \
    register_timeout=60 >"$T/logs/coordinator.log" 2>&1 &
COORD=$!
STARTED+=("$COORD")
for _ in $(seq 50); do grep -q 'listening on' "$T/logs/coordinator.log" && break; sleep 0.1; done
for w in 0 1; do
    "$BIN/wren-worker" --coordinator "$CADDR" --key "$K/w$w.key" "${CK[@]}" --connect-timeout 30 \
        --group "node$w" >"$T/logs/ar-worker$w.log" 2>&1 &
    STARTED+=("$!")
done
await_coordinator "the all-reduce job"
check_digests
pass "a job with CURVE keys finished (exit 0, $ps_digests digest checks agreed); a key off the list, no key and a" \
    "worker key posing as a shard were refused; mode=allreduce with keys: $DIGESTS_PASSED digest checks agreed"
