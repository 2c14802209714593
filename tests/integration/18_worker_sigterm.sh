#!/usr/bin/env bash
# A worker given SIGTERM leaves the job cleanly (issue 11, "worker leaves"):
# 3 workers over tcp, min_workers=2, mlp. Once worker2 (the launcher's
# highest-numbered worker) has logged step 100, `wren-local remove` sends it
# SIGTERM (the launcher's own remove command). Then:
#  - it finishes its step, logs "leaving the job after step t (signal)",
#    writes its summary (steps = t) and exits 0;
#  - an epoch >= 2 of the coordinator names it (removed at the next epoch);
#  - the job ends with 0, digest checks passed (> 0) and none failed;
#  - the two others did every step and each shard completed every step.
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/elastic.bash"

STEPS=1200
S=2
start_job run --transport tcp -S "$S" -n 3 -q model=mlp batch=96 eval=off steps=$STEPS min_workers=2 \
    digest_every=10 progress_every=20
for n in worker0 worker1 worker2; do wait_for 60 "$n's rank" has_rank $n; done
rank=$(worker_rank worker2)
wait_for 60 "step 100 in worker2's log" reached worker2 100
"$ROOT/scripts/wren-local" remove --run-dir "$RUN" >"$T/remove.out" 2>&1 ||
    fail "wren-local remove failed: $(cat "$T/remove.out")"
grep -q "sent SIGTERM to worker2 (pid $(pid_of worker2))" "$T/remove.out" ||
    fail "wren-local remove did not pick worker2: $(cat "$T/remove.out")"
wait_for 60 "worker2's exit" test -f "$RUN/worker2.status"
[ "$(status_of worker2)" = "$WR_EXIT_OK" ] || fail "worker2 exited $(status_of worker2) after SIGTERM (expected 0)"
leaving=$(leaving_line worker2)
[ -n "$leaving" ] || fail "worker2 did not log 'leaving the job after step t'"
at=$(sed -nE 's/.*leaving the job after step ([0-9]+).*/\1/p' <<<"$leaving")
[ "$at" -lt "$STEPS" ] || fail "worker2 left after the last step (raise steps)"
[ "$(json_get "$T/sum/worker-2.json" steps 2>/dev/null)" = "$at" ] ||
    fail "worker2's summary does not say it did the $at steps it left after"
wait_job 60
[ "$RC" = "$WR_EXIT_OK" ] || fail "wren-local exited $RC after a worker left (expected $WR_EXIT_OK)"
[ "$(status_of coordinator)" = "$WR_EXIT_OK" ] || fail "the coordinator exited $(status_of coordinator)"
epoch=$(epoch_line "$rank")
[ -n "$epoch" ] || fail "no epoch change (epoch >= 2) naming worker $rank in the coordinator's log"
check_digests
for n in worker0 worker1; do check_summary_steps "$n" "$STEPS"; done
check_no_step_lost "$S" "$STEPS"
check_no_leftovers
echo "  worker2 (rank $rank): ${leaving#* \[*\] }"
echo "  ${epoch#*:}"
pass "a worker left on SIGTERM after step $at of $STEPS: exit 0, job 0, $DIGESTS_PASSED digest checks agreed, no step lost"
