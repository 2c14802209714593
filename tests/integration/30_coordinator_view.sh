#!/usr/bin/env bash
# One view of the job on the coordinator (issue 13 item 2): real processes.
# 1. scripts/wren-local, 2 shards, 3 workers, synthetic model, 60 steps,
#    progress_every=10: status 0; the coordinator's log has progress lines
#    with rising steps up to 60/60, each naming the slowest shard and a rank;
#    its --summary JSON (wren-local --summary-dir) lists ranks 0, 1 and 2 at
#    step 60 with a wait per shard (2 entries), the digests agree, exit 0;
#    every worker says what it loads before it registers.
# 2. Started by hand on one host: a coordinator and a shard, 2 workers with
#    --summary "$T/run-{rank}.json": each rank writes its own file
#    (run-0.json, run-1.json, each with its own rank), nothing is overwritten.
# 3. A slow shard is named: shard 0 (pushed first, normally the quicker one)
#    stopped for 1 s mid-job (SIGSTOP, well under heartbeat_timeout): a
#    coordinator line names shard 0 with a wait of at least 10 ms/step (1 s
#    over a 50-step interval is 20), and the job still ends with status 0.
# 4. mode=allreduce (no shards): the same lines, naming the rank with the most
#    comm time per step; the summary lists both ranks with no shard waits.
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/elastic.bash"

JOB=(model=synthetic:200000 steps=60 progress_every=10 digest_every=20)

# ---- 1. wren-local ----------------------------------------------------------------------
run_local view -S 2 -n 3 "${JOB[@]}"
[ "$RC" = "$WR_EXIT_OK" ] || fail "wren-local exited with $RC (expected $WR_EXIT_OK)"
check_digests
CLOG=$T/logs/coordinator.log
steps=$(sed -nE 's/.*coordinator \[info\] progress step ([0-9]+)\/60 .*/\1/p' "$CLOG" | tr '\n' ' ' | sed 's/ $//')
python3 - "$steps" <<'EOF' || fail "the coordinator's progress steps '$steps' do not rise to 60 in 2+ lines"
import sys
s = [int(x) for x in sys.argv[1].split()]
sys.exit(0 if len(s) >= 2 and s == sorted(set(s)) and s[-1] == 60 else 1)
EOF
n_lines=$(grep -c 'coordinator \[info\] progress step' "$CLOG")
slow=$(grep -c 'coordinator \[info\] progress step .*slowest: shard [01] (wait [0-9.]* ms/step, rank [0-2] on host ' "$CLOG")
[ "$slow" = "$n_lines" ] || fail "$slow of $n_lines progress lines name the slowest shard and rank"
python3 - "$T/sum/coordinator.json" <<'EOF' || fail "the coordinator's summary JSON is not what it should be"
import json, sys
j = json.load(open(sys.argv[1]))
ranks = sorted(r["rank"] for r in j["ranks"])
assert ranks == [0, 1, 2], ranks
for r in j["ranks"]:
    assert r["step"] == 60 and r["steps"] == 60, r
    assert len(r["shard_wait_ms_per_step"]) == 2, r
    assert r["final"]["steps"] == 60, r
assert j["exit_status"] == 0 and j["digests"]["agree"] is True, j
assert j["workers"] == 3 and j["shards"] == 2 and j["total_steps"] == 60, j
assert j["progress_lines"] >= 2, j
EOF
for w in 0 1 2; do
    grep -q "loading model synthetic:200000" "$T/logs/worker$w.log" || fail "worker$w does not say what it loads"
    grep -q "model synthetic:200000: 200000 parameters" "$T/logs/worker$w.log" ||
        fail "worker$w does not say how large its model is"
done

# ---- 2. --summary with {rank}, by hand -----------------------------------------------------
D=$T/hand
mkdir -p "$D"
"$BIN/wren-server" coordinator --bind "ipc://$D/coord" shards=1 workers=2 "${JOB[@]}" \
    >"$D/coord.log" 2>&1 &
COORD=$!
STARTED+=("$COORD")
"$BIN/wren-server" shard --coordinator "ipc://$D/coord" --bind "ipc://$D/s0" >"$D/s0.log" 2>&1 &
STARTED+=("$!")
for w in 0 1; do
    "$BIN/wren-worker" --coordinator "ipc://$D/coord" --summary "$D/run-{rank}.json" >"$D/w$w.log" 2>&1 &
    STARTED+=("$!")
done
await_coordinator "the job started by hand"
wait
for r in 0 1; do
    [ -f "$D/run-$r.json" ] || fail "no summary $D/run-$r.json (--summary run-{rank}.json)"
    [ "$(json_get "$D/run-$r.json" rank)" = "$r" ] || fail "run-$r.json does not hold rank $r's summary"
done
[ -e "$D/run-{rank}.json" ] && fail "a worker wrote the pattern's name literally"
# ---- 3. a slow shard named ---------------------------------------------------------------
start_job slow -S 2 -n 2 model=synthetic:200000 steps=3000 progress_every=50 digest_every=0
wait_for 60 "step 200 in worker0's log" reached worker0 200
shard0=$(pid_of shard0)
# Shard indices follow registration order: the process named shard0 may be index 1.
idx=$(grep -m1 -oE ' shard [0-9]+ \[info\] at [^ ]*, range' "$T/logs/shard0.log" | awk '{print $2}')
[ -n "$idx" ] || fail "shard0's log does not say which shard index it got"
kill -STOP "$shard0" || fail "cannot stop shard0"
sleep 1
kill -CONT "$shard0"
wait_job 120
[ "$RC" = "$WR_EXIT_OK" ] || fail "the job with a paused shard ended with $RC (expected $WR_EXIT_OK)"
worst=$(sed -nE "s/.*coordinator \\[info\\] progress step .*slowest: shard $idx \\(wait ([0-9.]+) ms\\/step.*/\\1/p" \
    "$T/logs/coordinator.log" | sort -g | tail -n 1)
fge "${worst:-0}" 10 || fail "no coordinator line names shard $idx (process shard0) with a wait >= 10 ms/step after its 1 s pause (worst '$worst')"

# ---- 4. mode=allreduce -------------------------------------------------------------------
run_local ar -n 2 mode=allreduce "${JOB[@]}"
[ "$RC" = "$WR_EXIT_OK" ] || fail "mode=allreduce: wren-local exited with $RC (expected $WR_EXIT_OK)"
n_ar=$(grep -c 'coordinator \[info\] progress step .*slowest: rank [01] on host .* (comm [0-9.]* ms/step)' \
    "$T/logs/coordinator.log")
[ "$n_ar" -ge 2 ] || fail "mode=allreduce: $n_ar coordinator lines name the slowest rank (2+ expected)"
python3 - "$T/sum/coordinator.json" <<'EOF' || fail "mode=allreduce: the coordinator's summary is not what it should be"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["mode"] == "allreduce" and j["exit_status"] == 0, j
assert sorted(r["rank"] for r in j["ranks"]) == [0, 1], j["ranks"]
assert all(r["shard_wait_ms_per_step"] == [] and r["step"] == 60 for r in j["ranks"]), j["ranks"]
EOF

pass "mode=allreduce: $n_ar lines; shard $idx paused 1 s: named at ${worst} ms/step; $n_lines coordinator progress lines (steps $steps), its summary has ranks 0-2; run-{rank}.json gave one file per rank"
