#!/usr/bin/env bash
# Resume with real workers (Birder + HFP8, Fashion-MNIST mlp): a job killed
# (kill -9, every process) after its step-200 checkpoints and started again
# with resume = on reaches, at its last step, the same shard digests as an
# uninterrupted run with the same seed. The workers' own state (Birder m and b,
# the loss scaler) comes from their rank's checkpoint; Birder's randomness is
# keyed by (seed, rank, step) and the data order by step, so this is exact.
source "$(dirname "$0")/lib/common.bash"

STEPS=400
# job DIR [key=value ...]: coordinator, 2 shards, 2 workers in the background
job() {
    local d=$1
    shift
    mkdir -p "$d"
    "$BIN/wren-server" coordinator --bind "ipc://$d/c" shards=2 workers=2 model=mlp steps=$STEPS batch=64 \
        digest_every=50 eval=off progress_every=100 "$@" >"$d/coord.log" 2>&1 &
    COORD=$!
    STARTED+=("$COORD")
    local s w
    for s in 0 1; do
        "$BIN/wren-server" shard --coordinator "ipc://$d/c" --bind "ipc://$d/s$s" --log-level debug \
            >"$d/s$s.log" 2>&1 &
        STARTED+=("$!")
    done
    for w in 0 1; do
        "$BIN/wren-worker" --coordinator "ipc://$d/c" >"$d/w$w.log" 2>&1 &
        STARTED+=("$!")
    done
}

job "$T/ref"
finish_job "$T/ref"
ref=$(shard_digests "$T/ref")
[ -n "$ref" ] || fail "no shard digests in the uninterrupted run"

CK=$T/ck
job "$T/killed" checkpoint_every=100 checkpoint_dir="$CK"
for _ in $(seq 1200); do
    n=$(find "$CK" -name '*-000000000200.ckpt' 2>/dev/null | wc -l)
    [ "$n" = 4 ] && break  # 2 shards, 2 workers
    sleep 0.05
done
pkill -KILL -f "ipc://$T/killed/" || true
wait 2>/dev/null
[ "$(find "$CK" -name '*-000000000200.ckpt' | wc -l)" = 4 ] ||
    fail "no step-200 checkpoints of every node in $CK: $(ls "$CK" 2>&1)"

job "$T/resumed" checkpoint_every=100 checkpoint_dir="$CK" resume=on
finish_job "$T/resumed"
from=$(grep -o "the newest checkpoint every shard holds is step [0-9]*" "$T/resumed/coord.log" | awk '{print $NF}')
if [ -z "$from" ] || [ "$from" -lt 200 ]; then
    fail "the resumed job did not go on from step >= 200: $(grep resume "$T/resumed/coord.log")"
fi
grep -q "digest checks: [1-9][0-9]* passed, 0 failed" "$T/resumed/coord.log" || fail "the resumed job's digests did not all pass"
got=$(shard_digests "$T/resumed")
[ "$got" = "$ref" ] || fail "resumed (from step $from) digests '$got' differ from the uninterrupted run's '$ref'"
pass "killed after step 200, resumed from step $from: the final digests equal the uninterrupted run's"
