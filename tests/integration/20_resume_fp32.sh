#!/usr/bin/env bash
# Checkpoints and resume on the server side (fp32 codec: the shards hold the
# parameters and Adam's state; protocol-only workers, tests/tools/wren_fake_worker):
#  1. a job killed (kill -9, every process) after its step-1000 checkpoint and
#     started again with resume = on ends with the same shard digests as an
#     uninterrupted run;
#  2. with shard 0's newest checkpoint corrupted (one byte), shard 0 refuses it
#     naming the file, every shard goes back to step 500, and the digests are
#     again those of the uninterrupted run.
source "$(dirname "$0")/lib/common.bash"

STEPS=3000
# job DIR [key=value ...]: coordinator, 2 shards, 2 fake workers in the background
job() {
    local d=$1
    shift
    mkdir -p "$d"
    "$BIN/wren-server" coordinator --bind "ipc://$d/c" shards=2 workers=2 model=synthetic:50000 codec=fp32 \
        steps=$STEPS digest_every=100 "$@" >"$d/coord.log" 2>&1 &
    COORD=$!
    STARTED+=("$COORD")
    local s w
    for s in 0 1; do
        "$BIN/wren-server" shard --coordinator "ipc://$d/c" --bind "ipc://$d/s$s" --log-level debug \
            >"$d/s$s.log" 2>&1 &
        STARTED+=("$!")
    done
    for w in 0 1; do
        "$BIN/wren_fake_worker" --coordinator "ipc://$d/c" --d 50000 >"$d/w$w.log" 2>&1 &
        STARTED+=("$!")
    done
}

job "$T/ref"
finish_job "$T/ref"
ref=$(shard_digests "$T/ref")
[ -n "$ref" ] || fail "no shard digests in the uninterrupted run"

# kill -9 everything once the step-1000 checkpoints are written
CK=$T/ck
job "$T/killed" checkpoint_every=500 checkpoint_dir="$CK"
for _ in $(seq 600); do
    [ "$(cat "$T"/killed/s*.log 2>/dev/null | grep -c 'checkpoint of step 1000 written')" = 2 ] && break
    sleep 0.05
done
pkill -KILL -f "ipc://$T/killed/" || true
wait 2>/dev/null
if [ ! -f "$CK/shard0-000000001000.ckpt" ] || [ ! -f "$CK/shard1-000000001000.ckpt" ]; then
    fail "no step-1000 checkpoints in $CK: $(ls "$CK" 2>&1)"
fi
cp -r "$CK" "$T/ck-kept"

job "$T/resumed" checkpoint_every=500 checkpoint_dir="$CK" resume=on
finish_job "$T/resumed"
grep -q "newest checkpoint every shard holds is step 1000" "$T/resumed/coord.log" ||
    fail "the resumed job did not go on from step 1000: $(grep resume "$T/resumed/coord.log")"
got=$(shard_digests "$T/resumed")
[ "$got" = "$ref" ] || fail "resumed digests '$got' differ from the uninterrupted run's '$ref'"

# a corrupt newest checkpoint: refused by name, the one before is used
rm -rf "$CK"
cp -r "$T/ck-kept" "$CK"
printf '\x55' | dd of="$CK/shard0-000000001000.ckpt" bs=1 seek=5000 conv=notrunc 2>/dev/null
job "$T/corrupt" checkpoint_every=500 checkpoint_dir="$CK" resume=on
finish_job "$T/corrupt"
grep -q "checkpoint $CK/shard0-000000001000.ckpt: .*mismatch (file corrupt): using the previous one" \
    "$T"/corrupt/s*.log || fail "shard 0 did not refuse its corrupt checkpoint by name"
grep -q "newest checkpoint every shard holds is step 500" "$T/corrupt/coord.log" ||
    fail "the job did not go back to step 500"
# (a shard's index follows its registration, not its --bind name)
grep -q "resume: back to step 500 (.*shard1-000000000500.ckpt)" "$T"/corrupt/s*.log ||
    fail "shard 1 did not go back from step 1000 to step 500"
got=$(shard_digests "$T/corrupt")
[ "$got" = "$ref" ] || fail "digests after the corrupt-checkpoint resume '$got' differ from '$ref'"
pass "resume from step 1000 and, with a corrupt newest file, from step 500: digests equal the uninterrupted run ($ref)"
