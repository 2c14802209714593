#!/usr/bin/env bash
# The fp32 baseline (fp32 gradients pushed, Adam on the shards, fp32 parameters
# broadcast, fp32 GEMMs) trains: status 0, digests agree, accuracy >= 0.70
# after 200 steps, and it moves 32x the bytes of Birder per step.
source "$(dirname "$0")/lib/common.bash"

run_local run -S 2 -n 2 model=mlp codec=fp32 optimizer=adam hfp8=off \
    batch=128 steps=200 lr=0.001 digest_every=50 progress_every=100 eval=end
[ "$RC" = "$WR_EXIT_OK" ] || fail "wren-local exited with $RC (expected $WR_EXIT_OK)"
check_digests
acc=$(json_get "$T/sum/worker-0.json" accuracy)
fge "${acc:-0}" 0.70 || fail "fp32 test accuracy '$acc' after 200 steps is below 0.70"
sent=$(json_get "$T/sum/worker-0.json" bytes_sent_per_step)
fge "${sent:-0}" $((535818 * 4)) || fail "fp32 pushes $sent B/step, expected >= 4 bytes per parameter"
pass "fp32 codec: accuracy $acc, $sent B sent per step"
