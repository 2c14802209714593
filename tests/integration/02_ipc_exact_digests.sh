#!/usr/bin/env bash
# A cluster over ipc (sockets in a temp dir; 2 shards, 3 workers, Birder with
# the `exact` bit-plane broadcast) trains 200 steps; the replicas' digests
# must agree (>= 1 check, none failed) and training must beat chance clearly
# (>= 0.60 after 200 steps).
source "$(dirname "$0")/lib/common.bash"

run_local run -S 2 -n 3 --transport ipc model=mlp codec=birder broadcast=exact hfp8=on \
    batch=96 steps=200 lr=0.001 digest_every=40 progress_every=100 eval=end
[ "$RC" = "$WR_EXIT_OK" ] || fail "wren-local exited with $RC (expected $WR_EXIT_OK)"
check_digests
acc=$(json_get "$T/sum/worker-0.json" accuracy)
fge "${acc:-0}" 0.60 || fail "test accuracy '$acc' after 200 steps is below the bound 0.60"
pass "ipc + exact broadcast: $DIGESTS_PASSED digest checks agreed, accuracy $acc"
