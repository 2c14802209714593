#!/usr/bin/env bash
# mode=ps with ps_node_aggregate = on: real processes over real sockets.
# 1. 2 shards, 4 workers in 2 groups (--groups 2: node0 and node1 on one
#    machine), Fashion-MNIST mlp, 300 steps: status 0, digest checks agree
#    (every worker's replica against the shards' master copies), each shard
#    saw 2 contributors (its map lists the 2 leaders) and received exactly 2
#    pushes per step, accuracy >= 0.70 and within 0.05 of the same job
#    without aggregation (both stated).
# 2. The same job without aggregation: each shard received 4 pushes per step,
#    and twice the push bytes per step of the aggregated job (+- 2 %).
# 3. A follower (rank 3: never its node's leader) killed mid-job: the
#    membership is fixed, so the job stops with status 5 and the coordinator
#    names it; no process is left behind.
# 4. With CURVE keys (keygen, an allow-list, processes started by hand): the
#    same 2 x 2 shape over tcp ends with status 0, digests agree, each shard
#    got 2 pushes per step (the workers' data endpoints admit the peers' keys).
# 5. Refusals: groups of unequal size (3 workers in 2 groups) stop the job
#    at formation (exit 2, the coordinator names the groups and sizes); a
#    config the aggregation cannot honour (codec=fp32) is refused (exit 2,
#    the message names the keys).
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/elastic.bash"

MLP=(model=mlp batch=128 lr=0.001 eval=end progress_every=100 hfp8=on codec=birder broadcast=1bit)
STEPS=300

# shard_pushes SHARD_LOG -> "pushes per step" from the shard's end report
shard_pushes() { sed -nE 's/.*pushes received: [0-9]+ \(([0-9.]+) per step\).*/\1/p' "$1" | tail -n 1; }
# shard_push_bytes SHARD_LOG -> push bytes per step
shard_push_bytes() { sed -nE 's/.*pushes received: .* \(([0-9]+) bytes per step\).*/\1/p' "$1" | tail -n 1; }

# ---- 1. aggregated ----------------------------------------------------------------------
run_local agg -S 2 -n 4 --groups 2 --transport tcp ps_node_aggregate=on steps=$STEPS digest_every=50 "${MLP[@]}"
[ "$RC" = "$WR_EXIT_OK" ] || fail "aggregated: wren-local exited with $RC (expected $WR_EXIT_OK)"
check_digests
agg_digests=$DIGESTS_PASSED
[ "$agg_digests" -ge 8 ] || fail "aggregated: only $agg_digests digest checks passed (4 steps x 2 shards expected)"
grep -q "node aggregation: 2 nodes x 2 workers" "$T/logs/coordinator.log" ||
    fail "the coordinator did not report 2 nodes x 2 workers"
leaders=0
for w in 0 1 2 3; do
    grep -q "node aggregation: .*(the node's leader)" "$T/logs/worker$w.log" && leaders=$((leaders + 1))
done
[ "$leaders" = 2 ] || fail "aggregated: $leaders workers say they lead their node (2 expected)"
declare -A agg_bytes
for s in 0 1; do
    grep -q "range .*, 2 workers, $STEPS steps" "$T/logs/shard$s.log" ||
        fail "shard $s: its map does not list 2 workers (the leaders)"
    p=$(shard_pushes "$T/logs/shard$s.log")
    [ "$p" = "2.00" ] || fail "shard $s received '$p' pushes per step with aggregation (2.00 expected)"
    agg_bytes[$s]=$(shard_push_bytes "$T/logs/shard$s.log")
done
acc_agg=$(json_get "$T/sum/worker-0.json" accuracy)
fge "${acc_agg:-0}" 0.70 || fail "aggregated: accuracy '$acc_agg' after $STEPS steps is below 0.70"

# ---- 2. the same job without aggregation ---------------------------------------------
run_local plain -S 2 -n 4 --groups 2 --transport tcp steps=$STEPS digest_every=0 "${MLP[@]}"
[ "$RC" = "$WR_EXIT_OK" ] || fail "without aggregation: wren-local exited with $RC"
for s in 0 1; do
    p=$(shard_pushes "$T/logs/shard$s.log")
    [ "$p" = "4.00" ] || fail "shard $s received '$p' pushes per step without aggregation (4.00 expected)"
    b=$(shard_push_bytes "$T/logs/shard$s.log")
    python3 -c 'import sys; r = float(sys.argv[1]) / float(sys.argv[2]); print(f"shard {sys.argv[3]}: push bytes/step {sys.argv[1]} (4 workers) vs {sys.argv[2]} (2 nodes): ratio {r:.3f}"); sys.exit(0 if abs(r - 2) <= 0.04 else 1)' \
        "$b" "${agg_bytes[$s]}" "$s" || fail "shard $s: inbound bytes do not halve with 2 nodes of 2"
done
acc_plain=$(json_get "$T/sum/worker-0.json" accuracy)
python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) - 0.05 else 1)' "$acc_agg" "$acc_plain" ||
    fail "aggregated accuracy $acc_agg is more than 0.05 below the plain job's $acc_plain"

# ---- 3. a follower killed -------------------------------------------------------------
start_job killed -S 2 -n 4 --groups 2 --transport tcp ps_node_aggregate=on steps=2000 digest_every=0 \
    heartbeat_interval=0.5 heartbeat_timeout=3 "${MLP[@]}"
for n in worker0 worker1 worker2 worker3; do wait_for 60 "$n's rank" has_rank $n; done
victim=$(worker_of_rank 3) || fail "no worker logged rank 3"
wait_for 60 "step 50 in $victim's log" reached "$victim" 50
kill -KILL "$(pid_of "$victim")" || fail "cannot kill $victim"
wait_job 60
[ "$RC" = "$WR_EXIT_NODE_LOST" ] || fail "a follower killed: wren-local exited $RC (expected $WR_EXIT_NODE_LOST)"
grep -q "ps_node_aggregate cannot go on without it" "$T/logs/coordinator.log" ||
    fail "the coordinator does not say the job cannot go on without the lost worker"
check_no_leftovers

# ---- 4. with CURVE keys -----------------------------------------------------------------
SRV=$BIN/wren-server
K=$T/keys
mkdir -p "$K" "$T/keyed"
chmod 700 "$K"
"$SRV" keygen --dir "$K" coordinator >/dev/null 2>&1 || fail "keygen coordinator failed"
for n in s0:shard w0:worker w1:worker w2:worker w3:worker; do
    "$SRV" keygen --dir "$K" --role "${n#*:}" "${n%:*}" >>"$K/allow.txt" 2>/dev/null || fail "keygen $n failed"
done
CADDR="tcp://127.0.0.1:$(free_port)"
CK=(--coordinator-key "$K/coordinator.pub")
"$SRV" coordinator --bind "$CADDR" --key "$K/coordinator.key" --allow "$K/allow.txt" shards=1 workers=4 \
    ps_node_aggregate=on model=synthetic:100000 steps=60 digest_every=10 progress_every=0 register_timeout=60 \
    >"$T/keyed/coordinator.log" 2>&1 &
COORD=$!
STARTED+=("$COORD")
"$SRV" shard --coordinator "$CADDR" --key "$K/s0.key" "${CK[@]}" --allow "$K/allow.txt" \
    --bind tcp://127.0.0.1:0 --connect-timeout 30 >"$T/keyed/shard0.log" 2>&1 &
STARTED+=("$!")
for w in 0 1 2 3; do
    "$BIN/wren-worker" --coordinator "$CADDR" --key "$K/w$w.key" "${CK[@]}" --group "node$((w % 2))" \
        --connect-timeout 30 >"$T/keyed/worker$w.log" 2>&1 &
    STARTED+=("$!")
done
await_coordinator "the keyed job"
grep -q "digest checks: [1-9][0-9]* passed, 0 failed" "$T/keyed/coordinator.log" ||
    fail "the keyed job's digest checks did not all pass"
p=$(shard_pushes "$T/keyed/shard0.log")
[ "$p" = "2.00" ] || fail "keyed: the shard received '$p' pushes per step (2.00 expected)"

# ---- 5. refusals ------------------------------------------------------------------------
run_local uneven -S 2 -n 3 --groups 2 --transport tcp ps_node_aggregate=on steps=20 "${MLP[@]}"
[ "$RC" = "$WR_EXIT_CONFIG" ] || fail "unequal groups: wren-local exited with $RC (expected $WR_EXIT_CONFIG)"
grep -q "ps_node_aggregate: groups of unequal size: node0 2, node1 1" "$T/logs/coordinator.log" ||
    fail "the coordinator did not name the unequal groups"

run_local fp32 -S 2 -n 2 --transport tcp ps_node_aggregate=on model=mlp codec=fp32 steps=5
[ "$RC" = "$WR_EXIT_CONFIG" ] || fail "codec=fp32: wren-local exited with $RC (expected $WR_EXIT_CONFIG)"
grep -rq "config keys 'ps_node_aggregate' and 'codec'" "$T"/fp32.out "$T"/logs ||
    fail "the codec=fp32 refusal does not name the keys"

pass "2 nodes x 2 workers: $agg_digests digest checks, 2 pushes per shard per step (4 without), accuracy" \
    "$acc_agg (without aggregation: $acc_plain); a lost follower stops the job (5); with keys too;" \
    "unequal groups and codec=fp32 refused"
