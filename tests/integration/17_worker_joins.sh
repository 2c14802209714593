#!/usr/bin/env bash
# A worker started while the job runs joins it (issue 11, "worker joins"):
# 2 workers over tcp, max_workers=3, mlp. Once rank 0 has logged step 100,
# `wren-local add` starts a third worker against the running coordinator
# (the launcher's own add command, as an operator would use it). Then:
#  - the job ends with 0, the joiner too;
#  - an epoch >= 2 of the coordinator names the joiner, rank 2 (ranks are
#    never reused: a joiner gets the next one);
#  - the joiner trained from a start step T > 1 to the end: its summary's
#    steps are fewer than the total (with start_step, if given: T > 1 and
#    T + steps - 1 = total) and its last progress line is the last step;
#  - every scheduled digest check passed, none failed: the checks after T
#    included the joiner's replica (pulled x, Birder m, b from zero);
#  - the first two did every step and each shard completed every step.
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/elastic.bash"

STEPS=1500
S=2
EVERY=10
start_job run --transport tcp -S "$S" -n 2 -q model=mlp batch=96 eval=off steps=$STEPS max_workers=3 \
    digest_every=$EVERY progress_every=20
for n in worker0 worker1; do wait_for 60 "$n's rank" has_rank $n; done
first=$(worker_of_rank 0) || fail "no worker logged rank 0"
wait_for 60 "step 100 in $first's log" reached "$first" 100
"$ROOT/scripts/wren-local" add --run-dir "$RUN" >"$T/add.out" 2>&1 || fail "wren-local add failed: $(cat "$T/add.out")"
grep -q 'started worker2 (pid' "$T/add.out" || fail "wren-local add did not start worker2: $(cat "$T/add.out")"
wait_for 60 "an epoch change naming the joiner (worker 2)" has_epoch_line 2
wait_job 60
[ "$RC" = "$WR_EXIT_OK" ] || fail "wren-local exited $RC with a joiner (expected $WR_EXIT_OK)"
for n in coordinator worker2; do [ "$(status_of $n)" = "$WR_EXIT_OK" ] || fail "$n exited $(status_of $n)"; done
epoch=$(epoch_line 2)

# The joiner: from T > 1 to the end.
[ -f "$T/sum/worker-2.json" ] || fail "the joiner wrote no summary"
steps=$(json_get "$T/sum/worker-2.json" steps)
start=$(json_get "$T/sum/worker-2.json" start_step)
{ [ -n "$steps" ] && [ "$steps" -ge 1 ] && [ "$steps" -lt "$STEPS" ]; } ||
    fail "the joiner's summary says steps '$steps' (expected 1..$((STEPS - 1)): it joined after step 1)"
if [ -n "$start" ]; then
    [ "$start" -gt 1 ] || fail "the joiner's start_step is $start"
    [ $((start + steps - 1)) = "$STEPS" ] || fail "the joiner started at $start and did $steps steps: not to $STEPS"
fi
[ "$(last_step worker2)" = "$STEPS" ] || fail "the joiner's last progress line is step $(last_step worker2), not $STEPS"

check_all_digests "$S" "$STEPS" "$EVERY"
for n in worker0 worker1; do check_summary_steps "$n" "$STEPS"; done
check_no_step_lost "$S" "$STEPS"
check_no_leftovers
echo "  ${epoch#*:}"
pass "a worker joined after step 1 and did $steps steps to $STEPS; $DIGESTS_PASSED digest checks agreed"
