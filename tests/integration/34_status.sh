#!/usr/bin/env bash
# `wren-server status` (issue 14 item 2) against running coordinators.
# 1. A coordinator with its 2 shards, waiting for 2 workers: status says
#    "forming" and how many have registered; both shards are listed.
# 2. The job running (2 workers): the text names the job, epoch 1, the step
#    out of the total, steps/s, the slowest peer, and every member with role,
#    index, host and address; --json is one object whose members are the 2
#    shards (indices 0 and 1, their ipc addresses) and ranks 0 and 1 with steps > 0, epoch 1,
#    step <= top_step, steps/s > 0 and the job's total steps.
# 3. --watch 0.3 --json prints an answer per refresh with steps that do not
#    go back; text --watch redraws in place (the clear-screen sequence).
#    40 clients at once: at most 10 + 10 per second are answered (non-members),
#    the coordinator says it withheld the rest, and answers again after.
# 4. No coordinator: exit 6 after --timeout, naming the address.
# 5. With CURVE keys: a key on the coordinator's allow-list gets the answer;
#    a key not on it gets none: the handshake is refused, status 1 saying so.
source "$(dirname "$0")/lib/common.bash"
S=$BIN/wren-server

D=$T/job
mkdir -p "$D"
JOB=(shards=2 workers=2 model=synthetic:200000 steps=10000000 progress_every=20 register_timeout=60)
"$S" coordinator --bind "ipc://$D/coord" "${JOB[@]}" >"$D/coord.log" 2>&1 &
COORD=$!
STARTED+=("$COORD")
for s in 0 1; do
    "$S" shard --coordinator "ipc://$D/coord" --bind "ipc://$D/s$s" >"$D/s$s.log" 2>&1 &
    STARTED+=("$!")
done

# ---- 1. forming -----------------------------------------------------------------------------
out=""
for _ in $(seq 100); do
    out=$("$S" status --coordinator "ipc://$D/coord" 2>&1) || fail "status while forming failed: $out"
    echo "$out" | grep -q "registered: 2 of 2 shards, 0 of 2 workers" && break
    sleep 0.1
done
echo "$out" >"$T/forming.out"
grep -q "^job [0-9]* at ipc://$D/coord: forming, epoch 0" "$T/forming.out" || fail "status does not say forming: $out"
grep -q "registered: 2 of 2 shards, 0 of 2 workers" "$T/forming.out" || fail "status does not count the shards: $out"
[ "$(grep -c '^  shard ' "$T/forming.out")" = 2 ] || fail "status does not list both shards: $out"

# ---- 2. running ------------------------------------------------------------------------------
for w in 0 1; do
    "$BIN/wren-worker" --coordinator "ipc://$D/coord" --host "wh$w" >"$D/w$w.log" 2>&1 &
    STARTED+=("$!")
done
for _ in $(seq 100); do
    grep -q "progress step" "$D/coord.log" && break
    sleep 0.1
done
grep -q "progress step" "$D/coord.log" || fail "the job did not start within 10 s"
sleep 0.5
"$S" status --coordinator "ipc://$D/coord" >"$T/text.out" 2>&1 || fail "status failed: $(cat "$T/text.out")"
grep -qE "^job [0-9]+ at ipc://$D/coord: running, epoch 1, up " "$T/text.out" || fail "no job line: $(cat "$T/text.out")"
grep -qE "^step [1-9][0-9]*/10000000 \| [0-9.]+ steps/s" "$T/text.out" || fail "no step line: $(cat "$T/text.out")"
grep -qE "^slowest: shard [01] \(wait [0-9.]+ ms/step\), rank [01] on host wh[01]; the slowest worker is [0-9]+ steps behind" \
    "$T/text.out" || fail "no slowest line: $(cat "$T/text.out")"
grep -q "^members: 2 shards, 2 workers" "$T/text.out" || fail "no members line: $(cat "$T/text.out")"
# Shard indices follow the order of registration: each address once, each index once.
for s in 0 1; do
    grep -qE "^  shard +[01] .*ipc://$D/s$s " "$T/text.out" || fail "shard s$s is not listed: $(cat "$T/text.out")"
    [ "$(grep -cE "^  shard +$s " "$T/text.out")" = 1 ] || fail "shard index $s is not listed once"
done
for w in 0 1; do
    grep -qE "^  worker +$w +wh[01] .* [1-9][0-9]* +[0-9]+$" "$T/text.out" ||
        fail "worker $w is not listed with its step: $(cat "$T/text.out")"
done
"$S" status --coordinator "ipc://$D/coord" --json >"$T/status.json" 2>&1 || fail "status --json failed"
python3 - "$T/status.json" "$D" <<'EOF' || fail "status --json is not what it should be: $(cat "$T/status.json")"
import json, sys
j = json.loads(open(sys.argv[1]).read())
d = sys.argv[2]
assert j["epoch"] == 1 and j["formed"] == 1 and j["total_steps"] == 10000000, j
assert 0 < j["step"] <= j["top_step"] and j["steps_s"] > 0 and j["samples_s"] > 0, j
assert j["shards"] == 2 and j["workers"] == 2 and j["slow_shard"] in (0, 1) and j["slow_rank"] in (0, 1), j
shards = [(m["index"], m["addr"]) for m in j["members"] if m["role"] == "shard"]
assert sorted(s[0] for s in shards) == [0, 1], shards
assert sorted(s[1] for s in shards) == ["ipc://%s/s0" % d, "ipc://%s/s1" % d], shards
workers = sorted((m["index"], m["host"]) for m in j["members"] if m["role"] == "worker")
assert [w[0] for w in workers] == [0, 1] and {w[1] for w in workers} == {"wh0", "wh1"}, workers
assert all(m["step"] > 0 for m in j["members"] if m["role"] == "worker"), j["members"]
EOF

# ---- 3. --watch ------------------------------------------------------------------------------
timeout 1.6 "$S" status --coordinator "ipc://$D/coord" --watch 0.3 --json >"$T/watch.json" 2>&1
n=$(wc -l <"$T/watch.json")
[ "$n" -ge 3 ] || fail "--watch 0.3 --json printed $n answers in 1.6 s (expected at least 3)"
python3 - "$T/watch.json" <<'EOF' || fail "--watch answers' steps go back: $(cat "$T/watch.json")"
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1])]
assert steps == sorted(steps) and steps[-1] > steps[0], steps
EOF
timeout 0.8 "$S" status --coordinator "ipc://$D/coord" --watch 0.3 >"$T/watch.out" 2>&1
[ "$(grep -c $'\033\[H\033\[2J' "$T/watch.out")" -ge 2 ] || fail "text --watch does not redraw in place"
# A flood: 40 clients at once. Replies to non-members are bounded (10 per
# second, a burst of 10), the rest go unanswered and say so; the job goes on.
pids=()
for i in $(seq 40); do
    "$S" status --coordinator "ipc://$D/coord" --json --timeout 1 >"$T/flood.$i" 2>&1 &
    pids+=($!)
done
answered=0
for p in "${pids[@]}"; do wait "$p" && answered=$((answered + 1)); done
if [ "$answered" -lt 1 ] || [ "$answered" -gt 30 ]; then
    fail "40 status clients at once: $answered answered (expected 1..30: 10 at once, 10 per second)"
fi
grep -q "STATUS requests from non-members beyond 10 per second go unanswered" "$D/coord.log" ||
    fail "the coordinator did not say it withheld STATUS replies"
out=$("$S" status --coordinator "ipc://$D/coord" --timeout 3 2>&1) || fail "status after the flood failed: $out"
kill -0 "$COORD" 2>/dev/null || fail "the coordinator did not survive the flood"
kill -TERM "$COORD"
wait "$COORD" 2>/dev/null

# ---- 4. no coordinator ---------------------------------------------------------------------
rc=0
"$S" status --coordinator "ipc://$T/none" --timeout 0.5 >"$T/none.out" 2>&1 || rc=$?
[ "$rc" = "$WR_EXIT_NO_COORDINATOR" ] || fail "status without a coordinator ended with $rc"
grep -q "ipc://$T/none: no answer within 0.5 s" "$T/none.out" || fail "no useful message: $(cat "$T/none.out")"

# ---- 5. CURVE keys: only the allow-list's keys are answered ------------------------------------
K=$T/keys
mkdir -p "$K"
"$S" keygen --dir "$K" coordinator >/dev/null 2>&1 || fail "keygen coordinator failed"
"$S" keygen --dir "$K" --role worker ops >"$K/allow.txt" 2>/dev/null || fail "keygen ops failed"
"$S" keygen --dir "$K" --role worker stranger >/dev/null 2>&1 || fail "keygen stranger failed"
CPORT=$(free_port)
"$S" coordinator --bind "tcp://127.0.0.1:$CPORT" --key "$K/coordinator.key" --allow "$K/allow.txt" \
    "${JOB[@]}" >"$T/kcoord.log" 2>&1 &
STARTED+=("$!")
CK=(--coordinator "tcp://127.0.0.1:$CPORT" --coordinator-key "$K/coordinator.pub" --timeout 2)
ok=0
for _ in $(seq 30); do
    "$S" status "${CK[@]}" --key "$K/ops.key" >"$T/keyed.out" 2>&1 && ok=1 && break
    sleep 0.2
done
[ "$ok" = 1 ] || fail "status with an allow-listed key got no answer: $(cat "$T/keyed.out")"
grep -q "forming, epoch 0" "$T/keyed.out" || fail "the keyed answer is not the job's: $(cat "$T/keyed.out")"
rc=0
"$S" status "${CK[@]}" --key "$K/stranger.key" >"$T/stranger.out" 2>&1 || rc=$?
[ "$rc" = "$WR_EXIT_FAILURE" ] || fail "a key not on the allow-list got status $rc: $(cat "$T/stranger.out")"
grep -q "refused our key" "$T/stranger.out" || fail "the refusal is not explained: $(cat "$T/stranger.out")"
grep -q "^job " "$T/stranger.out" && fail "a key not on the allow-list got the job's view"

pass "status while forming, running (text, --json, --watch), without a coordinator, and with CURVE keys"
