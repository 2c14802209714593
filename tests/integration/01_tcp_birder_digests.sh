#!/usr/bin/env bash
# A cluster over tcp loopback (2 shards, 2 workers, Birder 1bit + HFP8, mlp)
# trains 300 steps: it must end with status 0, the coordinator must have
# compared replica digests at least once with no mismatch, and the test
# accuracy must be clearly better than chance: >= 0.70 after 300 steps of
# global batch 128 (chance is 0.10; full training reaches ~0.88).
source "$(dirname "$0")/lib/common.bash"

run_local run -S 2 -n 2 --transport tcp model=mlp codec=birder broadcast=1bit hfp8=on \
    batch=128 steps=300 lr=0.001 digest_every=50 progress_every=100 eval=end
[ "$RC" = "$WR_EXIT_OK" ] || fail "wren-local exited with $RC (expected $WR_EXIT_OK)"
check_digests
acc=$(json_get "$T/sum/worker-0.json" accuracy)
[ -n "$acc" ] || fail "no accuracy in the summary of worker 0"
fge "$acc" 0.70 || fail "test accuracy $acc after 300 steps is below the bound 0.70"
for i in 0 1; do [ -f "$T/sum/worker-$i.json" ] || fail "worker $i wrote no summary"; done
grep -q 'progress epoch' "$T/run.out" || fail "no progress line streamed by wren-local"
pass "tcp: $DIGESTS_PASSED digest checks agreed, accuracy $acc after 300 steps"
