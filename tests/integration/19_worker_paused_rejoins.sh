#!/usr/bin/env bash
# A worker stopped (SIGSTOP) past heartbeat_timeout is removed, and when it
# runs again it is told so and rejoins (issue 11): 3 workers over ipc,
# heartbeat_interval 0.5 s, heartbeat_timeout 2 s, min_workers=2,
# max_workers=3, mlp. Once worker2 has logged step 100 it is stopped, and
# continued only after the coordinator has removed it. Then:
#  - while it is stopped the coordinator names it lost, an epoch >= 2 leaves
#    it out, and the job goes on (worker0 advances 100 more steps);
#  - after SIGCONT it logs that it was removed from the job, and a later
#    epoch admits it again as a joiner with a new rank (3: ranks are never
#    reused);
#  - the job ends with 0, worker2 too (having trained to the last step),
#    digest checks passed (> 0) and none failed: the returning worker did
#    not corrupt the job; the two others did every step and each shard
#    completed every step.
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/elastic.bash"

STEPS=2500
S=2
start_job run --transport ipc -S "$S" -n 3 -q model=mlp batch=96 eval=off steps=$STEPS min_workers=2 \
    max_workers=3 digest_every=10 progress_every=20 heartbeat_interval=0.5 heartbeat_timeout=2
for n in worker0 worker1 worker2; do wait_for 60 "$n's rank" has_rank $n; done
rank=$(worker_rank worker2)
wait_for 60 "step 100 in worker2's log" reached worker2 100
victim=$(pid_of worker2)
kill -STOP "$victim" || fail "cannot stop worker2"
at=$(last_step worker2)
removed_at() { [ -n "$(loss_line "$rank")" ] && has_epoch_line "$rank"; }
wait_for 30 "the coordinator removing the stopped worker2 (rank $rank)" removed_at
gone=$(epoch_line "$rank")
wait_for 60 "worker0 training on without worker2 (step $((at + 100)))" reached worker0 $((at + 100))
kill -CONT "$victim"
wait_for 60 "worker2 logging that it was removed from the job" was_removed worker2
wait_for 60 "an epoch change admitting worker2 again as rank 3" has_epoch_line 3 "${gone%%:*}"
back=$(epoch_line 3 "${gone%%:*}")
wait_job 60
[ "$RC" = "$WR_EXIT_OK" ] || fail "wren-local exited $RC (expected $WR_EXIT_OK)"
for n in coordinator worker2; do [ "$(status_of $n)" = "$WR_EXIT_OK" ] || fail "$n exited $(status_of $n)"; done
[ "$(last_step worker2)" = "$STEPS" ] || fail "worker2's last progress line is step $(last_step worker2), not $STEPS"
check_digests
for n in worker0 worker1; do check_summary_steps "$n" "$STEPS"; done
check_no_step_lost "$S" "$STEPS"
check_no_leftovers
echo "  stopped worker2 (rank $rank) after step $at: ${gone#*:}"
echo "  $(removed_line worker2)"
echo "  ${back#*:}"
pass "a worker paused past heartbeat_timeout was removed, rejoined and trained to $STEPS; $DIGESTS_PASSED digest checks agreed"
