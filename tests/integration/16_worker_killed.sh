#!/usr/bin/env bash
# A worker killed (SIGKILL) mid-job, with min_workers below workers, does not
# stop the job (issue 11, "worker lost"): 3 workers over ipc, min_workers=2,
# mlp. Once the worker of rank 1 (the middle position, so the survivors'
# data positions change) has logged step 100, it is killed. Then:
#  - the coordinator ends with 0 and so does wren-local (a killed worker is
#    a membership change, not a failure);
#  - the coordinator names the lost worker, and an epoch >= 2 leaves it out;
#  - digest checks passed (> 0) and none failed: the survivors' replicas and
#    the shards' master copies stayed bit-identical;
#  - the two survivors did every step (summaries: steps = total) and each
#    shard completed every step 1..total: no step lost.
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/elastic.bash"

STEPS=1200
S=2
start_job run --transport ipc -S "$S" -n 3 -q model=mlp batch=96 eval=off steps=$STEPS min_workers=2 \
    digest_every=10 progress_every=20 heartbeat_interval=0.5 heartbeat_timeout=3
for n in worker0 worker1 worker2; do wait_for 60 "$n's rank" has_rank $n; done
victim=$(worker_of_rank 1) || fail "no worker logged rank 1"
wait_for 60 "step 100 in $victim's log" reached "$victim" 100
kill -KILL "$(pid_of "$victim")" || fail "cannot kill $victim"
at=$(last_step "$victim")
wait_job 60
[ "$RC" = "$WR_EXIT_OK" ] || fail "wren-local exited $RC after SIGKILL of worker rank 1 (expected $WR_EXIT_OK)"
[ "$(status_of coordinator)" = "$WR_EXIT_OK" ] || fail "the coordinator exited $(status_of coordinator)"
[ "$(status_of "$victim")" = 137 ] || fail "$victim's status is $(status_of "$victim"), not 137 (SIGKILL)"
[ "$at" -lt "$STEPS" ] || fail "$victim was killed after the last step (raise steps)"
lost=$(loss_line 1)
[ -n "$lost" ] || fail "the coordinator does not say that worker 1 was lost"
epoch=$(epoch_line 1)
[ -n "$epoch" ] || fail "no epoch change (epoch >= 2) naming worker 1 in the coordinator's log"
check_digests
for n in worker0 worker1 worker2; do [ "$n" = "$victim" ] || check_summary_steps "$n" "$STEPS"; done
check_no_step_lost "$S" "$STEPS"
check_no_leftovers
echo "  killed $victim (rank 1) after step $at: ${lost#* \[*\] }"
echo "  ${epoch#*:}"
pass "a worker killed at step $at of $STEPS: job status 0, $DIGESTS_PASSED digest checks agreed, no step lost"
