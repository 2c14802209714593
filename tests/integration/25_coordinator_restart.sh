#!/usr/bin/env bash
# The coordinator killed (kill -9) mid-job and started again with the same
# command line (issue 11, "coordinator restart"): the shards and the real
# workers (mlp, Birder) keep training meanwhile and register again; the new
# coordinator restores the job's map and epoch from checkpoint_dir, takes
# every node back, re-forms the job at a new epoch, and the job ends with 0:
#  - the restarted coordinator says so, and that each of the 5 nodes is back;
#  - digest checks after the re-forming epoch passed (> 0), none failed;
#  - each shard completed every step 1..T, each worker's summary has all T
#    steps: no step lost;
#  - a worker killed while no coordinator runs is declared lost at
#    register_timeout and the job re-forms without it (min_workers = 2);
#  - a coordinator started again after the job ENDED starts a new job (the
#    state says the job ended): it waits for registrations, and times out.
source "$(dirname "$0")/lib/common.bash"

STEPS=1500
D=$T/job
CK=$T/ck
mkdir -p "$D"
COORD_ARGS=(coordinator --log-level debug --bind "ipc://$D/c" shards=2 workers=3 model=mlp batch=96 eval=off "steps=$STEPS"
    digest_every=10 progress_every=50 heartbeat_interval=0.2 heartbeat_timeout=2 register_timeout=10
    checkpoint_dir="$CK")

start_coordinator() { # start_coordinator LOG
    "$BIN/wren-server" "${COORD_ARGS[@]}" >"$1" 2>&1 &
    COORD=$!
    STARTED+=("$COORD")
}

start_coordinator "$D/coord1.log"
for s in 0 1; do
    "$BIN/wren-server" shard --coordinator "ipc://$D/c" --bind "ipc://$D/s$s" >"$D/s$s.log" 2>&1 &
    STARTED+=("$!")
done
WPIDS=()
for w in 0 1 2; do
    "$BIN/wren-worker" --coordinator "ipc://$D/c" --summary "$D/w$w.json" --log-level debug >"$D/w$w.log" 2>&1 &
    STARTED+=("$!")
    WPIDS+=("$!")
done

# kill -9 the coordinator once the workers are past step 300 (progress lines)
past300() { grep -qE 'progress epoch [0-9]+ step ([3-9][0-9]{2})/' "$D"/w*.log 2>/dev/null; }
for _ in $(seq 600); do past300 && break; sleep 0.1; done
past300 || fail "the workers never reached step 300: $(tail -n 2 "$D"/w*.log)"
t_kill=$(date +%s.%N)
kill -KILL "$COORD"
wait "$COORD" 2>/dev/null || true
sleep 1
start_coordinator "$D/coord2.log"
rc=0
wait "$COORD" || rc=$?
for p in "${WPIDS[@]}"; do wait "$p" || fail "a worker exited with $?: $(tail -n 3 "$D"/w*.log)"; done
wait 2>/dev/null
[ "$rc" = "$WR_EXIT_OK" ] || fail "the restarted coordinator exited with $rc: $(tail -n 5 "$D/coord2.log")"
grep -q "coordinator restarted: job" "$D/coord2.log" || fail "the new coordinator did not restore the job"
back=$(grep -c " is back (epoch" "$D/coord2.log")
[ "$back" = 5 ] || fail "$back of 5 nodes came back: $(grep -E 'back|timeout' "$D/coord2.log")"
reformed=$(grep -o "job re-formed [0-9.]* s after the coordinator restart: training goes on from step [0-9]*" \
    "$D/coord2.log") || fail "no re-forming epoch: $(tail -n 5 "$D/coord2.log")"
line=$(grep -o "digest checks: [0-9]* passed, [0-9]* failed" "$D/coord2.log")
[[ "$line" =~ ^digest\ checks:\ [1-9][0-9]*\ passed,\ 0\ failed$ ]] || fail "digests after the restart: '$line'"
for s in 0 1; do
    grep -q "completed steps 1..$STEPS of $STEPS" "$D/s$s.log" ||
        fail "shard $s did not complete every step: $(grep 'completed steps' "$D/s$s.log")"
done
for w in 0 1 2; do
    steps=$(json_get "$D/w$w.json" steps)
    [ "$steps" = "$STEPS" ] || fail "worker $w's summary: steps $steps, not $STEPS"
done
# Recovery: from the kill to the re-formed epoch's commit (1 s of it is this
# test's pause before the restart); the steps the shards completed while no
# coordinator ran (shard 0's step when it lost it and when it was back).
t_first=$(sed -nE 's/.*training goes on from step ([0-9]+).*/\1/p' "$D/coord2.log")
at=$(grep -m1 "job re-formed" "$D/coord2.log" | cut -d' ' -f1)
recovery=$(python3 -c 'import sys,datetime as d; k=float(sys.argv[1]); t=d.datetime.fromtimestamp(k); \
h,m,s=sys.argv[2].split(":"); r=t.replace(hour=int(h),minute=int(m),second=0,microsecond=0).timestamp()+float(s); \
print("%.2f" % (r-k))' "$t_kill" "$at")
lost_at=$(grep -m1 -oE "step [0-9]+: lost the connection to the coordinator" "$D/w0.log" | grep -oE '[0-9]+' | head -n 1)
back_at=$(grep -m1 -oE "shard 0 on host .* is back \(epoch [0-9]+, step [0-9]+" "$D/coord2.log" | grep -oE '[0-9]+$')

# A worker killed while no coordinator runs (min_workers = 2): the restarted
# coordinator takes the other four back, declares the missing one lost at
# register_timeout and re-forms the job without it; the job ends with 0.
D3=$T/lost
mkdir -p "$D3"
COORD_ARGS=(coordinator --log-level debug --bind "ipc://$D3/c" shards=2 workers=3 min_workers=2 model=mlp
    batch=96 eval=off "steps=$STEPS" digest_every=10 progress_every=50 heartbeat_interval=0.2
    heartbeat_timeout=2 register_timeout=4 checkpoint_dir="$T/ck3")
start_coordinator "$D3/coord1.log"
for s in 0 1; do
    "$BIN/wren-server" shard --coordinator "ipc://$D3/c" --bind "ipc://$D3/s$s" >"$D3/s$s.log" 2>&1 &
    STARTED+=("$!")
done
WPIDS=()
for w in 0 1 2; do
    "$BIN/wren-worker" --coordinator "ipc://$D3/c" --summary "$D3/w$w.json" >"$D3/w$w.log" 2>&1 &
    STARTED+=("$!")
    WPIDS+=("$!")
done
for _ in $(seq 600); do grep -q "job formed" "$D3/coord1.log" && break; sleep 0.1; done
sleep 1
kill -KILL "$COORD"
wait "$COORD" 2>/dev/null || true
kill -KILL "${WPIDS[2]}"
wait "${WPIDS[2]}" 2>/dev/null || true
sleep 0.5
start_coordinator "$D3/coord2.log"
rc=0
wait "$COORD" || rc=$?
for p in "${WPIDS[0]}" "${WPIDS[1]}"; do wait "$p" || fail "lost: a surviving worker exited with $?"; done
wait 2>/dev/null
[ "$rc" = "$WR_EXIT_OK" ] || fail "lost: the restarted coordinator exited with $rc: $(tail -n 5 "$D3/coord2.log")"
gone=$(grep -o "worker [0-9]* on host [^ ]* did not come back within 4 s" "$D3/coord2.log") ||
    fail "lost: the missing worker is not named: $(grep -E 'back|lost|epoch' "$D3/coord2.log")"
grep -qE "epoch [0-9]+ from step [0-9]+: workers [0-9], [0-9] \(worker [0-9] removed \(lost\)\)" "$D3/coord2.log" ||
    fail "lost: no epoch without the missing worker: $(grep epoch "$D3/coord2.log")"
grep -qE "digest checks: [1-9][0-9]* passed, 0 failed" "$D3/coord2.log" || fail "lost: digest checks did not pass"
for s in 0 1; do
    grep -q "completed steps 1..$STEPS of $STEPS" "$D3/s$s.log" || fail "lost: shard $s did not complete every step"
done

# The job ended: a coordinator started again starts a new job.
D2=$T/again
mkdir -p "$D2"
COORD_ARGS=(coordinator --bind "ipc://$D2/c" shards=2 workers=3 model=mlp batch=96 eval=off "steps=$STEPS"
    checkpoint_dir="$CK" register_timeout=1)
start_coordinator "$D2/coord.log"
rc=0
wait "$COORD" || rc=$?
[ "$rc" = "$WR_EXIT_REGISTER_TIMEOUT" ] || fail "a coordinator after the ended job exited $rc: $(tail -n 3 "$D2/coord.log")"
grep -q "ended before" "$D2/coord.log" || fail "the coordinator after the ended job does not say it starts anew"
grep -q "coordinator restarted" "$D2/coord.log" && fail "a coordinator restored a job that had ended"
echo "  $reformed; ${recovery} s from kill -9 to the re-formed epoch (1 s of it the pause before the restart)"
echo "  training went on without a coordinator: worker 0 lost it at step $lost_at, shard 0 was back at step $back_at"
echo "  $line; every shard completed 1..$STEPS; every worker did $STEPS steps"
echo "  and with a worker killed meanwhile: $gone; re-formed without it, status 0"
pass "coordinator killed and restarted: $back nodes back, job re-formed at step $t_first, status 0"
