#!/usr/bin/env bash
# mode=allreduce: real processes over real sockets, no shards.
# 1. hierarchical, tcp, 4 workers in 2 groups (--group node0/node1 on one
#    machine), Fashion-MNIST mlp, 300 steps: status 0, digest checks agree,
#    accuracy >= 0.70 and within 0.05 of the same job in mode=ps (both are
#    stated), and the bytes each node sent to the other node (counted by the
#    transport, summed over the node's workers) are (N - 1) * d/8 plus at
#    most 96 header bytes per CHUNK.
# 2. flat over ipc (3 workers) and ring_fp32 over tcp (3 workers): status 0,
#    digests agree, accuracy >= 0.60 after 200 steps.
# 3. groups of unequal size with hierarchical: refused at formation (exit 2)
#    with a message that names the groups and their sizes.
source "$(dirname "$0")/lib/common.bash"

MLP=(model=mlp batch=128 lr=0.001 eval=end progress_every=100)

# ---- 1. hierarchical ------------------------------------------------------------------
run_local hier -n 4 --groups 2 --transport tcp mode=allreduce allreduce_algo=hierarchical codec=birder \
    hfp8=on steps=300 digest_every=50 "${MLP[@]}"
[ "$RC" = "$WR_EXIT_OK" ] || fail "hierarchical: wren-local exited with $RC (expected $WR_EXIT_OK)"
check_digests
hier_digests=$DIGESTS_PASSED
grep -q "2 groups of 2" "$T/logs/worker0.log" || fail "worker 0 did not report 2 groups of 2"
acc_hier=$(json_get "$T/sum/worker-0.json" accuracy)
fge "${acc_hier:-0}" 0.70 || fail "hierarchical: accuracy '$acc_hier' after 300 steps is below 0.70"
[ "$(json_get "$T/sum/worker-0.json" mode)" = allreduce ] || fail "summary mode is not allreduce"
d=$(grep -ho 'd = [0-9]* parameters' "$T/logs/worker0.log" | head -n 1 | grep -o '[0-9]*')
[ -n "$d" ] || fail "worker 0 did not log its d"
python3 - "$T/sum" "$d" <<'EOF' || fail "inter-node bytes do not match (N - 1) * d/8 plus headers"
import json, sys
d = int(sys.argv[2]); N = G = 2
payload = (N - 1) * ((d + 63) // 64) * 8
node = {}
for i in range(4):
    s = json.load(open(f"{sys.argv[1]}/worker-{i}.json"))
    node[i % 2] = node.get(i % 2, 0) + s["internode_bytes_sent_per_step"]
for g, b in node.items():
    chunks = (N - 1) * G
    ok = payload < b <= payload + 96 * chunks
    print(f"node{g}: {b:.0f} bytes/step to the other node; payload {payload}, ratio {b / payload:.5f}")
    if not ok:
        sys.exit(1)
EOF

run_local ps -S 2 -n 4 --transport tcp codec=birder broadcast=1bit hfp8=on steps=300 digest_every=0 "${MLP[@]}"
[ "$RC" = "$WR_EXIT_OK" ] || fail "mode=ps reference: wren-local exited with $RC"
acc_ps=$(json_get "$T/sum/worker-0.json" accuracy)
python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) - 0.05 else 1)' "$acc_hier" "$acc_ps" ||
    fail "hierarchical accuracy $acc_hier is more than 0.05 below mode=ps's $acc_ps"

# ---- 2. flat over ipc, ring_fp32 over tcp ------------------------------------------------
run_local flat -n 3 --transport ipc mode=allreduce allreduce_algo=flat codec=birder hfp8=on steps=200 \
    digest_every=40 "${MLP[@]}"
[ "$RC" = "$WR_EXIT_OK" ] || fail "flat: wren-local exited with $RC"
check_digests
acc_flat=$(json_get "$T/sum/worker-0.json" accuracy)
fge "${acc_flat:-0}" 0.60 || fail "flat: accuracy '$acc_flat' after 200 steps is below 0.60"

run_local ring -n 3 --transport tcp mode=allreduce allreduce_algo=ring_fp32 codec=fp32 optimizer=adam \
    hfp8=off steps=200 digest_every=40 "${MLP[@]}"
[ "$RC" = "$WR_EXIT_OK" ] || fail "ring_fp32: wren-local exited with $RC"
check_digests
acc_ring=$(json_get "$T/sum/worker-0.json" accuracy)
fge "${acc_ring:-0}" 0.60 || fail "ring_fp32: accuracy '$acc_ring' after 200 steps is below 0.60"

# ---- 3. unequal groups ----------------------------------------------------------------
run_local uneven -n 3 --groups 2 --transport tcp mode=allreduce allreduce_algo=hierarchical codec=birder \
    steps=20 "${MLP[@]}"
[ "$RC" = "$WR_EXIT_CONFIG" ] || fail "unequal groups: wren-local exited with $RC (expected $WR_EXIT_CONFIG)"
grep -q "unequal size" "$T/logs/coordinator.log" || fail "the coordinator did not say the groups are of unequal size"

pass "hierarchical 2x2: $hier_digests digest checks, accuracy $acc_hier (mode=ps: $acc_ps); flat $acc_flat;" \
    "ring_fp32 $acc_ring; unequal groups refused"
